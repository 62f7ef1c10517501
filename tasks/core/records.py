"""Plain records passed between stages (small, JSON-serialisable)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Page:
    """The cleaned text of one PDF page."""

    doc_id: str  # sha256 of the file's bytes: the same file under two names is one document
    source: str  # path of the PDF, relative to the PDF folder
    page: int  # 1-based page number
    text: str  # the running text, without page furniture
    # Tables (markdown) and footnotes, kept apart from the running text they would interrupt.
    asides: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SkippedFile:
    """A PDF that was not used, and why (a sentence a person can act on)."""

    source: str
    reason: str
    hint: str = ""  # what to do about it, e.g. "run OCR first"


@dataclass
class Document:
    """One unique PDF: its content hash, every path it was found under, and its pages."""

    doc_id: str
    source: str
    pages: list[Page]
    duplicates: list[str] = field(default_factory=list)
    n_pages_total: int = 0  # pages in the file, including the empty ones that were dropped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Document":
        return cls(
            doc_id=d["doc_id"],
            source=d["source"],
            pages=[Page(**p) for p in d["pages"]],
            duplicates=list(d.get("duplicates", [])),
            n_pages_total=d.get("n_pages_total", 0),
        )


# What a chunk holds: running text, a table (markdown), a footnote, or a reference list; the
# last three are chunked apart from the running text they would interrupt.
CHUNK_KINDS = ("text", "table", "footnote", "references")


@dataclass(frozen=True)
class Chunk:
    """A piece of a page that gets its own question(s). chunk_id is derived from content."""

    chunk_id: str
    doc_id: str
    source: str
    page: int  # the page it starts on
    text: str
    last_page: int | None = None  # the page it ends on (a chunk may cross pages); None: page
    kind: str = "text"  # one of CHUNK_KINDS

    @property
    def pages(self) -> str:
        """``"3"`` or ``"3–4"``, as reports and search results show it.

        >>> Chunk("c", "d", "a.pdf", 3, "…", 4).pages, Chunk("c", "d", "a.pdf", 3, "…").pages
        ('3–4', '3')
        """
        last = self.last_page or self.page
        return str(self.page) if last == self.page else f"{self.page}–{last}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
