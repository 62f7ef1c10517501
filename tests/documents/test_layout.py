"""Page furniture, two columns, tables, footnotes and page breaks, on real PDFs made here.

Each file is typeset with fpdf2's core Latin font (no system CJK font needed) the way real
files are: what the reader must leave out is drawn where such files draw it.
"""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF

from tasks.chunks.chunking import chunk_documents
from tasks.documents.reading import load_documents, read_pdf, read_pdf_pages

HEADER = "Court of Appeal, case 2019-0417"
WATERMARK = "CONFIDENTIAL COPY"
SENTENCES = [
    f"Sentence {i} of the judgment says what the court found about the contract and its parties." for i in range(60)
]


class _Real(FPDF):
    furniture = True

    def header(self) -> None:
        if not self.furniture:
            return
        self.set_font("helvetica", size=40)
        self.set_text_color(225, 225, 225)
        with self.rotation(35, 105, 150):
            self.text(40, 150, WATERMARK)
        self.set_text_color(0, 0, 0)
        self.set_font("helvetica", size=9)
        self.text(20, 14, HEADER)

    def footer(self) -> None:
        if self.furniture:
            self.set_font("helvetica", size=9)
            self.text(95, 287, f"Page {self.page_no()} of {{nb}}")


def _pdf(furniture: bool = True) -> _Real:
    pdf = _Real(format="A4")
    pdf.furniture = furniture
    pdf.set_auto_page_break(False)
    pdf.add_page()
    return pdf


def _lines(pdf: _Real, lines: list[str], *, x: float = 20, top: float = 30, numbers: bool = False) -> None:
    """Body lines from ``top`` down, starting new pages at the bottom margin."""
    y, number = top, 0
    for line in lines:
        if y > 270:
            pdf.add_page()
            y, number = 30, 0
        pdf.set_font("helvetica", size=11)
        pdf.text(x, y, line)
        if numbers:
            number += 1
            pdf.set_font("helvetica", size=7)
            pdf.text(x - 8, y, str(number))
        y += 6


FEES = [("Item", "Amount", "Paid by"), ("Court fee", "2300", "Defendant"), ("Expert fee", "4000", "Plaintiff")]


def _cells(pdf: _Real, rows: list[tuple[str, ...]], *, top: float) -> None:
    """Table rows from ``top`` down, a cell every 50 mm, without rules."""
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            pdf.text(22 + 50 * c, top + 7 * r, cell)


def _write(pdf: FPDF, tmp_path: Path, name: str = "doc.pdf") -> Path:
    path = tmp_path / name
    path.write_bytes(bytes(pdf.output()))
    return path


def _body() -> list[str]:
    return [s for s in SENTENCES]


def test_running_header_footer_page_numbers_and_watermark_are_left_out(tmp_path: Path) -> None:
    pdf = _pdf()
    _lines(pdf, _body())
    texts, n_pages = read_pdf(_write(pdf, tmp_path))
    assert n_pages == 2
    joined = "\n".join(texts)
    assert "Court of Appeal" not in joined and "2019-0417" not in joined
    assert "CONFIDENTIAL" not in joined
    assert "Page 1" not in joined and "of 2" not in joined
    for sentence in SENTENCES:
        assert sentence in joined


def test_margin_line_numbers_are_left_out(tmp_path: Path) -> None:
    pdf = _pdf()
    _lines(pdf, _body()[:20], numbers=True)
    (text,), _ = read_pdf(_write(pdf, tmp_path))
    for sentence in SENTENCES[:20]:
        assert sentence in text
    # Every body line ends a sentence, so a surviving number would sit on a line of its own or glued to one.
    assert not any(line.strip().isdigit() for line in text.split("\n"))
    assert "contract and its parties.1" not in text and "\n1 Sentence" not in text


def test_two_columns_are_read_left_column_first(tmp_path: Path) -> None:
    pdf = _pdf(furniture=False)
    left = [f"Left column line {i} of the first column runs to here." for i in range(12)]
    right = [f"Right column line {i} of the second column runs here." for i in range(12)]
    for i, (a, b) in enumerate(zip(left, right)):  # drawn row by row, as some generators do
        pdf.set_font("helvetica", size=9)
        pdf.text(15, 30 + 6 * i, a)
        pdf.text(110, 30 + 6 * i, b)
    (text,), _ = read_pdf(_write(pdf, tmp_path))
    positions = [text.index(line) for line in left + right]
    assert positions == sorted(positions)


