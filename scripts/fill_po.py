"""Fill empty msgstr entries of a .po file from a JSON dictionary {msgid: translation}.

Usage: python scripts/fill_po.py locale/ru/LC_MESSAGES/django.po translations.json
Entries already translated are kept; msgids missing from the dictionary are listed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _unquote(lines: list[str]) -> str:
    return "".join(json.loads(line) for line in lines)


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def fill(po_path: Path, translations: dict[str, str]) -> list[str]:
    blocks = po_path.read_text().split("\n\n")
    missing = []
    out = []
    for block in blocks:
        lines = block.split("\n")
        try:
            i_id = next(i for i, line in enumerate(lines) if line.startswith("msgid "))
            i_str = next(i for i, line in enumerate(lines) if line.startswith("msgstr "))
        except StopIteration:
            out.append(block)
            continue
        msgid = _unquote([lines[i_id][6:]] + lines[i_id + 1 : i_str])
        msgstr = _unquote([lines[i_str][7:]] + [line for line in lines[i_str + 1 :] if line.startswith('"')])
        if msgid and (not msgstr or "#, fuzzy" in block):
            if msgid in translations:
                lines = [line for line in lines[: i_str] if line != "#, fuzzy"] + [f"msgstr {_quote(translations[msgid])}"]
                lines = [re.sub(r"^#, fuzzy, ", "#, ", line) for line in lines]
            else:
                missing.append(msgid)
        out.append("\n".join(lines))
    po_path.write_text("\n\n".join(out))
    return missing


if __name__ == "__main__":
    po, table = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    left = fill(po, table)
    for msgid in left:
        print(f"untranslated: {msgid!r}")
