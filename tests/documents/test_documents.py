"""Tests of finding and reading PDFs, on real files.

Chinese text comes from the committed sample PDFs in data/pdf; every other file is
made here at test time (fpdf2 with its core Latin fonts, pypdf for blank and
encrypted files), so no system CJK font is needed.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import pypdf
import pytest
from fpdf import FPDF

from tasks.core.errors import NoUsableDocumentsError, PdfReadError, PipelineError
from tasks.documents.reading import (
    NO_TEXT_REASON,
    find_pdfs,
    load_documents,
    read_pdf,
)
from tasks.core.fileio import sha256_file

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO / "data" / "pdf"
SOURCES = json.loads((SAMPLE_DIR / "sources.json").read_text(encoding="utf-8"))
CMRC_JSON = REPO.parent / "shared" / "data" / "cmrc2018_trial.json"

LOREM = (
    "Retrieval models learn from pairs of questions and passages. "
    "Each passage here is long enough to wrap over several lines of the page, "
    "so that the reader has to join the lines again into whole sentences. "
)


# --- building test files -----------------------------------------------------------


def latin_pdf(pages: list[str], footer: bool = False) -> bytes:
    """A PDF with one page per text ("" gives a page with nothing on it)."""
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    for number, text in enumerate(pages, 1):
        pdf.add_page()
        pdf.set_font("helvetica", size=11)
        if text:
            pdf.multi_cell(0, 6, text)
        if footer:
            pdf.set_y(-15)
            pdf.cell(0, 10, f"- {number} -", align="C")
    return bytes(pdf.output())


def blank_pdf(n_pages: int = 2) -> bytes:
    writer = pypdf.PdfWriter()
    for _ in range(n_pages):
        writer.add_blank_page(width=595, height=842)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def encrypted_pdf(data: bytes, user_password: str, algorithm: str = "RC4-128") -> bytes:
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- find_pdfs -------------------------------------------------------------------


def test_find_pdfs_recursive_any_case_sorted(tmp_path: Path) -> None:
    # Created out of order: the result must not depend on the file system's order.
    for name in ["z.pdf", "b/second.PDF", "a.Pdf", "b/a/first.pdf", "notes.txt", "pdf", "b/c.pdf.bak"]:
        write(tmp_path, name, b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_pdfs(tmp_path)]
    assert found == ["a.Pdf", "b/a/first.pdf", "b/second.PDF", "z.pdf"]


def test_find_pdfs_missing_folder_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no such folder"
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_pdfs(missing)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_documents(missing)


def test_find_pdfs_file_instead_of_folder(tmp_path: Path) -> None:
    path = write(tmp_path, "one.pdf", b"x")
    with pytest.raises(NotADirectoryError, match="one.pdf"):
        find_pdfs(path)


# --- read_pdf --------------------------------------------------------------------


def test_read_pdf_joins_wrapped_lines_and_drops_page_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "latin.pdf", latin_pdf([LOREM * 3, "Second page. " + LOREM], footer=True))
    texts, n_pages = read_pdf(path)
    assert n_pages == 2
    assert " ".join(texts[0].split()) == " ".join((LOREM * 3).split())
    for text in texts:
        assert "- 1 -" not in text and "- 2 -" not in text
        # Line breaks survive only after the end of a sentence.
        assert all(line.endswith(".") for line in text.split("\n") if line)


def test_read_pdf_chinese_sample() -> None:
    doc = SOURCES["documents"][0]
    texts, n_pages = read_pdf(SAMPLE_DIR / doc["file"])
    assert n_pages == doc["n_pages"]
    whole = "".join("".join(t.split()) for t in texts)
    for passage in doc["passages"]:
        assert passage["title"] in whole
    assert texts[0].startswith("CMRC 2018 样例文档 01")
    assert "\x00" not in whole


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file (0 bytes)"),
        (b"hello, this is not a PDF\n", "not a PDF (starts with 'hello, this is n')"),
        (b"PK\x03\x04" + b"\x00" * 40, "a ZIP archive"),
        (blank_pdf(), NO_TEXT_REASON),
        (encrypted_pdf(latin_pdf([LOREM]), user_password="secret"), "encrypted (needs a password)"),
    ],
    ids=["empty", "text", "zip", "blank", "password"],
)
def test_read_pdf_reasons(tmp_path: Path, data: bytes, reason: str) -> None:
    path = write(tmp_path, "bad.pdf", data)
    with pytest.raises(PdfReadError) as info:
        read_pdf(path)
    assert reason in info.value.reason
    # The message names the file, the problem and the fix; the CLI prints it without a traceback.
    assert str(info.value) == f"bad.pdf: {info.value.reason} — {info.value.hint}" and info.value.hint
    assert isinstance(info.value, PipelineError)


def test_read_pdf_truncated_is_damaged(tmp_path: Path) -> None:
    path = write(tmp_path, "half.pdf", truncated((SAMPLE_DIR / "sample_01.pdf").read_bytes()))
    with pytest.raises(PdfReadError, match="^half.pdf: damaged PDF: "):
        read_pdf(path)


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-256"])
def test_read_pdf_encrypted_with_empty_password_opens(tmp_path: Path, algorithm: str) -> None:
    if algorithm.startswith("AES"):
        pytest.importorskip("cryptography")
    path = write(tmp_path, "locked.pdf", encrypted_pdf(latin_pdf([LOREM]), user_password="", algorithm=algorithm))
    texts, n_pages = read_pdf(path)
    assert n_pages == 1 and "Retrieval models" in texts[0]


def test_read_pdf_one_broken_page_keeps_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "two.pdf", latin_pdf(["First page.", "Second page."]))
    real = pypdf.PageObject.extract_text

    def flaky(self: pypdf.PageObject, *args: object, **kwargs: object) -> str:
        if "First" in real(self):
            raise ValueError("broken content stream")
        return real(self, *args, **kwargs)  # the reader's visitor collects the positions

    monkeypatch.setattr(pypdf.PageObject, "extract_text", flaky)
    with caplog.at_level(logging.WARNING):
        texts, n_pages = read_pdf(path, label="dir/two.pdf")
    assert (texts, n_pages) == (["", "Second page."], 2)
    assert any("dir/two.pdf" in r.message and "page 1" in r.message for r in caplog.records)


def test_pypdf_warnings_go_to_the_log_not_the_console(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    good = latin_pdf([LOREM])
    # A wrong startxref offset: pypdf warns, repairs, and reads the file.
    repaired = write(tmp_path, "repaired.pdf", good.replace(b"startxref\n", b"startxref\n9"))
    broken = write(tmp_path, "broken.pdf", truncated(good))
    logger = logging.getLogger("test-run")
    with warnings.catch_warnings(record=True) as escaped, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        texts, _ = read_pdf(repaired, logger=logger)
        with pytest.raises(PdfReadError):
            read_pdf(broken, logger=logger)
    assert "Retrieval models" in texts[0]
    assert not escaped, [str(w.message) for w in escaped]
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]
    run_log = [r for r in caplog.records if r.name == "test-run"]
    assert any(r.levelno == logging.DEBUG and "repaired.pdf: pypdf: " in r.message for r in run_log)
    assert any(r.levelno == logging.INFO and "repaired.pdf" in r.message for r in run_log)
    assert any("broken.pdf: pypdf: " in r.message for r in run_log)
    # The pypdf logger is left as it was found.
    assert logging.getLogger("pypdf").propagate is True
    assert not logging.getLogger("pypdf").handlers


# --- load_documents ----------------------------------------------------------------


def test_load_documents_on_the_samples() -> None:
    result = load_documents(SAMPLE_DIR)
    assert result.skipped == []
    assert result.n_files == len(SOURCES["documents"])
    assert [d.source for d in result.documents] == [d["file"] for d in SOURCES["documents"]]
    for doc, meta in zip(result.documents, SOURCES["documents"]):
        assert doc.doc_id == meta["sha256"] == sha256_file(SAMPLE_DIR / doc.source)
        assert doc.n_pages_total == meta["n_pages"]
        assert [p.page for p in doc.pages] == list(range(1, meta["n_pages"] + 1))
        assert all(p.doc_id == doc.doc_id and p.source == doc.source and p.text for p in doc.pages)
    assert result.n_pages == sum(len(d.pages) for d in result.documents)


@pytest.mark.skipif(
    not CMRC_JSON.is_file() and not os.environ.get("REQUIRE_SHARED_DATA"),
    reason="CMRC 2018 trial JSON not beside the repository (CI sets REQUIRE_SHARED_DATA)",
)
def test_samples_hold_the_cmrc_passages() -> None:
    # Every passage listed in sources.json reads back from its PDF, up to whitespace.
    data = json.loads(CMRC_JSON.read_text(encoding="utf-8"))["data"]
    result = {d.source: d for d in load_documents(SAMPLE_DIR).documents}
    for meta in SOURCES["documents"]:
        doc = result[meta["file"]]
        for passage in meta["passages"]:
            context = data[passage["data_index"]]["paragraphs"][passage["paragraph_index"]]["context"]
            on_pages = "".join("".join(p.text.split()) for p in doc.pages if p.page in passage["pages"])
            assert "".join(context.split()) in on_pages, passage["id"]


def test_load_documents_mixed_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = latin_pdf([LOREM, "A second page. " + LOREM])
    write(tmp_path, "good.pdf", good)
    write(tmp_path, "blank.pdf", blank_pdf())
    write(tmp_path, "empty.pdf", b"")
    write(tmp_path, "half.pdf", truncated((SAMPLE_DIR / "sample_02.pdf").read_bytes()))
    write(tmp_path, "sub/notes.PDF", "hello, these are notes\n".encode())
    write(tmp_path, "locked.pdf", encrypted_pdf(good, user_password="secret"))
    write(tmp_path, "restricted.pdf", encrypted_pdf(latin_pdf(["Printing is restricted. " + LOREM]), user_password=""))
    write(tmp_path, "mixed.pdf", latin_pdf(["", "Only the second page has text. " + LOREM, ""]))
    write(tmp_path, "readme.txt", b"not looked at")

    with caplog.at_level(logging.INFO):
        result = load_documents(tmp_path)

    assert result.n_files == 8
    assert [d.source for d in result.documents] == ["good.pdf", "mixed.pdf", "restricted.pdf"]
    reasons = {s.source: s.reason for s in result.skipped}
    assert reasons["blank.pdf"] == NO_TEXT_REASON
    assert reasons["empty.pdf"] == "empty file (0 bytes)"
    assert reasons["half.pdf"].startswith("damaged PDF: ")
    assert reasons["sub/notes.PDF"].startswith("not a PDF (starts with 'hello, these are')")
    assert reasons["locked.pdf"] == "encrypted (needs a password)"
    assert len(reasons) == 5
    for source, reason in reasons.items():
        assert any(
            r.levelno == logging.WARNING and source in r.message and reason in r.message for r in caplog.records
        ), source

    mixed = result.documents[1]
    assert mixed.n_pages_total == 3
    assert [p.page for p in mixed.pages] == [2]
    assert mixed.pages[0].text.startswith("Only the second page has text.")
    assert result.n_pages == 2 + 1 + 1


def test_same_file_under_two_names_is_one_document(tmp_path: Path) -> None:
    shutil.copy(SAMPLE_DIR / "sample_01.pdf", tmp_path / "sample_01.pdf")
    write(tmp_path, "中文 目录/样例 副本.pdf", (SAMPLE_DIR / "sample_01.pdf").read_bytes())
    write(tmp_path, "other.pdf", latin_pdf([LOREM]))
    result = load_documents(tmp_path)
    assert result.n_files == 3
    assert [d.source for d in result.documents] == ["other.pdf", "sample_01.pdf"]
    sample = result.documents[1]
    assert sample.duplicates == ["中文 目录/样例 副本.pdf"]
    assert sample.doc_id == sha256_file(tmp_path / "sample_01.pdf")
    assert all(p.source == "sample_01.pdf" for p in sample.pages)
    assert result.n_pages == 1 + len(sample.pages)


def test_a_copy_of_a_skipped_file_is_skipped_too(tmp_path: Path) -> None:
    write(tmp_path, "a.pdf", blank_pdf())
    write(tmp_path, "b.pdf", blank_pdf())
    write(tmp_path, "c.pdf", latin_pdf([LOREM]))
    result = load_documents(tmp_path)
    assert [(s.source, s.reason) for s in result.skipped] == [
        ("a.pdf", NO_TEXT_REASON),
        ("b.pdf", f"same content as a.pdf: {NO_TEXT_REASON}"),
    ]


def test_no_usable_documents_names_folder_files_and_reasons(tmp_path: Path) -> None:
    write(tmp_path, "scan.pdf", blank_pdf())
    write(tmp_path, "empty.pdf", b"")
    write(tmp_path, "sub/fake.pdf", b"just text")
    with pytest.raises(NoUsableDocumentsError) as info:
        load_documents(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "3 PDF file(s)" in message
    assert f"scan.pdf: {NO_TEXT_REASON}" in message
    assert "empty.pdf: empty file (0 bytes)" in message
    assert "sub/fake.pdf: not a PDF" in message
    assert "OCR" in message and "pdf_dir" in message
    assert info.value.n_files == 3 and len(info.value.skipped) == 3


def test_no_pdfs_at_all(tmp_path: Path) -> None:
    write(tmp_path, "notes.txt", b"x")
    with pytest.raises(NoUsableDocumentsError, match="No PDF files in") as info:
        load_documents(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert info.value.n_files == 0


# --- more bad inputs ---------------------------------------------------------
# Every file is built here: a broken font encoding is simulated by giving fpdf2's font a
# /ToUnicode map whose targets are replacement characters, NUL or private-use code points.

from pypdf.generic import DecodedStreamObject, NameObject  # noqa: E402

from tasks.documents.reading import GARBLED_REASON, HINT_GARBLED, HINT_OCR, display_name  # noqa: E402
from tasks.core.fileio import write_jsonl_atomic  # noqa: E402


def with_broken_tounicode(data: bytes, target: "callable") -> bytes:
    """The same PDF, its fonts' text mapped by ``target(i, code)`` to other code points."""
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(data))
    codes = list(range(0x20, 0x7F))
    cmap = [
        "/CIDInit /ProcSet findresource begin", "12 dict begin", "begincmap",
        "1 begincodespacerange", "<00> <FF>", "endcodespacerange", f"{len(codes)} beginbfchar",
        *(f"<{c:02X}> <{target(i, c):04X}>" for i, c in enumerate(codes)),
        "endbfchar", "endcmap", "CMapName currentdict /CMap defineresource pop", "end", "end",
    ]
    stream = DecodedStreamObject()
    stream.set_data("\n".join(cmap).encode())
    ref = writer._add_object(stream)
    for page in writer.pages:
        for font in page["/Resources"]["/Font"].values():
            font.get_object()[NameObject("/ToUnicode")] = ref
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


