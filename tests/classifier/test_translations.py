"""The Russian catalogue is complete, consistent with the source strings, and compiled.

A string added to the code or a template without a translation fails here: run
`make messages`, translate the new entries in locale/ru/LC_MESSAGES/django.po and
compile it again (`make messages` does both steps).
"""

from __future__ import annotations

import gettext
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LOCALE_DIR = Path(__file__).resolve().parents[2] / "locale" / "ru" / "LC_MESSAGES"
PO_PATH = LOCALE_DIR / "django.po"
MO_PATH = LOCALE_DIR / "django.mo"

# %(name)s, %(m)02d, %s, %% (python-format conversions, flags and width included).
PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")
TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


@dataclass
class Entry:
    line: int
    flags: set[str] = field(default_factory=set)
    msgctxt: str | None = None
    msgid: str = ""
    msgid_plural: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{PO_PATH.name}:{self.line} {self.msgid!r}"


def _unquote(text: str) -> str:
    text = text.strip()
    assert text.startswith('"') and text.endswith('"'), f"not a quoted PO string: {text}"
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), text[1:-1])


def parse_po(path: Path) -> list[Entry]:
    """Every entry of a .po file, the header (msgid "") included; obsolete (#~) entries are skipped."""
    entries: list[Entry] = []
    current: Entry | None = None
    target: tuple[str, int | None] | None = None  # which field continuation lines extend
    flags: set[str] = set()

    def finish() -> None:
        nonlocal current
        if current is not None:
            entries.append(current)
        current = None

    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#~"):
            continue
        if line.startswith("#"):
            if current is not None and current.msgstr:
                finish()
            if line.startswith("#,"):
                flags |= {flag.strip() for flag in line[2:].split(",") if flag.strip()}
            continue
        keyword, _, rest = line.partition(" ")
        if line.startswith('"'):
            assert current is not None and target is not None, f"{path}:{number}: stray continuation line"
            name, index = target
            value = _unquote(line)
            if name == "msgstr":
                current.msgstr[index] += value
            else:
                setattr(current, name, getattr(current, name) + value)
            continue
        if keyword in ("msgctxt", "msgid") and (current is None or current.msgstr):
            finish()
        if current is None:
            current, flags = Entry(line=number, flags=flags), set()
        match = re.fullmatch(r"msgstr\[(\d+)\]", keyword)
        if keyword in ("msgctxt", "msgid", "msgid_plural"):
            setattr(current, keyword, _unquote(rest))
            target = (keyword, None)
        elif keyword == "msgstr" or match:
            index = int(match.group(1)) if match else 0
            current.msgstr[index] = _unquote(rest)
            target = ("msgstr", index)
        else:
            raise AssertionError(f"{path}:{number}: cannot parse {raw!r}")
    finish()
    return entries


@pytest.fixture(scope="module")
def po_entries() -> list[Entry]:
    return parse_po(PO_PATH)


@pytest.fixture(scope="module")
def messages(po_entries) -> list[Entry]:
    return [entry for entry in po_entries if entry.msgid]


def _header(po_entries) -> dict[str, str]:
    header = next(entry for entry in po_entries if not entry.msgid)
    fields = (line.partition(":") for line in header.msgstr[0].splitlines() if line)
    return {key.strip(): value.strip() for key, _, value in fields}


def test_the_catalogue_is_russian_with_four_plural_forms(po_entries):
    header = _header(po_entries)
    assert header["Language"] == "ru"
    assert header["Content-Type"] == "text/plain; charset=UTF-8"
    assert re.match(r"nplurals=4;\s*plural=", header["Plural-Forms"]), header["Plural-Forms"]
    assert "fuzzy" not in next(entry for entry in po_entries if not entry.msgid).flags


def test_every_message_is_translated_and_none_is_fuzzy(messages):
    assert len(messages) > 100, "the catalogue looks truncated"
    untranslated = [entry.label for entry in messages if not all(entry.msgstr.values())]
    fuzzy = [entry.label for entry in messages if "fuzzy" in entry.flags]
    assert not untranslated and not fuzzy, (
        "run `make messages` and translate them in locale/ru/LC_MESSAGES/django.po "
        "(fuzzy entries carry a wrong guess: replace it and drop the fuzzy flag)\n"
        + "\n".join([f"untranslated: {label}" for label in untranslated] + [f"fuzzy: {label}" for label in fuzzy])
    )


def test_plural_messages_fill_every_russian_form(messages):
    plural = [entry for entry in messages if entry.msgid_plural is not None]
    assert plural, "expected some plural messages ({% blocktranslate count %})"
    wrong = [entry.label for entry in plural if sorted(entry.msgstr) != [0, 1, 2, 3]]
    assert not wrong, "plural entries need msgstr[0] to msgstr[3]:\n" + "\n".join(wrong)


def _placeholders(text: str) -> list[str]:
    return sorted(set(PLACEHOLDER.findall(text)))


def test_translations_keep_the_placeholders(messages):
    problems = []
    for entry in messages:
        if "python-format" not in entry.flags and "%(" not in entry.msgid:
            continue
        source = entry.msgid_plural if entry.msgid_plural is not None else entry.msgid
        expected = _placeholders(source)
        for index, text in entry.msgstr.items():
            if text and _placeholders(text) != expected:
                problems.append(f"{entry.label} msgstr[{index}]: {_placeholders(text)} != {expected}")
    assert not problems, "placeholders differ between msgid and msgstr:\n" + "\n".join(problems)


def test_translations_keep_the_html_tags(messages):
    problems = [
        f"{entry.label}: {sorted(TAG.findall(text))} != {sorted(TAG.findall(entry.msgid))}"
        for entry in messages
        for text in entry.msgstr.values()
        if text and sorted(TAG.findall(text)) != sorted(TAG.findall(entry.msgid_plural or entry.msgid))
    ]
    assert not problems, "HTML tags differ between msgid and msgstr:\n" + "\n".join(problems)


def test_the_compiled_catalogue_matches_the_po_file(messages):
    with MO_PATH.open("rb") as handle:
        compiled = dict(gettext.GNUTranslations(handle)._catalog)
    compiled.pop("", None)  # the header
    expected = {}
    for entry in messages:
        if "fuzzy" in entry.flags or not all(entry.msgstr.values()):
            continue  # msgfmt leaves these out
        key = entry.msgid if entry.msgctxt is None else f"{entry.msgctxt}\x04{entry.msgid}"
        if entry.msgid_plural is None:
            expected[key] = entry.msgstr[0]
        else:
            expected.update({(key, index): text for index, text in entry.msgstr.items()})
    stale = sorted(str(key) for key in expected.keys() ^ compiled.keys())
    changed = sorted(str(key) for key in expected.keys() & compiled.keys() if expected[key] != compiled[key])
    assert not stale and not changed, (
        "locale/ru/LC_MESSAGES/django.mo is out of date: run `make messages` (or msgfmt) to compile the .po\n"
        + "\n".join([f"missing or extra: {key}" for key in stale] + [f"changed: {key}" for key in changed])
    )


NAV_STRINGS = ["Classify", "Training runs", "Datasets", "Models"]


def _visible_text(html: str) -> str:
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S | re.I)
    return re.sub(r"<[^>]+>", " ", html)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/runs/"])
def test_russian_pages_show_no_english_navigation(client, path):
    response = client.get(path, headers={"accept-language": "ru"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'lang="ru"' in html
    text = _visible_text(html)
    left = [word for word in NAV_STRINGS if re.search(rf"\b{re.escape(word)}\b", text)]
    assert not left, f"{path} in Russian still shows {left}"
