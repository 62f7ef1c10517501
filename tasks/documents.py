"""Find the PDFs in a folder and read them into documents of cleaned page text.

Pure functions, no Prefect: the flow wraps :func:`load_documents` in a task.

* Every unique file content is one :class:`~tasks.records.Document`, whose id is the
  sha256 of the bytes; the same file under other names is listed in ``duplicates``
  and read once.
* A file that cannot be used (empty, not a PDF, damaged, encrypted with a password,
  no text layer) is a :class:`~tasks.records.SkippedFile` with a reason a person can
  act on, logged as a WARNING; the run goes on with the other files.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pypdf
import pypdf.errors

from tasks.errors import PipelineError
from tasks.fileio import sha256_file
from tasks.records import Document, Page, SkippedFile
from tasks.text_cleaning import clean_page_text

__all__ = [
    "DocumentsResult",
    "NoUsableDocumentsError",
    "PdfReadError",
    "find_pdfs",
    "load_documents",
    "read_pdf",
]

_log = logging.getLogger(__name__)

NO_TEXT_REASON = "no text layer (scanned? needs OCR)"

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


class PdfReadError(Exception):
    """A PDF that cannot be used; ``reason`` is short and meant for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoUsableDocumentsError(PipelineError, RuntimeError):
    """The PDF folder gave no document to work with; the message says why and what to do."""

    def __init__(self, pdf_dir: Path, n_files: int, skipped: list[SkippedFile]) -> None:
        self.pdf_dir = pdf_dir
        self.n_files = n_files
        self.skipped = skipped
        super().__init__(_no_documents_message(pdf_dir, n_files, skipped))


@dataclass
class DocumentsResult:
    """What :func:`load_documents` found: the documents, the files it skipped, and counts."""

    documents: list[Document]
    skipped: list[SkippedFile]
    n_files: int  # PDF files found, duplicates and skipped ones included
    n_pages: int  # pages with text, over all documents


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


def read_pdf(
    path: Path, *, logger: logging.Logger | None = None, label: str | None = None
) -> tuple[list[str], int]:
    """Return the cleaned text of every page (``""`` for a page without text) and the page count.

    Raises :class:`PdfReadError` when the file cannot be used. ``label`` names the file
    in log lines (default: its name). pypdf's warnings about the file are re-logged to
    ``logger`` (default: this module's) at DEBUG, with one INFO line when the file was
    read all the same.

    Example::

        >>> texts, n_pages = read_pdf(Path("data/pdf/sample_01.pdf"))
        >>> n_pages, texts[0][:14]
        (2, 'CMRC 2018 样例文档')
    """
    path = Path(path)
    log = logger or _log
    name = label or path.name
    _check_header(path)
    messages: list[str] = []
    try:
        with _captured_pypdf_messages(messages):
            texts = _page_texts(path, name, log)
    except PdfReadError as exc:
        _relog(messages, name, log)
        if messages and exc.reason.startswith("damaged"):
            raise PdfReadError(f"{exc.reason} (pypdf: {messages[0]})") from exc
        raise
    _relog(messages, name, log)
    if messages:
        log.info("%s: read, although pypdf reported %d problem(s), first: %s", name, len(messages), messages[0])
    return texts, len(texts)


def load_documents(pdf_dir: Path, logger: logging.Logger | None = None) -> DocumentsResult:
    """Read every PDF under pdf_dir into documents; skip, log and list the ones that fail.

    Raises :class:`NoUsableDocumentsError` when no document is left, and
    ``FileNotFoundError`` when the folder does not exist.

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

    def skip(source: str, reason: str) -> SkippedFile:
        log.warning("skipping %s: %s", source, reason)
        entry = SkippedFile(source=source, reason=reason)
        skipped.append(entry)
        return entry

    for path in paths:
        source = path.relative_to(pdf_dir).as_posix()
        try:
            digest = sha256_file(path)
        except OSError as exc:
            skip(source, f"cannot read the file: {exc.strerror or exc}")
            continue
        first = seen.get(digest)
        if isinstance(first, Document):
            first.duplicates.append(source)
            log.info("%s has the same content as %s; it is read once", source, first.source)
            continue
        if isinstance(first, SkippedFile):
            skip(source, f"same content as {first.source}: {first.reason}")
            continue
        try:
            texts, n_pages = read_pdf(path, logger=log, label=source)
        except PdfReadError as exc:
            seen[digest] = skip(source, exc.reason)
            continue
        pages = [Page(doc_id=digest, source=source, page=i, text=t) for i, t in enumerate(texts, 1) if t]
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
        raise NoUsableDocumentsError(pdf_dir, len(paths), skipped)
    return DocumentsResult(documents=documents, skipped=skipped, n_files=len(paths), n_pages=n_pages_kept)


# --- reading one file ------------------------------------------------------------


def _check_header(path: Path) -> None:
    """Reject empty files and files that are not PDFs before pypdf guesses at them."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as exc:
        raise PdfReadError(f"cannot read the file: {exc.strerror or exc}") from exc
    if size == 0:
        raise PdfReadError("empty file (0 bytes)")
    # The PDF spec lets the header start anywhere in the first 1024 bytes.
    if b"%PDF-" not in head:
        kind = next((what for magic, what in _MAGIC.items() if head.lstrip().startswith(magic)), None)
        preview = repr(head[:16].decode("utf-8", errors="replace"))
        raise PdfReadError(f"not a PDF (starts with {preview}{': ' + kind if kind else ''})")


def _page_texts(path: Path, name: str, log: logging.Logger) -> list[str]:
    try:
        reader = pypdf.PdfReader(path, strict=False)
        encrypted = reader.is_encrypted
    except Exception as exc:  # pypdf raises many kinds on broken files, not only its own
        raise PdfReadError(f"damaged PDF: {_describe(exc)}") from exc
    if encrypted:
        _decrypt(reader)
    try:
        n_pages = len(reader.pages)
    except Exception as exc:
        raise PdfReadError(f"damaged PDF: {_describe(exc)}") from exc
    if n_pages == 0:
        raise PdfReadError("damaged PDF: it has no pages")

    texts: list[str] = []
    errors: list[str] = []
    for number, page in enumerate(reader.pages, 1):
        try:
            raw = page.extract_text() or ""
        except Exception as exc:
            # One broken page should not cost the document its other pages.
            errors.append(_describe(exc))
            log.warning("%s: page %d: text could not be extracted (%s); page left out", name, number, errors[-1])
            raw = ""
        texts.append(clean_page_text(raw))
    if len(errors) == n_pages:
        raise PdfReadError(f"damaged PDF: no page could be read ({errors[0]})")
    if not any(texts):
        raise PdfReadError(NO_TEXT_REASON)
    return texts


def _decrypt(reader: pypdf.PdfReader) -> None:
    # Many PDFs are encrypted only to restrict printing or copying: their user password
    # is empty, and they open without one.
    try:
        result = reader.decrypt("")
    except pypdf.errors.DependencyError as exc:
        raise PdfReadError(f"encrypted, and decrypting it needs a package that is not installed: {exc}") from exc
    except Exception as exc:
        raise PdfReadError(f"encrypted, and could not be decrypted: {_describe(exc)}") from exc
    if result == pypdf.PasswordType.NOT_DECRYPTED:
        raise PdfReadError("encrypted (needs a password)")


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
    lines += [f"  - {s.source}: {s.reason}" for s in skipped]
    lines.append(
        "Replace or repair these files (scanned PDFs need OCR first, password-protected "
        "ones need the password removed), or set pdf_dir to another folder."
    )
    return "\n".join(lines)
