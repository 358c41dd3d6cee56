"""Names shown to people: class (breed) names and model version names, in the reader's language.

- ``class_display_name("australian_terrier")`` -> "Australian terrier" (English) or
  "Австралийский терьер" (Russian, from data/breeds_ru.json: the 120 Stanford Dogs breeds, keyed
  by folder name; ImageNet's spellings such as "black-and-tan coonhound" find the same entry).
  Names without a translation keep their readable English form.
- ``version_display_name("dogs5-v1-run3")`` -> "Dogs 5 · v1 · run #3" (the stored name of a
  fine-tuned version is "<dataset>-v<version>-run<id>"; any other name is shown as stored).

Imports nothing of classifier/ or training/ (Django and libraries only).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from django.utils.translation import get_language
from django.utils.translation import gettext as _

DATA = Path(__file__).resolve().parent / "data"
_VERSION_NAME = re.compile(r"^(?P<dataset>.+)-v(?P<version>\d+)-run(?P<run>\d+)$")


def readable_label(name: str) -> str:
    """ "golden_retriever" -> "Golden retriever"; ImageNet's "golden retriever" -> "Golden retriever"."""
    text = " ".join(str(name).replace("_", " ").split())
    return text[:1].upper() + text[1:]


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "_", str(name).strip().lower())


@lru_cache(maxsize=4)
def _translations(language: str) -> dict[str, str]:
    path = DATA / f"breeds_{language}.json"
    if not path.is_file():
        return {}
    return {_key(k): v for k, v in json.loads(path.read_text(encoding="utf-8")).items()}


def class_display_name(name: str, language: str | None = None) -> str:
    """A class name as people read it, translated when the language has a name for it."""
    language = (language or get_language() or "en").split("-")[0]
    if language != "en":
        translated = _translations(language).get(_key(name))
        if translated:
            return translated
    return readable_label(name)


def version_display_name(name: str) -> str:
    """ "dogs5-v1-run3" -> "Dogs 5 · v1 · run #3"; other names unchanged."""
    match = _VERSION_NAME.match(str(name or ""))
    if not match:
        return str(name or "")
    dataset = readable_label(re.sub(r"(?<=[^\W\d_])(?=\d)", " ", match["dataset"].replace("-", " ")))
    return _("%(dataset)s · v%(version)s · run #%(run)s") % {
        "dataset": dataset, "version": match["version"], "run": match["run"],
    }
