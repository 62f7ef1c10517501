"""Small real PDFs for flow-level tests: single pages cut from the bundled sample PDFs."""

from __future__ import annotations

import os
from pathlib import Path

from pypdf import PdfReader, PdfWriter

REPO = Path(__file__).resolve().parent.parent
SAMPLES = sorted((REPO / "data" / "pdf").glob("*.pdf"))


def first_page_pdf(src: Path, dest: Path) -> Path:
    """Write the first page of ``src`` to ``dest``, appearing at once (a watcher never sees half a file).

    Example::

        >>> first_page_pdf(SAMPLES[0], tmp_path / "sub" / "a.pdf")
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    writer = PdfWriter()
    writer.add_page(PdfReader(src).pages[0])
    tmp = dest.with_name(dest.name + ".part")  # not *.pdf, so a folder scan skips it
    with open(tmp, "wb") as f:
        writer.write(f)
    os.replace(tmp, dest)
    return dest