def test_a_table_becomes_a_markdown_table_apart_from_the_running_text(tmp_path: Path) -> None:
    pdf = _pdf(furniture=False)
    _lines(pdf, _body()[:5])
    rows = [("Item", "Amount", "Paid by"), ("Court fee", "2300", "Defendant"), ("Expert fee", "4000", "Plaintiff")]
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            pdf.rect(20 + 50 * c, 70 + 7 * r, 50, 7)
            pdf.text(22 + 50 * c, 75 + 7 * r, cell)
    _lines(pdf, _body()[5:10], top=100)
    (page,) = read_pdf_pages(_write(pdf, tmp_path))
    assert "Court fee" not in page.text and "2300" not in page.text
    assert page.asides == [
        "| Item | Amount | Paid by |\n|---|---|---|\n| Court fee | 2300 | Defendant |\n| Expert fee | 4000 | Plaintiff |"
    ]
    assert SENTENCES[4] in page.text and SENTENCES[5] in page.text


def test_a_sentence_across_a_page_break_stays_whole_in_one_chunk_and_a_footnote_stays_apart(tmp_path: Path) -> None:
    pdf = _pdf()
    body = _body()[:40]
    _lines(pdf, body + ["The parties agreed that the buyer pays the seller the price of the goods"])
    pdf.set_font("helvetica", size=8)
    pdf.text(20, 276, "1 Names of the parties are changed.")
    pdf.add_page()
    _lines(pdf, ["within thirty days of delivery at the port of Shanghai.", *SENTENCES[40:44]])
    folder = tmp_path / "pdfs"
    folder.mkdir()
    _write(pdf, folder)
    (doc,) = load_documents(folder).documents
    assert [p.asides for p in doc.pages] == [["1 Names of the parties are changed."], []]
    assert "Names of the parties" not in doc.pages[0].text
    chunks = chunk_documents([doc], chunk_size=120, chunk_overlap=10)
    whole = "the buyer pays the seller the price of the goods within thirty days of delivery"
    holding = [c for c in chunks if whole in c.text]
    assert holding and all((c.page, c.last_page, c.pages) == (1, 2, "1–2") for c in holding)
    assert [c.chunk_id for c in chunk_documents([doc], 120, 10)] == [c.chunk_id for c in chunks]


def test_a_one_page_document_keeps_its_first_line(tmp_path: Path) -> None:
    pdf = _pdf(furniture=False)
    pdf.set_font("helvetica", size=11)
    pdf.text(20, 14, "Judgment of 3 May 2019")  # where a running header would be, as large as the text
    _lines(pdf, _body()[:5])
    (text,), _ = read_pdf(_write(pdf, tmp_path))
    assert text.startswith("Judgment of 3 May 2019")


def test_a_one_page_document_loses_its_small_running_header(tmp_path: Path) -> None:
    pdf = _pdf()  # header (9 pt), watermark, "Page 1 of 1"
    pdf.set_font("helvetica", size=14)
    pdf.text(20, 24, "Judgment on the sale of goods")
    _lines(pdf, _body()[:5])
    (text,), _ = read_pdf(_write(pdf, tmp_path))
    assert text.startswith("Judgment on the sale of goods")
    assert HEADER not in text and "Page 1" not in text and "CONFIDENTIAL" not in text


def test_a_two_page_document_keeps_a_title_that_only_its_first_page_has(tmp_path: Path) -> None:
    pdf = _pdf()
    pdf.set_font("helvetica", size=14)
    pdf.text(20, 24, "Judgment on the sale of goods")
    _lines(pdf, _body())
    texts, _ = read_pdf(_write(pdf, tmp_path))
    assert len(texts) == 2 and texts[0].startswith("Judgment on the sale of goods")


def test_numbers_in_a_table_at_the_top_of_a_page_are_cells_not_page_numbers(tmp_path: Path) -> None:
    pdf = _pdf()
    _lines(pdf, _body()[:10])
    pdf.add_page()
    for r, row in enumerate([("Court fee", "2300", "Defendant"), ("Expert fee", "40", "Plaintiff")]):
        for c, cell in enumerate(row):
            pdf.text(22 + 50 * c, 22 + 7 * r, cell)
    _lines(pdf, _body()[10:20], top=45)
    pages = read_pdf_pages(_write(pdf, tmp_path))
    assert pages[1].asides == ["| Court fee | 2300 | Defendant |\n|---|---|---|\n| Expert fee | 40 | Plaintiff |"]


def test_lines_drawn_word_by_word_are_running_text_not_a_table(tmp_path: Path) -> None:
    pdf = _pdf(furniture=False)
    pdf.set_font("helvetica", size=11)
    for i in range(4):  # each word its own text object, as some writers draw them
        x = 20.0
        for word in f"Line {i} of running text drawn word by word here.".split():
            pdf.text(x, 30 + 6 * i, word)
            x += pdf.get_string_width(word + " ")
    (page,) = read_pdf_pages(_write(pdf, tmp_path))
    assert page.asides == [] and "Line 3 of running text" in " ".join(page.text.split())


