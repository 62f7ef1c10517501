"""Split pages into chunks with LlamaIndex's SentenceSplitter.

A chunk's id is derived from its document and its text, so the same PDF gives the
same ids on every run and the per-chunk generation cache lines up across runs.

Example::

    >>> page = Page(doc_id="d1", source="a.pdf", page=1, text="尤金袋鼠分布在澳洲南部。" * 40)
    >>> documents = [Document(doc_id="d1", source="a.pdf", pages=[page])]
    >>> chunks = chunk_documents(documents, chunk_size=128, chunk_overlap=16)
    >>> len(chunks), chunks[0].source, chunks[0].page
    (7, 'a.pdf', 1)
    >>> chunks[0].chunk_id == chunk_documents(documents, chunk_size=128, chunk_overlap=16)[0].chunk_id
    True
"""

from __future__ import annotations

from llama_index.core import Document as LIDocument
from llama_index.core.node_parser import SentenceSplitter

from tasks.chunks.sections import document_sections
from tasks.core.fileio import sha256_text
from tasks.core.records import Chunk, Document, Page

# Metadata stays out of the text the splitter measures and embeds: it is for
# provenance, and counting it would shrink every chunk.
_META_KEYS = ["doc_id", "source", "page", "heading"]


def chunk_id_for(doc_id: str, text: str, occurrence: int = 0) -> str:
    """Stable id of a chunk; ``occurrence`` separates identical texts in one document."""
    return sha256_text(f"{doc_id}\n{occurrence}\n{text}")[:32]


def chunk_documents(
    documents: list[Document], chunk_size: int, chunk_overlap: int, by_section: bool = False
) -> list[Chunk]:
    """Chunk every page of every document, in document and page order.

    With ``by_section``, each page is first cut at its headings (:mod:`tasks.chunks.sections`):
    no chunk runs across a heading, and each chunk starts with its section's heading on a
    line of its own.
    """
    splitter = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    pieces: list[tuple[Page, str | None, str]] = []
    for doc in documents:
        if by_section:
            pages = {p.page: p for p in doc.pages}
            pieces += [(pages[s.page], s.heading, s.text) for s in document_sections(doc)]
        else:
            pieces += [(page, None, page.text) for page in doc.pages]
    li_docs = [
        LIDocument(
            text=text,
            metadata={"doc_id": page.doc_id, "source": page.source, "page": page.page,
                      **({"heading": heading} if heading else {})},
            excluded_embed_metadata_keys=_META_KEYS,
            excluded_llm_metadata_keys=_META_KEYS,
        )
        for page, heading, text in pieces
    ]
    nodes = splitter.get_nodes_from_documents(li_docs)
    chunks: list[Chunk] = []
    seen: dict[tuple[str, str], int] = {}
    for node in nodes:
        text = node.get_content().strip()
        if not text:
            continue
        meta = node.metadata
        if meta.get("heading"):
            text = f"{meta['heading']}\n{text}"
        key = (meta["doc_id"], text)
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        chunks.append(
            Chunk(
                chunk_id=chunk_id_for(meta["doc_id"], text, occurrence),
                doc_id=meta["doc_id"],
                source=meta["source"],
                page=int(meta["page"]),
                text=text,
            )
        )
    return chunks
