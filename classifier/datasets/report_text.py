"""A dataset report's problems, warnings and skip reasons in the reader's language.

The report (classifier.datasets.report) keeps each problem and warning as a code with its numbers
(``problem_items``, ``warning_items``) beside the English sentence; pages say them here with
gettext, nouns in the form their numbers take. Reports stored before the codes existed keep their
English sentences.

Imports classifier.datasets.report and classifier.web.names (besides Django and libraries).
"""

from __future__ import annotations

from typing import Any

from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from classifier.datasets.report import note_text
from classifier.web.names import class_display_name

SKIP_REASONS = {
    "hidden": gettext_lazy("hidden or system file"),
    "outside_class": gettext_lazy("not inside a class folder"),
    "not_image": gettext_lazy("not an image, or a format that cannot be read"),
    "corrupt": gettext_lazy("damaged image"),
    "tiny": gettext_lazy("image too small"),
    "too_many_pixels": gettext_lazy("image has too many pixels (possible decompression bomb)"),
    "unreadable": gettext_lazy("file cannot be read"),
}


def _sentence(item: dict[str, Any]) -> str:
    code = item.get("code")
    if code == "few_classes":
        return ngettext(
            "Found %(n)s class folder with usable photos; at least two are needed.",
            "Found %(n)s class folders with usable photos; at least two are needed.", item["found"],
        ) % {"n": item["found"]}
    if code == "empty_class":
        return _("The class folder “%(name)s” is empty.") % {"name": item["name"]}  # the folder to fix
    if code == "few_photos":
        return ngettext(
            "The class “%(name)s” has %(n)s usable photo; at least %(needed)s are needed.",
            "The class “%(name)s” has %(n)s usable photos; at least %(needed)s are needed.", item["photos"],
        ) % {"name": class_display_name(item["name"]), "n": item["photos"], "needed": item["needed"]}
    if code == "imbalanced":
        return _(
            "The classes are heavily imbalanced: “%(largest)s” has %(ratio)s times as many photos (%(many)s) "
            "as “%(smallest)s” (%(few)s)."
        ) % {"largest": class_display_name(item["largest"]), "smallest": class_display_name(item["smallest"]),
             "ratio": number_format(item["ratio"]), "many": item["largest_photos"], "few": item["smallest_photos"]}
    if code == "duplicates":
        copies = ngettext("%(n)s extra copy", "%(n)s extra copies", item["extra"]) % {"n": item["extra"]}
        cross = _("%(n)s of them across classes") % {"n": item["cross"]}
        return ngettext(
            "Found %(n)s group of identical files (%(copies)s, %(cross)s).",
            "Found %(n)s groups of identical files (%(copies)s, %(cross)s).", item["groups"],
        ) % {"n": item["groups"], "copies": copies, "cross": cross}
    if code == "skipped":
        return ngettext(
            "%(n)s file was skipped; see the list of skipped files for reasons.",
            "%(n)s files were skipped; see the list of skipped files for reasons.", item["files"],
        ) % {"n": item["files"]}
    return note_text(item)


def _sentences(report: dict[str, Any], kind: str) -> list[str]:
    items = report.get(f"{kind}_items")
    if items is None:  # a report from before the codes: its English sentences
        return [str(text) for text in report.get(f"{kind}s", [])]
    return [_sentence(item) for item in items]


def problem_sentences(report: dict[str, Any]) -> list[str]:
    """What blocks training on the dataset, one sentence each."""
    return _sentences(report, "problem")


def warning_sentences(report: dict[str, Any]) -> list[str]:
    """What is worth knowing about the dataset, one sentence each."""
    return _sentences(report, "warning")


def skip_reason(reason: str) -> str:
    """Why a file is not used, in a few words."""
    return str(SKIP_REASONS.get(reason, reason))