def test_a_number_drawn_as_the_last_word_of_a_line_stays(tmp_path: Path) -> None:
    pdf = _pdf(furniture=False)
    pdf.set_font("helvetica", size=11)
    for i in range(4):
        words = [*f"The parties signed the contract number {i} in the year".split(), str(2016 + i)]
        x = 20.0
        for word in words:
            pdf.text(x, 30 + 6 * i, word)
            x += pdf.get_string_width(word + " ")
    (text,), _ = read_pdf(_write(pdf, tmp_path))
    assert all(str(2016 + i) in text for i in range(4))


def test_a_reference_list_is_chunked_apart_from_the_running_text(tmp_path: Path) -> None:
    pdf = _pdf()
    references = [f"[{i}] Author {i}. A study of contracts, volume {i}. Law Press, 2019." for i in range(1, 9)]
    _lines(pdf, _body()[:50] + ["References", *references])
    folder = tmp_path / "pdfs"
    folder.mkdir()
    _write(pdf, folder)
    (doc,) = load_documents(folder).documents
    # A chunk may hold several sentences and its overlap a whole one: plenty of room to mix.
    chunks = chunk_documents([doc], chunk_size=200, chunk_overlap=40)
    with_refs = [c for c in chunks if "Law Press" in c.text]
    assert with_refs and all("Sentence" not in c.text for c in with_refs), [c.text[:80] for c in with_refs]
    assert with_refs[0].text.startswith("References") and with_refs[-1].last_page == 2
    assert all(any(r in c.text for c in chunks) for r in references)  # nothing lost
    assert all(any(s in c.text for c in chunks) for s in _body()[:50])


def test_the_report_counts_the_furniture_left_out_and_the_chunks_kept_apart(tmp_path: Path) -> None:
    from tasks.reporting.tables import render_report

    pdf = _pdf()
    _lines(pdf, _body()[:5])
    _cells(pdf, FEES, top=75)
    _lines(pdf, _body()[5:50], top=100)
    pdf.set_font("helvetica", size=8)
    pdf.text(20, 276, "1 Names of the parties are changed.")
    pdf.add_page()
    _lines(pdf, ["References", *[f"[{i}] Author {i}. A study of contracts. Law Press, 2019." for i in range(1, 6)]])
    folder = tmp_path / "pdfs"
    folder.mkdir()
    _write(pdf, folder)
    result = load_documents(folder)
    chunks = chunk_documents(result.documents, chunk_size=200, chunk_overlap=20)
    kinds = {c.kind for c in chunks}
    assert kinds == {"text", "table", "footnote", "references"}, kinds
    assert next(c for c in chunks if c.kind == "table").text.startswith("| Item | Amount | Paid by |")
    assert all("Law Press" in c.text for c in chunks if c.kind == "references")
    # Three pages, each with a header, a footer ("Page N of 3") and a watermark.
    assert result.left_out["watermark"] == 3 and result.left_out["running header or footer"] == 6

    from tasks.chunks.stage import ChunksRecord, _chunks_summary
    from tasks.documents.stage import DocumentsRecord, _summary

    documents = _summary(DocumentsRecord(folder, 1, 1, 3, 0, [], dict(result.left_out)), cached=False)
    counts = {k: sum(c.kind == k for c in chunks) for k in ("table", "footnote", "references")}
    stages = {"documents": documents,
              "chunks": _chunks_summary(ChunksRecord(folder, len(chunks), 0, "document", counts), cached=False)}
    report = render_report({"base": {"ndcg@10": 0.5}}, {"stages": stages}, {})
    assert f"watermark {result.left_out['watermark']}" in report
    assert (f"{counts['table']} of tables (as markdown), {counts['footnote']} of footnotes, "
            f"{counts['references']} of reference lists") in report


def test_a_table_cut_by_a_page_break_stays_a_table_on_both_pages(tmp_path: Path) -> None:
    pdf = _pdf()
    _lines(pdf, _body()[:36])
    _cells(pdf, FEES, top=252)
    pdf.add_page()
    _cells(pdf, [("Travel", "800", "Defendant")], top=30)  # the table's last row, alone on the next page
    _lines(pdf, _body()[36:40], top=40)
    first, second = read_pdf_pages(_write(pdf, tmp_path))
    assert first.asides == [
        "| Item | Amount | Paid by |\n|---|---|---|\n| Court fee | 2300 | Defendant |\n| Expert fee | 4000 | Plaintiff |"
    ]
    assert second.asides == ["| Item | Amount | Paid by |\n|---|---|---|\n| Travel | 800 | Defendant |"]
    assert "Travel" not in second.text and SENTENCES[36] in second.text


def test_a_line_of_cells_alone_at_a_page_top_is_text_when_no_table_ends_the_page_before(tmp_path: Path) -> None:
    pdf = _pdf()
    _lines(pdf, _body()[:36])
    pdf.add_page()
    _cells(pdf, [("Travel", "800", "Defendant")], top=30)
    _lines(pdf, _body()[36:40], top=40)
    first, second = read_pdf_pages(_write(pdf, tmp_path))
    assert first.asides == second.asides == []
    assert "Travel" in second.text
