"""Find the PDFs in a folder and read them into documents of cleaned page text.

Pure functions, no Prefect: the flow wraps :func:`load_documents` in a task.

* Every unique file content is one :class:`~tasks.core.records.Document`, whose id is the
  sha256 of the bytes; the same file under other names is listed in ``duplicates``
  and read once.
* A file that cannot be used (empty, not a PDF, damaged, encrypted with a password,
  no text layer, text that is mostly unreadable) is a :class:`~tasks.core.records.SkippedFile`
  with a reason and a hint a person can act on, logged as one WARNING line; the run goes
  on with the other files.
* Pages are read one at a time from the open file, and pypdf's object cache is emptied
  after each page, so memory stays bounded however large the PDF (bench/pdf_memory.py).
* Page furniture (running headers and footers, page numbers, watermarks, margin line
  numbers) is left out, two-column pages are read column by column, and tables and
  footnotes are kept apart from the running text (:mod:`tasks.documents.layout`).
* File names are shown as text even when they are not valid UTF-8 (the odd bytes as
  ``\\xff``), so they can be logged and written to JSON.
* pypdf's own warnings go to the run log with the file's name, never raw to the console.

Example::

    >>> result = load_documents(Path("data/pdf"))
    >>> len(result.documents), result.n_pages, result.skipped
    (10, 17, [])
    >>> pages, n_total = read_pdf(Path("data/pdf/sample_01.pdf"))
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pypdf
import pypdf.errors

from tasks.core.errors import NoUsableDocumentsError, PdfReadError
from tasks.core.fileio import sha256_file
from tasks.core.records import Document, Page, SkippedFile
from tasks.documents.cleaning import clean_block_text, clean_page_text
from tasks.documents.layout import PageLayout, lay_out_pages, page_fragments
from tasks.documents.quality import TextQuality, assess_text

__all__ = [
    "DocumentsResult",
    "display_name",
    "find_pdfs",
    "load_documents",
    "read_pdf",
    "read_pdf_pages",
]

_log = logging.getLogger(__name__)

NO_TEXT_REASON = "no text layer (scanned? needs OCR)"
GARBLED_REASON = "unreadable text"  # the start of the reason; the counts follow

# What to do about each kind of bad file, shown beside the reason in the skipped-inputs table.
HINT_CANNOT_OPEN = "check that the file exists and that you may read it"
HINT_EMPTY = "copy the file again from where it came from, or delete it"
HINT_NOT_PDF = "convert it to PDF, or move it out of the PDF folder"
HINT_DAMAGED = "download or export it again (a cut-off copy looks like this); `qpdf --check FILE` shows what is broken"
HINT_ENCRYPTED = "remove the password first, e.g. `qpdf --decrypt --password=PASSWORD in.pdf out.pdf`"
HINT_OCR = "add a text layer with OCR first, e.g. `ocrmypdf -l chi_sim in.pdf out.pdf`"
HINT_GARBLED = (
    "its fonts map to no real characters: OCR it (`ocrmypdf --force-ocr -l chi_sim in.pdf out.pdf`) or export it "
    "again from the source; garbage_pdfs = \"keep\" uses it as it is"
)

# What a file that is not a PDF most likely is, by its first bytes.
_MAGIC = {
    b"PK\x03\x04": "a ZIP archive, e.g. .docx/.xlsx/.pptx",
    b"\xd0\xcf\x11\xe0": "an old Office document, e.g. .doc",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"{\\rtf": "an RTF document",
    b"<!DOCTYPE html": "an HTML page",
    b"<html": "an HTML page",
}


@dataclass
class DocumentsResult:
    """What :func:`load_documents` found: the documents, the files it skipped, and counts."""

    documents: list[Document]
    skipped: list[SkippedFile]
    n_files: int  # PDF files found, duplicates and skipped ones included
    n_pages: int  # pages with text, over all documents
    # What the layout left out of the running text, over all documents: kind -> pieces of text.
    left_out: Counter = field(default_factory=Counter)


def find_pdfs(pdf_dir: Path) -> list[Path]:
    """All ``*.pdf`` files (any case) under pdf_dir, sorted by their path relative to it.

    The order does not depend on the file system, so runs are reproducible::

        >>> [p.name for p in find_pdfs(Path("data/pdf"))][:2]
        ['sample_01.pdf', 'sample_02.pdf']
    """
    pdf_dir = Path(pdf_dir)
    if not pdf_dir.exists():
        raise FileNotFoundError(
            f"PDF folder not found: {pdf_dir} (absolute path {pdf_dir.absolute()}). "
            "Create it and put the PDFs in it, or set pdf_dir to the folder that holds them."
        )
    if not pdf_dir.is_dir():
        raise NotADirectoryError(f"pdf_dir must be a folder, but {pdf_dir} is a file")
    found = []
    # os.walk does not follow symbolic links to folders, so a link loop cannot hang the walk.
    for root, _dirs, files in os.walk(pdf_dir):
        for name in files:
            path = Path(root, name)
            if name.lower().endswith(".pdf") and path.is_file():
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(pdf_dir).parts)


def display_name(relative: Path | str) -> str:
    """A file's path as printable text: bytes that are not UTF-8 become ``\\xNN``.

    Python hands such names over as lone surrogates, which cannot be written to a
    UTF-8 log, JSON or report::

        >>> display_name(os.fsdecode(b"scan \\xff.pdf"))
        'scan \\\\xff.pdf'
    """
    text = Path(relative).as_posix()
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_pdf(
    path: Path,
    *,
    logger: logging.Logger | None = None,
    label: str | None = None,
    garbage_pdfs: str = "skip",
    garbage_threshold: float = 0.3,
) -> tuple[list[str], int]:
    """Return the cleaned running text of every page (``""`` for a page without text) and the
    page count; :func:`read_pdf_pages` also gives the tables and footnotes kept apart.

    Example::

        >>> texts, n_pages = read_pdf(Path("data/pdf/sample_01.pdf"))
        >>> n_pages, texts[0][:14]
        (2, 'CMRC 2018 样例文档')
    """
    pages = read_pdf_pages(path, logger=logger, label=label, garbage_pdfs=garbage_pdfs,
                           garbage_threshold=garbage_threshold)
    return [p.text for p in pages], len(pages)


def read_pdf_pages(
    path: Path,
    *,
    logger: logging.Logger | None = None,
    label: str | None = None,
    garbage_pdfs: str = "skip",
    garbage_threshold: float = 0.3,
) -> list[PageLayout]:
    """Every page's cleaned running text and what was kept apart from it (tables, footnotes).

    Raises :class:`PdfReadError` when the file cannot be used. ``label`` names the file
    in log lines and in the error (default: its name). pypdf's warnings about the file are re-logged to
    ``logger`` (default: this module's) at DEBUG, with one INFO line when the file was
    read all the same. When more than ``garbage_threshold`` of the extracted characters
    are unreadable (see :mod:`tasks.documents.quality`), the file is skipped
    (``garbage_pdfs="skip"``) or kept with a WARNING (``"keep"``).

    Example::

        >>> pages = read_pdf_pages(Path("data/pdf/sample_01.pdf"))
        >>> len(pages), pages[0].text[:14], pages[0].asides
        (2, 'CMRC 2018 样例文档', [])
    """
    path = Path(path)
    log = logger or _log
    name = label or display_name(path.name)
    messages: list[str] = []
    quality = TextQuality()
    try:
        _check_header(path)
        with _captured_pypdf_messages(messages):
            texts = _page_texts(path, name, log, quality)
        if quality.n_chars and quality.share > garbage_threshold:
            problem = f"{GARBLED_REASON}: {quality.describe()}"
            if garbage_pdfs == "skip":
                raise PdfReadError(problem, HINT_GARBLED)
            log.warning("%s: %s; kept because garbage_pdfs is %r", name, problem, garbage_pdfs)
        if not any(p.text or p.asides for p in texts):
            raise PdfReadError(NO_TEXT_REASON, HINT_OCR)
    except PdfReadError as exc:
        _relog(messages, name, log)
        if messages and exc.reason.startswith("damaged"):
            raise PdfReadError(f"{exc.reason} (pypdf: {messages[0]})", exc.hint, name) from exc
        exc.source = name
        raise
    _relog(messages, name, log)
    if messages:
        log.info("%s: read, although pypdf reported %d problem(s), first: %s", name, len(messages), messages[0])
    return texts


def load_documents(
    pdf_dir: Path,
    logger: logging.Logger | None = None,
    *,
    garbage_pdfs: str = "skip",
    garbage_threshold: float = 0.3,
) -> DocumentsResult:
    """Read every PDF under pdf_dir into documents; skip, log and list the ones that fail.

    Raises :class:`NoUsableDocumentsError` when no document is left, and
    ``FileNotFoundError`` when the folder does not exist. ``garbage_pdfs`` and
    ``garbage_threshold`` are the settings of the same names (see :func:`read_pdf`).

    Example::

        >>> result = load_documents(Path("data/pdf"), logger=logging.getLogger("run"))
        >>> result.documents[0].source, result.documents[0].pages[0].page
        ('sample_01.pdf', 1)
    """
    pdf_dir = Path(pdf_dir)
    log = logger or _log
    paths = find_pdfs(pdf_dir)
    log.info("found %d PDF file(s) in %s", len(paths), pdf_dir)

    documents: list[Document] = []
    skipped: list[SkippedFile] = []
    seen: dict[str, Document | SkippedFile] = {}  # content hash -> what became of it
    left_out: Counter = Counter()

    def skip(source: str, reason: str, hint: str) -> SkippedFile:
        # One line per bad file: which file, why, and what to do.
        log.warning("skipping %s: %s%s", source, reason, f" — {hint}" if hint else "")
        entry = SkippedFile(source=source, reason=reason, hint=hint)
        skipped.append(entry)
        return entry

    for path in paths:
        source = display_name(path.relative_to(pdf_dir))
        try:
            digest = sha256_file(path)
        except OSError as exc:
            skip(source, f"cannot read the file: {exc.strerror or exc}", HINT_CANNOT_OPEN)
            continue
        first = seen.get(digest)
        if isinstance(first, Document):
            first.duplicates.append(source)
            log.info("%s has the same content as %s; it is read once", source, first.source)
            continue
        if isinstance(first, SkippedFile):
            skip(source, f"same content as {first.source}: {first.reason}", first.hint)
            continue
        try:
            laid_out = read_pdf_pages(
                path, logger=log, label=source, garbage_pdfs=garbage_pdfs, garbage_threshold=garbage_threshold
            )
        except PdfReadError as exc:
            seen[digest] = skip(source, exc.reason, exc.hint)
            continue
        n_pages = len(laid_out)
        for p in laid_out:
            left_out.update(p.removed)
        pages = [Page(doc_id=digest, source=source, page=i, text=p.text, asides=p.asides)
                 for i, p in enumerate(laid_out, 1) if p.text or p.asides]
        doc = Document(doc_id=digest, source=source, pages=pages, n_pages_total=n_pages)
        log.debug(
            "%s: %d of %d pages with text, %d characters",
            source, len(pages), n_pages, sum(len(p.text) for p in pages),
        )
        seen[digest] = doc
        documents.append(doc)

    n_pages_kept = sum(len(d.pages) for d in documents)
    n_dups = sum(len(d.duplicates) for d in documents)
    log.info(
        "read %d document(s), %d page(s) with text, from %d file(s): %d duplicate(s), %d skipped",
        len(documents), n_pages_kept, len(paths), n_dups, len(skipped),
    )
    if not documents:
        raise NoUsableDocumentsError(
            _no_documents_message(pdf_dir, len(paths), skipped), pdf_dir=pdf_dir, n_files=len(paths), skipped=skipped
        )
    return DocumentsResult(documents=documents, skipped=skipped, n_files=len(paths), n_pages=n_pages_kept,
                           left_out=left_out)


# --- reading one file ------------------------------------------------------------


def _check_header(path: Path) -> None:
    """Reject empty files and files that are not PDFs before pypdf guesses at them."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as exc:
        raise PdfReadError(f"cannot read the file: {exc.strerror or exc}", HINT_CANNOT_OPEN) from exc
    if size == 0:
        raise PdfReadError("empty file (0 bytes)", HINT_EMPTY)
    # The PDF spec lets the header start anywhere in the first 1024 bytes.
    if b"%PDF-" not in head:
        kind = next((what for magic, what in _MAGIC.items() if head.lstrip().startswith(magic)), None)
        preview = repr(head[:16].decode("utf-8", errors="replace"))
        raise PdfReadError(f"not a PDF (starts with {preview}{': ' + kind if kind else ''})", HINT_NOT_PDF)


def _page_texts(path: Path, name: str, log: logging.Logger, quality: TextQuality) -> list[PageLayout]:
    """Cleaned text per page; adds the raw text's unreadable-character counts to ``quality``."""
    try:
        # pypdf given a path reads the whole file into memory; given an open file it
        # seeks to the objects it needs.
        with open(path, "rb") as stream:
            return _read_pages(stream, name, log, quality)
    except OSError as exc:
        raise PdfReadError(f"cannot read the file: {exc.strerror or exc}", HINT_CANNOT_OPEN) from exc


def _read_pages(stream: BinaryIO, name: str, log: logging.Logger, quality: TextQuality) -> list[PageLayout]:
    try:
        reader = pypdf.PdfReader(stream, strict=False)
        encrypted = reader.is_encrypted
    except Exception as exc:  # pypdf raises many kinds on broken files, not only its own
        raise PdfReadError(f"damaged PDF: {_describe(exc)}", HINT_DAMAGED) from exc
    if encrypted:
        _decrypt(reader)
    try:
        n_pages = len(reader.pages)
    except Exception as exc:
        raise PdfReadError(f"damaged PDF: {_describe(exc)}", HINT_DAMAGED) from exc
    if n_pages == 0:
        raise PdfReadError("damaged PDF: it has no pages", HINT_DAMAGED)

    fragments: list = []  # per page: the text's pieces with their positions
    errors: list[str] = []
    box = reader.pages[0].mediabox
    for number in range(1, n_pages + 1):
        try:
            raw, found = page_fragments(reader.pages[number - 1])
        except Exception as exc:
            # One broken page should not cost the document its other pages.
            errors.append(_describe(exc))
            log.warning("%s: page %d: text could not be extracted (%s); page left out", name, number, errors[-1])
            raw, found = "", []
        # Judged before cleaning: cleaning removes NUL and other control characters.
        quality += assess_text(raw)
        fragments.append(found)
        # pypdf keeps every object it parsed (fonts, images, content streams) for the
        # reader's lifetime; dropping them after each page bounds memory by one page.
        reader.resolved_objects.clear()
    if len(errors) == n_pages:
        raise PdfReadError(f"damaged PDF: no page could be read ({errors[0]})", HINT_DAMAGED)
    # Furniture is what repeats across pages, so the pages are laid out together.
    pages = lay_out_pages(fragments, float(box.width), float(box.height))
    removed = sum((p.removed for p in pages), start=Counter())
    if removed:
        log.debug("%s: left out of the running text: %s", name, ", ".join(f"{n} {k}" for k, n in removed.items()))
    return [PageLayout(clean_page_text(p.text), [clean_block_text(a) for a in p.asides if a.strip()], p.removed)
            for p in pages]


def _decrypt(reader: pypdf.PdfReader) -> None:
    # Many PDFs are encrypted only to restrict printing or copying: their user password
    # is empty, and they open without one.
    try:
        result = reader.decrypt("")
    except pypdf.errors.DependencyError as exc:
        raise PdfReadError(
            f"encrypted, and decrypting it needs a package that is not installed: {exc}",
            "pip install cryptography",
        ) from exc
    except Exception as exc:
        raise PdfReadError(f"encrypted, and could not be decrypted: {_describe(exc)}", HINT_ENCRYPTED) from exc
    if result == pypdf.PasswordType.NOT_DECRYPTED:
        raise PdfReadError("encrypted (needs a password)", HINT_ENCRYPTED)


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


@contextmanager
def _captured_pypdf_messages(messages: list[str]) -> Iterator[None]:
    """Collect what pypdf logs or warns while the block runs, instead of printing it.

    Changes process-wide state (the pypdf logger, the warnings filters) for the
    duration, so read one PDF at a time.
    """
    pypdf_logger = logging.getLogger("pypdf")
    handler = _ListHandler(messages)
    saved = pypdf_logger.propagate, pypdf_logger.level
    pypdf_logger.addHandler(handler)
    pypdf_logger.propagate = False  # else the root logger's console handler prints them
    pypdf_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                messages.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    finally:
        pypdf_logger.removeHandler(handler)
        pypdf_logger.propagate, level = saved
        pypdf_logger.setLevel(level)


class _ListHandler(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # a badly formatted pypdf message must not break the read
            self.messages.append(str(record.msg))


def _relog(messages: list[str], name: str, log: logging.Logger) -> None:
    for message in messages:
        log.debug("%s: pypdf: %s", name, message)


def _no_documents_message(pdf_dir: Path, n_files: int, skipped: list[SkippedFile]) -> str:
    if n_files == 0:
        return (
            f"No PDF files in {pdf_dir} (searched it and its subfolders for *.pdf). "
            "Put the PDFs to fine-tune on there, or set pdf_dir to the folder that holds them."
        )
    lines = [f"None of the {n_files} PDF file(s) in {pdf_dir} could be used:"]
    lines += [f"  - {s.source}: {s.reason}" + (f" — {s.hint}" if s.hint else "") for s in skipped]
    lines.append(
        "Replace or repair these files (scanned PDFs need OCR first, password-protected "
        "ones need the password removed), or set pdf_dir to another folder."
    )
    return "\n".join(lines)
