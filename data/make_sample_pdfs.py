"""Build the sample Chinese PDFs in data/pdf from the CMRC 2018 trial set.

Each PDF (``sample_01.pdf``, ...) has a title line and several CMRC passages, each
under its CMRC title as a heading, typeset on A4 at 11 pt with page numbers in the
footer. ``sources.json`` beside them lists, for every PDF, the CMRC passages it
holds (entry id, index in ``data[]``, paragraph index, question ids, pages), so a
benchmark can map CMRC's human-written questions to these files.

Passages are taken in file order, k (``--passages-per-doc``) to a document,
leaving out the few whose characters the font cannot draw (a missing glyph would
silently vanish from the PDF's text; ``sources.json`` lists them). The output is
byte-for-byte reproducible (fixed creation date, deterministic font subset).

After writing, a self-test reads every PDF back with pypdf, cleans each page with
:func:`tasks.documents.cleaning.clean_page_text`, and checks that every heading and
passage comes back with at most whitespace differences, and that no file is over
the size budget. The script exits non-zero when a check fails.

Needs a TrueType font with CJK glyphs, found at a known path or given with
``--font``; on Debian/Ubuntu::

    apt-get install fonts-wqy-microhei   # /usr/share/fonts/truetype/wqy/wqy-microhei.ttc

Usage (from the repository root)::

    .venv/bin/python data/make_sample_pdfs.py            # 10 PDFs x 3 passages
    .venv/bin/python data/make_sample_pdfs.py ../shared/data/cmrc2018_trial.json \\
        --n-docs 10 --passages-per-doc 3 --out-dir data/pdf

Other SQuAD-format files work too, for benchmarks: 10 PDFs of court judgments (CJRC, 333
chunks), written outside the repository, since that set's licence keeps it out::

    .venv/bin/python data/make_sample_pdfs.py ../shared/data/cjrc_legal_dev.json \\
        --passages-per-doc 12 --out-dir /tmp/legal_pdfs
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run as a script from anywhere: the text cleaner of the pipeline lives in tasks/,
# and the self-test must judge the PDFs with exactly the cleaner the pipeline uses.
sys.path.insert(0, str(REPO_ROOT))

from fontTools.ttLib import TTFont  # noqa: E402
from fpdf import FPDF  # noqa: E402
from fpdf.enums import Align, XPos, YPos  # noqa: E402
from pypdf import PdfReader  # noqa: E402

from tasks.core.fileio import write_bytes_atomic, write_json_atomic  # noqa: E402
from tasks.documents.cleaning import clean_page_text, is_cjk  # noqa: E402

log = logging.getLogger("make_sample_pdfs")

DEFAULT_JSON = REPO_ROOT.parent / "shared" / "data" / "cmrc2018_trial.json"
DEFAULT_OUT = REPO_ROOT / "data" / "pdf"
FONT_CANDIDATES = [
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),  # fonts-wqy-microhei
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),  # fonts-wqy-zenhei
    Path("/usr/share/fonts/truetype/arphic/uming.ttc"),  # fonts-arphic-uming
]
# A fixed date keeps the files reproducible: fpdf2 derives the file /ID from the content.
CREATION_DATE = datetime(2024, 1, 1, tzinfo=timezone.utc)
MAX_PDF_BYTES = 200_000
MAX_TOTAL_BYTES = 2_000_000

LICENCE = "CC BY-SA 4.0"
SOURCE = "https://github.com/ymcui/cmrc2018 (squad-style-data/cmrc2018_trial.json)"
CITATION = (
    "Yiming Cui, Ting Liu, Wanxiang Che, Li Xiao, Zhipeng Chen, Wentao Ma, Shijin Wang, "
    "Guoping Hu. A Span-Extraction Dataset for Chinese Machine Reading Comprehension. "
    "EMNLP-IJCNLP 2019, pages 5883-5889."
)


@dataclass(frozen=True)
class Passage:
    id: str
    data_index: int
    paragraph_index: int
    title: str
    context: str
    question_ids: list[str]


def load_passages(json_path: Path) -> list[Passage]:
    """All passages of a SQuAD-format file, in file order."""
    data = json.loads(json_path.read_text(encoding="utf-8"))["data"]
    out = []
    for i, entry in enumerate(data):
        for j, para in enumerate(entry["paragraphs"]):
            out.append(
                Passage(
                    id=para.get("id", entry.get("id", f"{i}-{j}")),
                    data_index=i,
                    paragraph_index=j,
                    title=entry["title"],
                    context=para["context"].strip(),
                    question_ids=[q["id"] for q in para.get("qas", [])],
                )
            )
    return out


def find_font(explicit: Path | None) -> Path:
    if explicit is not None:
        if not explicit.is_file():
            raise SystemExit(f"font not found: {explicit}")
        return explicit
    for path in FONT_CANDIDATES:
        if path.is_file():
            return path
    raise SystemExit(
        "no CJK font found; install one with `apt-get install fonts-wqy-microhei` "
        "or pass --font PATH (a .ttf/.ttc with Chinese glyphs)"
    )


def font_coverage(font: Path) -> set[int]:
    """Code points the font has a glyph for (the first face of a .ttc)."""
    with TTFont(font, fontNumber=0, lazy=True) as tt:
        return set(tt.getBestCmap())


def drawable(passage: Passage, coverage: set[int]) -> bool:
    return all(ord(c) in coverage or c.isspace() for c in passage.title + passage.context)


# Line breaking as Chinese typesetting does it: a line may break between any two CJK
# characters or at a space, never inside a Latin word or number, and never before
# closing punctuation or after opening punctuation. (fpdf2's own WORD mode only
# breaks at spaces, which leaves lines half empty in Chinese text with a few
# spaces; its CHAR mode splits Latin words.)
_OPENING = "（《「『“‘(［[【〈"
_CLOSING = "，。、；：！？）》」』”’),.;:!?］]】〉…%"
_O, _C = re.escape(_OPENING), re.escape(_CLOSING)
_UNIT = re.compile(rf"\s+|[{_O}]*(?:[^\s{_O}{_C}]|[{_C}])[{_C}]*")


def _units(text: str) -> list[str]:
    """Split text into the pieces a line may not break inside."""
    pieces = _UNIT.findall(text)
    units: list[str] = []
    for piece in pieces:
        # Glue consecutive Latin letters and digits into words.
        if units and not piece.isspace() and not units[-1].isspace():
            prev_last, first = units[-1][-1], piece.lstrip(_OPENING)[:1]
            if not is_cjk(prev_last) and first and not is_cjk(first):
                units[-1] += piece
                continue
        units.append(piece)
    return units


def wrap(text: str, width: float, measure: Any) -> list[str]:
    """Greedy line breaking of one paragraph; measure(str) gives a string's width."""
    lines: list[str] = []
    line = ""
    for unit in _units(text):
        if unit.isspace():
            if line:
                line += " "
            continue
        if line and measure(line + unit) > width:
            lines.append(line.rstrip())
            line = ""
        while measure(unit) > width:  # a word longer than a line: split it anywhere
            cut = max(1, next(i for i in range(len(unit), 0, -1) if measure(unit[:i]) <= width))
            lines.append(unit[:cut])
            unit = unit[cut:]
        line += unit
    if line.strip():
        lines.append(line.rstrip())
    return lines


