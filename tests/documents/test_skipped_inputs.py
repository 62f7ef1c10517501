"""The skipped-inputs table: in report.md and as the flow's Prefect artifact."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from tasks.documents.reading import load_documents
from tasks.reporting.tables import render_report
from tasks.documents.skipped import ARTIFACT_KEY, skipped_markdown, skipped_table

ROWS = [
    {"source": "scan 01.pdf", "reason": "no text layer (scanned? needs OCR)", "hint": "add a text layer with OCR first"},
    {"source": "报告|草稿\n.pdf", "reason": "empty file (0 bytes)", "hint": ""},
]


def test_one_row_per_file_with_reason_and_hint() -> None:
    lines = skipped_table(ROWS).splitlines()
    assert lines[0] == "| file | reason | what to do |"
    assert len(lines) == 2 + len(ROWS)
    assert lines[2] == "| scan 01.pdf | no text layer (scanned? needs OCR) | add a text layer with OCR first |"
    # A "|" or a line break in a file name must not break the table.
    assert lines[3] == "| 报告\\|草稿 .pdf | empty file (0 bytes) |  |"
    assert all(line.count("|") - line.count("\\|") == 4 for line in lines)


def test_artifact_text_counts_the_files() -> None:
    text = skipped_markdown(ROWS, "data/pdf")
    assert text.startswith("## 2 input files skipped (in `data/pdf`)")
    assert skipped_table(ROWS) in text
    assert ARTIFACT_KEY == "skipped-inputs"


def test_report_lists_skipped_files_only_when_there_are_some(tmp_path: Path) -> None:
    (tmp_path / "empty.pdf").write_bytes(b"")
    (tmp_path / "notes.pdf").write_text("plain text, not a PDF")
    (tmp_path / "ok.pdf").write_bytes((Path(__file__).parents[2] / "data" / "pdf" / "sample_01.pdf").read_bytes())
    result = load_documents(tmp_path)
    skipped = [asdict(s) for s in result.skipped]
    summary = {"stages": {"documents": {"seconds": 0.1, "skipped": 2, "skipped_files": skipped}}}
    report = render_report({}, summary, {})
    assert "## Skipped input files" in report
    section = report.split("## Skipped input files", 1)[1]
    assert "| empty.pdf | empty file (0 bytes) | copy the file again" in section
    assert "| notes.pdf | not a PDF (starts with 'plain text, not ')" in section

    clean = render_report({}, {"stages": {"documents": {"seconds": 0.1, "skipped": 0, "skipped_files": []}}}, {})
    assert "Skipped input files" not in clean
