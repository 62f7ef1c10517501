"""The table of input files a run could not use: file, reason, what to do.

Pure formatting: the report (:func:`tasks.reporting.tables.render_report`) and the flow's
Prefect artifact ``skipped-inputs`` both show this table, so a person sees at a
glance which PDFs were left out of the training data and how to fix them.

Example::

    >>> rows = [{"source": "scan 01.pdf", "reason": "no text layer (scanned? needs OCR)",
    ...          "hint": "add a text layer with OCR first"}]
    >>> print(skipped_table(rows))
    | file | reason | what to do |
    |---|---|---|
    | scan 01.pdf | no text layer (scanned? needs OCR) | add a text layer with OCR first |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ARTIFACT_KEY", "skipped_markdown", "skipped_table"]

ARTIFACT_KEY = "skipped-inputs"


def skipped_table(skipped: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table, one row per skipped file (``source``, ``reason``, optional ``hint``)."""
    lines = ["| file | reason | what to do |", "|---|---|---|"]
    for entry in skipped:
        cells = (entry.get("source", ""), entry.get("reason", ""), entry.get("hint") or "")
        lines.append("| " + " | ".join(_cell(str(c)) for c in cells) + " |")
    return "\n".join(lines)


def skipped_markdown(skipped: Sequence[Mapping[str, Any]], pdf_dir: str | None = None) -> str:
    """The artifact's text: a heading line with the count and folder, then the table.

    >>> print(skipped_markdown([{"source": "a.pdf", "reason": "empty file (0 bytes)"}], "data/pdf").splitlines()[0])
    ## 1 input file skipped (in `data/pdf`)
    """
    n = len(skipped)
    where = f" (in `{pdf_dir}`)" if pdf_dir else ""
    heading = f"## {n} input file{'' if n == 1 else 's'} skipped{where}"
    return f"{heading}\n\nThe run went on without these files.\n\n{skipped_table(skipped)}\n"


def _cell(text: str) -> str:
    # A file name may hold "|" or a line break; either would break the table.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
