"""Lay out the same passages as ``make_sample_pdfs.py`` does, but as real files are laid out.

Court judgments, contracts and reports are not single-column running text. This script
typesets the passages of a SQuAD-format file the way such files look, so that the same
people's questions can be asked of a clean and a real-layout PDF of the same text:

* a running header on every page (the court and the case number) with a rule under it;
* a footer ``第 N 页 共 M 页``;
* a light diagonal watermark on every page;
* margin line numbers (every body line, restarting on each page) in ``--line-numbers`` files;
* two columns in ``--two-columns`` files; their text is written row by row (left line, right
  line, ...) as some generators do, so a reader that follows the content stream interleaves them;
* a fee table between the second and third passage;
* a footnote at the bottom of the first page, marked in the document's title.

Text flows over page breaks: a sentence may start at the bottom of one page and end at the
top of the next. ``sources.json`` beside the PDFs has the format ``make_sample_pdfs.py``
writes, so ``data/make_human_questions.py --sources`` maps people's questions to these files,
plus ``layout`` per file and the furniture strings a bench looks for in chunks.

Usage (from the repository root; never write the legal set's PDFs into the repository)::

    .venv/bin/python data/make_layout_pdfs.py ../shared/data/cjrc_legal_dev.json \\
        --passages-per-doc 12 --out-dir /tmp/legal_real
    .venv/bin/python data/make_layout_pdfs.py --clean ../shared/data/cjrc_legal_dev.json \\
        --passages-per-doc 12 --out-dir /tmp/legal_clean      # the same passages, clean layout

``--clean`` calls ``make_sample_pdfs.py``'s own typesetting, so "clean" is the files the
project has always benched.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "data"))

from fpdf import FPDF  # noqa: E402
from pypdf import PdfReader  # noqa: E402

import make_sample_pdfs as clean  # noqa: E402
from tasks.core.fileio import write_bytes_atomic, write_json_atomic  # noqa: E402

log = logging.getLogger("make_layout_pdfs")

MM = 72 / 25.4  # points per millimetre
PAGE_W, PAGE_H = 210.0, 297.0  # A4, mm
MARGIN_X, TOP, BOTTOM = 22.0, 24.0, 24.0  # body frame, mm
COLUMN_GAP = 8.0
BODY_PT, LINE_MM = 11, 6.5
WATERMARK = "仅供内部参考 请勿外传"
FEE_TABLE = [
    ("项目", "金额（元）", "负担方"),
    ("案件受理费", "2300", "被告"),
    ("财产保全费", "520", "原告"),
    ("鉴定费", "4000", "被告"),
]
FOOTNOTE = "① 本文书仅供研究使用，当事人姓名已作处理。"
COURTS = ["北京市海淀区人民法院", "上海市浦东新区人民法院", "广州市天河区人民法院", "浙江省杭州市中级人民法院",
          "四川省成都市中级人民法院", "湖北省武汉市江汉区人民法院", "江苏省南京市鼓楼区人民法院",
          "山东省济南市历下区人民法院", "河南省郑州市金水区人民法院", "福建省厦门市思明区人民法院"]


def case_number(i: int) -> str:
    return f"（2019）民初{4100 + 37 * i}号"


@dataclass
class Line:
    """One line of the body: its text, size and the space it takes (mm)."""

    text: str
    size: float
    height: float
    kind: str = "text"  # text, heading, table
    cells: tuple[str, ...] = ()
    widths: tuple[float, ...] = ()


@dataclass
class Placed:
    x: float
    y: float  # the line's top, mm from the page's top
    line: Line


@dataclass
class Layout:
    line_numbers: bool = False
    two_columns: bool = False
    pages: list[list[Placed]] = field(default_factory=list)


def body_lines(pdf: FPDF, doc_title: str, passages: list[clean.Passage], width: float) -> list[Line]:
    """Title, headings and wrapped passages, with the fee table after the second passage."""
    def wrapped(text: str, size: float, height: float, kind: str = "text") -> list[Line]:
        pdf.set_font("cjk", size=size)
        return [Line(t, size, height, kind) for t in clean.wrap(text, width, pdf.get_string_width)]

    lines = wrapped(doc_title + "①", 15, 9, "heading")
    for k, p in enumerate(passages):
        lines.append(Line("", BODY_PT, 3))
        lines += wrapped(p.title, 13, 8, "heading")
        lines += wrapped(p.context, BODY_PT, LINE_MM)
        if k == 1:
            lines.append(Line("", BODY_PT, 3))
            share = (0.4, 0.3, 0.3)
            for row in FEE_TABLE:
                lines.append(Line("", 10, 7, "table", row, tuple(width * s for s in share)))
    return lines


def paginate(lines: list[Line], two_columns: bool) -> list[list[Placed]]:
    """Place lines top to bottom, column by column, page by page; leave room for the footnote."""
    frame_w = PAGE_W - 2 * MARGIN_X
    col_w = (frame_w - COLUMN_GAP) / 2 if two_columns else frame_w
    columns = [MARGIN_X, MARGIN_X + col_w + COLUMN_GAP] if two_columns else [MARGIN_X]
    pages: list[list[Placed]] = []
    page: list[Placed] = []
    col, y = 0, TOP
    for line in lines:
        bottom = PAGE_H - BOTTOM - (10 if not pages else 0)  # the first page keeps room for the footnote
        if y + line.height > bottom:
            col += 1
            y = TOP
            if col == len(columns):
                pages.append(page)
                page, col = [], 0
        if not line.text and not line.cells and y == TOP:
            continue  # no blank space at the top of a column
        page.append(Placed(columns[col], y, line))
        y += line.height
    pages.append(page)
    return pages


class _RealPDF(FPDF):
    court = ""
    case = ""

    def header(self) -> None:
        # The watermark first, under the text, as stamping tools put it.
        self.set_font("cjk", size=40)
        self.set_text_color(225, 225, 225)
        with self.rotation(35, PAGE_W / 2, PAGE_H / 2):
            self.text(PAGE_W / 2 - self.get_string_width(WATERMARK) / 2, PAGE_H / 2, WATERMARK)
        self.set_text_color(0, 0, 0)
        self.set_font("cjk", size=9)
        self.text(MARGIN_X, 14, self.court)
        self.text(PAGE_W - MARGIN_X - self.get_string_width(self.case), 14, self.case)
        self.line(MARGIN_X, 16, PAGE_W - MARGIN_X, 16)

    def footer(self) -> None:
        self.set_font("cjk", size=9)
        label = f"第 {self.page_no()} 页 共 {{nb}} 页"
        self.text(PAGE_W / 2 - self.get_string_width(label) / 2, PAGE_H - 12, label)


def render_pdf(doc_title: str, passages: list[clean.Passage], font: Path, index: int, layout: Layout) -> bytes:
    pdf = _RealPDF(format="A4")
    pdf.court, pdf.case = COURTS[(index - 1) % len(COURTS)], case_number(index)
    pdf.set_creation_date(clean.CREATION_DATE)
    pdf.set_title(doc_title)
    pdf.set_creator("data/make_layout_pdfs.py")
    pdf.set_auto_page_break(False)
    pdf.add_font("cjk", fname=str(font))
    pdf.set_font("cjk", size=BODY_PT)
    frame_w = PAGE_W - 2 * MARGIN_X
    width = (frame_w - COLUMN_GAP) / 2 if layout.two_columns else frame_w
    layout.pages = paginate(body_lines(pdf, doc_title, passages, width), layout.two_columns)
    for page_no, placed in enumerate(layout.pages):
        pdf.add_page()
        number = 0
        # Row by row, left to right: the order some generators write two-column pages in.
        for item in sorted(placed, key=lambda p: (round(p.y, 2), p.x)):
            line = item.line
            baseline = item.y + line.height * 0.75
            pdf.set_font("cjk", size=line.size)
            if line.cells:
                x = item.x
                for cell, w in zip(line.cells, line.widths):
                    pdf.rect(x, item.y, w, line.height)
                    pdf.text(x + 1.5, baseline, cell)
                    x += w
            elif line.text:
                pdf.text(item.x, baseline, line.text)
                if layout.line_numbers and line.kind == "text":
                    number += 1
                    pdf.set_font("cjk", size=7)
                    label = str(number)
                    pdf.text(item.x - 4 - pdf.get_string_width(label), baseline, label)
        if page_no == 0:
            pdf.set_font("cjk", size=8)
            pdf.line(MARGIN_X, PAGE_H - BOTTOM - 6, MARGIN_X + 50, PAGE_H - BOTTOM - 6)
            pdf.text(MARGIN_X, PAGE_H - BOTTOM - 2, FOOTNOTE)
    return bytes(pdf.output())


def build(json_path: Path, out_dir: Path, n_docs: int, per_doc: int, font: Path,
          line_numbers: set[int], two_columns: set[int]) -> None:
    """Write the PDFs and sources.json (the format of ``make_sample_pdfs.py``, plus the layout)."""
    origin = clean.provenance(json_path)
    coverage = clean.font_coverage(font)
    passages = [p for p in clean.load_passages(json_path) if clean.drawable(p, coverage)]
    if n_docs * per_doc > len(passages):
        raise SystemExit(f"{json_path} has {len(passages)} usable passages, fewer than {n_docs} x {per_doc}")
    out_dir.mkdir(parents=True, exist_ok=True)
    title_prefix = "CMRC 2018 样例文档" if json_path.name == clean.DEFAULT_JSON.name else f"{json_path.stem} 样例文档"
    documents: list[dict[str, Any]] = []
    for i in range(1, n_docs + 1):
        name = f"sample_{i:02d}.pdf"
        chosen = passages[(i - 1) * per_doc: i * per_doc]
        doc_title = f"{title_prefix} {i:02d}：" + "、".join(p.title for p in chosen)
        layout = Layout(line_numbers=i in line_numbers, two_columns=i in two_columns)
        data = render_pdf(doc_title, chosen, font, i, layout)
        write_bytes_atomic(out_dir / name, data)
        (out_dir / name).chmod(0o644)
        n_pages = len(PdfReader(io.BytesIO(data)).pages)
        kinds = ["header", "footer", "watermark", "table", "footnote"]
        kinds += ["line numbers"] * layout.line_numbers + ["two columns"] * layout.two_columns
        log.info("%s: %d bytes, %d pages, %s", name, len(data), n_pages, ", ".join(kinds))
        documents.append({
            "file": name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "n_pages": n_pages,
            "title": doc_title,
            "layout": kinds,
            "furniture": {"header": [COURTS[(i - 1) % len(COURTS)], case_number(i)], "watermark": WATERMARK,
                          "footnote": FOOTNOTE, "table_cells": [c for row in FEE_TABLE[1:] for c in row[:1]]},
            "passages": [
                {"id": p.id, "data_index": p.data_index, "paragraph_index": p.paragraph_index, "title": p.title,
                 "n_chars": len(p.context), "context_sha256": hashlib.sha256(p.context.encode("utf-8")).hexdigest(),
                 "question_ids": p.question_ids}
                for p in chosen
            ],
        })
    write_json_atomic(out_dir / "sources.json", {
        **origin,
        "selection": f"passages in file order, {per_doc} per document, leaving out those the font cannot draw",
        "generated_by": f"python data/make_layout_pdfs.py --n-docs {n_docs} --passages-per-doc {per_doc}",
        "font": font.name,
        "documents": documents,
    })


def _numbers(text: str) -> set[int]:
    return {int(x) for x in text.split(",") if x.strip()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json_path", nargs="?", type=Path, default=clean.DEFAULT_JSON, help="SQuAD-format JSON")
    ap.add_argument("--n-docs", type=int, default=10)
    ap.add_argument("--passages-per-doc", type=int, default=3)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--font", type=Path, default=None, help="TTF/TTC with CJK glyphs")
    ap.add_argument("--line-numbers", default="1,2,3", help="files (1-based) with margin line numbers")
    ap.add_argument("--two-columns", default="4,5", help="files (1-based) set in two columns")
    ap.add_argument("--clean", action="store_true", help="the clean layout of make_sample_pdfs.py instead")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    if not args.json_path.is_file():
        ap.error(f"SQuAD-format JSON not found: {args.json_path}")
    font = clean.find_font(args.font)
    if args.clean:
        problems = clean.build(args.json_path, args.out_dir, args.n_docs, args.passages_per_doc, font)
        for msg in problems:
            log.warning("clean layout: %s", msg)
        return 0
    build(args.json_path, args.out_dir, args.n_docs, args.passages_per_doc, font,
          _numbers(args.line_numbers), _numbers(args.two_columns))
    log.info("wrote %d PDFs and sources.json to %s", args.n_docs, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