BROKEN_MAPS = {
    "replacement": lambda i, c: 0xFFFD,
    "private-use": lambda i, c: 0xE000 + i,
    "nul": lambda i, c: 0x0000,
    "mixed": lambda i, c: (0xFFFD, 0xE000 + i, 0x0000)[i % 3],
}


def mojibake_pdf() -> bytes:
    # Chinese UTF-8 bytes shown as Latin-1: what a PDF made by a tool with the wrong code page holds.
    text = "光合作用是植物利用光能合成有机物的过程。尤金袋鼠分布在澳洲南部岛屿。".encode().decode("latin-1")
    printable = "".join(c for c in text if not "\x80" <= c <= "\x9f")  # fpdf2 cannot draw C1 controls
    return latin_pdf([printable * 4])


@pytest.mark.parametrize("kind", sorted(BROKEN_MAPS))
def test_garbled_text_is_skipped_with_counts_and_a_hint(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path, "garbled.pdf", with_broken_tounicode(latin_pdf([LOREM * 2]), BROKEN_MAPS[kind]))
    with pytest.raises(PdfReadError) as info:
        read_pdf(path)
    assert info.value.reason.startswith(f"{GARBLED_REASON}: 100% of ")
    assert info.value.hint == HINT_GARBLED and "OCR" in info.value.hint and "garbage_pdfs" in info.value.hint


