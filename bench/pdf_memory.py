"""Peak memory of reading a large PDF: the naive pypdf way vs tasks.documents.reading.read_pdf.

The naive way, ``PdfReader(path)`` and a loop over ``reader.pages``, reads the whole
file into memory and keeps every object it parsed (fonts, images, content streams)
until the reader goes away. ``read_pdf`` hands pypdf the open file and empties its
object cache after each page. The PDF is made here: pages of text, each with an
incompressible image that text extraction never needs (like a scanned figure).

    .venv/bin/python -m bench.pdf_memory                 # 200 pages, about 18 MB
    .venv/bin/python -m bench.pdf_memory --pages 600

Peak memory is Python's own allocations (tracemalloc), so it is the same on any machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import pypdf
from fpdf import FPDF
from PIL import Image

from tasks.documents.cleaning import clean_page_text
from tasks.documents.reading import read_pdf

TEXT = "Retrieval models learn from pairs of questions and passages. " * 6


def make_pdf(path: Path, pages: int) -> None:
    pdf = FPDF()
    pdf.set_auto_page_break(False)
    pdf.set_font("helvetica", size=10)
    for number in range(pages):
        pdf.add_page()
        pdf.image(Image.frombytes("L", (300, 300), os.urandom(90_000)), x=10, y=120, w=80)
        pdf.multi_cell(0, 5, f"Page {number}. {TEXT}")
    pdf.output(str(path))


def naive(path: Path) -> int:
    reader = pypdf.PdfReader(path)
    return sum(len(clean_page_text(page.extract_text() or "")) for page in reader.pages)


def streamed(path: Path) -> int:
    texts, _ = read_pdf(path)
    return sum(len(t) for t in texts)


def measure(fn, path: Path) -> tuple[float, float, int]:
    # Timed without tracemalloc, which slows allocation-heavy code several times over.
    started = time.perf_counter()
    n_chars = fn(path)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    fn(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6, seconds, n_chars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.pdf"
        make_pdf(path, args.pages)
        size = path.stat().st_size / 1e6
        rows = [("naive: PdfReader(path), all pages", *measure(naive, path)),
                ("read_pdf: open file, cache emptied per page", *measure(streamed, path))]
    print(f"{args.pages} pages, {size:.1f} MB file\n")
    print(f"{'way':<46}{'peak MB':>9}{'seconds':>9}{'characters':>12}")
    for name, peak, seconds, n_chars in rows:
        print(f"{name:<46}{peak:>9.1f}{seconds:>9.2f}{n_chars:>12}")


if __name__ == "__main__":
    main()