class _SamplePDF(FPDF):
    def footer(self) -> None:
        # A page number in the footer, as real documents have; the cleaner must drop it.
        self.set_y(-15)
        self.set_font(size=9)
        self.cell(0, 10, f"- {self.page_no()} -", align=Align.C)


def render_pdf(doc_title: str, passages: list[Passage], font: Path) -> bytes:
    """One A4 PDF: a title line, then each passage under its CMRC title."""
    pdf = _SamplePDF(format="A4")
    pdf.set_creation_date(CREATION_DATE)
    pdf.set_title(doc_title)
    pdf.set_creator("data/make_sample_pdfs.py")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_font("cjk", fname=str(font))
    pdf.add_page()
    pdf.set_font("cjk", size=16)
    pdf.multi_cell(0, 9, doc_title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for p in passages:
        pdf.ln(4)
        pdf.set_font("cjk", size=13)
        pdf.multi_cell(0, 8, p.title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("cjk", size=11)
        for line in wrap(p.context, pdf.epw, pdf.get_string_width):
            pdf.cell(0, 6.5, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


def _squash(text: str) -> str:
    return "".join(text.split())


def check_pdf(data: bytes, doc_title: str, passages: list[Passage]) -> tuple[list[str], list[list[int]]]:
    """Read a rendered PDF back; return (problems, pages each passage lies on)."""
    reader = PdfReader(io.BytesIO(data))
    pages = [clean_page_text(page.extract_text() or "") for page in reader.pages]
    # Passages flow over page breaks, so search the whole document, remembering
    # where each page starts in the whitespace-free text.
    starts, stream = [], ""
    for text in pages:
        starts.append(len(stream))
        stream += _squash(text)
    problems, spans = [], []
    if not stream.startswith(_squash(doc_title)):
        problems.append(f"title {doc_title!r} is not at the start")
    pos = 0
    for p in passages:
        found = stream.find(_squash(p.title) + _squash(p.context), pos)
        if found < 0:
            problems.append(f"passage {p.id} ({p.title}) did not come back out of the PDF")
            spans.append([])
            continue
        begin = found + len(_squash(p.title))
        end = found + len(_squash(p.title) + _squash(p.context))
        spans.append([i + 1 for i, s in enumerate(starts) if s < end and s + len(_squash(pages[i])) > begin])
        pos = end
    if any("- " in text.splitlines()[-1] for text in pages if text):
        problems.append("a footer page number survived cleaning")
    return problems, spans


def provenance(json_path: Path) -> dict[str, str]:
    """What sources.json says of the input: CMRC 2018's attribution for its trial file; for any
    other SQuAD-format file (benchmarks make PDFs of CJRC's court judgments outside the
    repository), its name and a pointer to the README beside it, never CMRC's licence."""
    if json_path.name == DEFAULT_JSON.name:
        return {"dataset": "CMRC 2018, trial split", "source": SOURCE, "licence": LICENCE, "citation": CITATION}
    see = f"see the README beside {json_path.resolve()}"
    return {"dataset": json_path.name, "source": see, "licence": see, "citation": see}


def build(json_path: Path, out_dir: Path, n_docs: int, per_doc: int, font: Path) -> list[str]:
    """Write the PDFs and sources.json; return the self-test's problems (empty: all good)."""
    origin = provenance(json_path)
    title_prefix = "CMRC 2018 样例文档" if json_path.name == DEFAULT_JSON.name else f"{json_path.stem} 样例文档"
    coverage = font_coverage(font)
    passages, undrawable = [], []
    for p in load_passages(json_path):
        (passages if drawable(p, coverage) else undrawable).append(p)
    for p in undrawable:
        log.info("leaving out %s (%s): characters missing from %s", p.id, p.title, font.name)
    if n_docs * per_doc > len(passages):
        raise SystemExit(f"{json_path} has {len(passages)} usable passages, fewer than {n_docs} x {per_doc}")
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {f"sample_{i:02d}.pdf" for i in range(1, n_docs + 1)}
    for stale in sorted(out_dir.glob("sample_*.pdf")):
        if stale.name not in wanted:
            log.info("removing %s (not part of this set)", stale)
            stale.unlink()

    problems: list[str] = []
    documents: list[dict[str, Any]] = []
    total = 0
    for i in range(1, n_docs + 1):
        name = f"sample_{i:02d}.pdf"
        chosen = passages[(i - 1) * per_doc : i * per_doc]
        doc_title = f"{title_prefix} {i:02d}：" + "、".join(p.title for p in chosen)
        data = render_pdf(doc_title, chosen, font)
        write_bytes_atomic(out_dir / name, data)
        (out_dir / name).chmod(0o644)  # the atomic writer's temp file is private
        total += len(data)
        found, spans = check_pdf(data, doc_title, chosen)
        problems += [f"{name}: {msg}" for msg in found]
        if len(data) > MAX_PDF_BYTES:
            problems.append(f"{name}: {len(data)} bytes, over the {MAX_PDF_BYTES} budget")
        n_pages = len(PdfReader(io.BytesIO(data)).pages)
        log.info("%s: %d bytes, %d pages, %d characters", name, len(data), n_pages, sum(len(p.context) for p in chosen))
        documents.append(
            {
                "file": name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "n_pages": n_pages,
                "title": doc_title,
                "passages": [
                    {
                        "id": p.id,
                        "data_index": p.data_index,
                        "paragraph_index": p.paragraph_index,
                        "title": p.title,
                        "n_chars": len(p.context),
                        "context_sha256": hashlib.sha256(p.context.encode("utf-8")).hexdigest(),
                        "pages": span,
                        "question_ids": p.question_ids,
                    }
                    for p, span in zip(chosen, spans)
                ],
            }
        )
    if total > MAX_TOTAL_BYTES:
        problems.append(f"the PDFs take {total} bytes, over the {MAX_TOTAL_BYTES} budget")

    sources = out_dir / "sources.json"
    write_json_atomic(
        sources,
        {
            **origin,
            "selection": f"passages in file order, {per_doc} per document, leaving out those the font cannot draw",
            "left_out": [p.id for p in undrawable if p.data_index < documents[-1]["passages"][-1]["data_index"]],
            "generated_by": f"python data/make_sample_pdfs.py --n-docs {n_docs} --passages-per-doc {per_doc}",
            "font": font.name,
            "documents": documents,
        },
    )
    sources.chmod(0o644)
    log.info("wrote %d PDFs (%d bytes) and sources.json to %s", n_docs, total, out_dir)
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json_path", nargs="?", type=Path, default=DEFAULT_JSON, help="CMRC 2018 SQuAD-format JSON")
    ap.add_argument("--n-docs", type=int, default=10)
    ap.add_argument("--passages-per-doc", type=int, default=3)
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--font", type=Path, default=None, help="TTF/TTC with CJK glyphs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # the subsetter is chatty at INFO
    if args.n_docs < 1 or args.passages_per_doc < 1:
        ap.error("--n-docs and --passages-per-doc must be at least 1")
    if not args.json_path.is_file():
        ap.error(f"CMRC JSON not found: {args.json_path}")
    font = find_font(args.font)
    log.info("font: %s", font)
    problems = build(args.json_path, args.out_dir, args.n_docs, args.passages_per_doc, font)
    for msg in problems:
        log.error("self-test: %s", msg)
    if problems:
        return 1
    log.info("self-test passed: every title and passage reads back from its PDF")
    return 0


if __name__ == "__main__":
    sys.exit(main())