def test_mojibake_is_garbled(tmp_path: Path) -> None:
    path = write(tmp_path, "mojibake.pdf", mojibake_pdf())
    with pytest.raises(PdfReadError, match="mojibake"):
        read_pdf(path)


def test_garbled_pdf_kept_when_asked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "garbled.pdf", with_broken_tounicode(latin_pdf([LOREM]), BROKEN_MAPS["private-use"]))
    with caplog.at_level(logging.WARNING):
        texts, n_pages = read_pdf(path, garbage_pdfs="keep")
    assert n_pages == 1 and texts[0] and set(texts[0]) - set(" \n") <= {chr(0xE000 + i) for i in range(95)}
    assert any("garbled.pdf" in r.message and "kept because garbage_pdfs is 'keep'" in r.message for r in caplog.records)


def test_garbage_threshold_decides(tmp_path: Path) -> None:
    # One page of three is garbage: a third of the characters are unreadable.
    good = latin_pdf([LOREM, LOREM])
    bad = with_broken_tounicode(latin_pdf([LOREM]), BROKEN_MAPS["replacement"])
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(good))
    writer.append(io.BytesIO(bad))
    out = io.BytesIO()
    writer.write(out)
    path = write(tmp_path, "partly.pdf", out.getvalue())
    texts, _ = read_pdf(path, garbage_threshold=0.5)
    assert "Retrieval models" in texts[0] and "\ufffd" in texts[2]
    with pytest.raises(PdfReadError, match=r"^partly.pdf: unreadable text: 3\d% of "):
        read_pdf(path, garbage_threshold=0.2)


def test_scanned_pdf_with_an_image_and_no_text_layer(tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    page = Image.new("L", (600, 300), 255)
    ImageDraw.Draw(page).text((20, 20), "This page is a picture of text.", fill=0)
    pdf = FPDF()
    pdf.add_page()
    pdf.image(page, x=10, y=10, w=190)
    path = write(tmp_path, "scan.pdf", bytes(pdf.output()))
    with pytest.raises(PdfReadError) as info:
        read_pdf(path)
    assert info.value.reason == NO_TEXT_REASON and info.value.hint == HINT_OCR and "ocrmypdf" in info.value.hint


def test_every_skip_reason_comes_with_a_hint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = latin_pdf([LOREM])
    write(tmp_path, "good.pdf", good)
    bad = {
        "empty.pdf": b"",
        "half.pdf": truncated((SAMPLE_DIR / "sample_02.pdf").read_bytes()),
        "word.pdf": b"PK\x03\x04" + b"\x00" * 40,
        "locked.pdf": encrypted_pdf(good, user_password="secret"),
        "scan.pdf": blank_pdf(),
        "garbled.pdf": with_broken_tounicode(latin_pdf([LOREM]), BROKEN_MAPS["mixed"]),
        "copy of scan.pdf": blank_pdf(),
    }
    for name, data in bad.items():
        write(tmp_path, name, data)
    with caplog.at_level(logging.WARNING):
        result = load_documents(tmp_path)
    assert [d.source for d in result.documents] == ["good.pdf"]
    by_source = {s.source: s for s in result.skipped}
    assert set(by_source) == set(bad)
    assert by_source["locked.pdf"].hint.startswith("remove the password")
    assert by_source["copy of scan.pdf"].hint == by_source["scan.pdf"].hint == HINT_OCR
    for s in result.skipped:
        assert s.reason and s.hint, s
        # Exactly one log line per bad file, naming it, the reason and the hint.
        lines = [r.message for r in caplog.records if r.levelno == logging.WARNING and r.message.startswith(f"skipping {s.source}:")]
        assert lines == [f"skipping {s.source}: {s.reason} — {s.hint}"], s.source


def test_garbled_pdfs_setting_reaches_load_documents(tmp_path: Path) -> None:
    write(tmp_path, "good.pdf", latin_pdf([LOREM]))
    write(tmp_path, "garbled.pdf", with_broken_tounicode(latin_pdf([LOREM]), BROKEN_MAPS["replacement"]))
    assert [d.source for d in load_documents(tmp_path).documents] == ["good.pdf"]
    kept = load_documents(tmp_path, garbage_pdfs="keep")
    assert [d.source for d in kept.documents] == ["garbled.pdf", "good.pdf"] and kept.skipped == []


def test_file_names_with_spaces_chinese_and_odd_bytes(tmp_path: Path) -> None:
    data = (SAMPLE_DIR / "sample_01.pdf").read_bytes()
    odd = os.fsdecode(b"caf\xe9 \xff\xfe scan.pdf")  # Latin-1 bytes, not UTF-8
    write(tmp_path, "年度 报告 2024.pdf", data)
    write(tmp_path, odd, latin_pdf([LOREM]))
    write(tmp_path, os.fsdecode(b"sub \xc3\x28/empty.pdf"), b"")
    result = load_documents(tmp_path)
    sources = sorted(d.source for d in result.documents)
    assert sources == ["caf\\xe9 \\xff\\xfe scan.pdf", "年度 报告 2024.pdf"]
    assert [s.source for s in result.skipped] == ["sub \\xc3(/empty.pdf"]
    # The names survive every output: UTF-8 JSON, as the documents stage writes it.
    out = tmp_path / "documents.jsonl"
    write_jsonl_atomic(out, [d.to_dict() for d in result.documents] + [s.__dict__ for s in result.skipped])
    assert "caf\\\\xe9" in out.read_text(encoding="utf-8")
    assert display_name("普通 名字.pdf") == "普通 名字.pdf"


def test_large_pdf_is_read_page_by_page_in_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc

    # 80 pages, each with its own incompressible 300x300 image (90 kB) and a paragraph:
    # about 7 MB, nearly all of it images that text extraction never needs.
    from PIL import Image

    pdf = FPDF()
    pdf.set_auto_page_break(False)
    pdf.set_font("helvetica", size=10)
    for number in range(80):
        pdf.add_page()
        pdf.image(Image.frombytes("L", (300, 300), os.urandom(90_000)), x=10, y=120, w=80)
        pdf.multi_cell(0, 5, f"Page {number}. {LOREM}")
    path = write(tmp_path, "big.pdf", bytes(pdf.output()))
    size = path.stat().st_size
    assert size > 7_000_000

    tracemalloc.start()
    try:
        texts, n_pages = read_pdf(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n_pages == 80 and all(t.startswith(f"Page {i}.") for i, t in enumerate(texts))
    # Reading the whole file, or keeping every parsed page, needs at least the file's size.
    assert peak < size / 4, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"
