"""A persisted LlamaIndex VectorStoreIndex over the PDFs' chunks, for searching with a model.

The PDFs are read and chunked by the pipeline's own code (``tasks.documents``,
``tasks.chunking``), so the index holds the same chunks the model was trained and
evaluated on; each node keeps its file and page. The index is persisted under
``<root>/<key>/``, where the key hashes the model (its files, without the card), the
PDFs (their content hashes) and the reading and chunking settings: a changed model or
document set builds a new index, an unchanged one is loaded. It is written to a hidden
folder and renamed into place, so a crash never leaves half an index to load.

Example::

    >>> index, built, where = open_index(Path("data/pdf"), "outputs/finetune_bce/current",
    ...                                  Path("outputs/finetune_bce/query_index"), Settings())
    >>> for hit in search(index, "尤金袋鼠分布在哪里？", top_k=3):
    ...     print(hit.score, hit.file, hit.page)
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.fileio import fsync_dir, fsync_tree, sha256_file, stable_hash
from tasks.settings import Settings

logger = logging.getLogger(__name__)

_META_KEYS = ["file", "page"]


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    file: str
    page: int
    chunk_id: str
    text: str


def index_key(model_fingerprint: str, pdf_hashes: list[tuple[str, str]], settings: Settings) -> str:
    """What the index depends on, hashed: model, PDFs (path, sha256) and chunking settings."""
    reading = [getattr(settings, name, None) for name in ("garbage_pdfs", "garbage_threshold")]
    return stable_hash(["query-index-v1", model_fingerprint, sorted(pdf_hashes),
                        settings.chunk_size, settings.chunk_overlap, settings.chunk_by_section, reading])[:16]


def open_index(pdf_dir: Path, model_path: str, root: Path, settings: Settings) -> tuple[Any, bool, Path]:
    """(index, whether it was built now, its folder): load the persisted index or build it."""
    from llama_index.core import StorageContext, load_index_from_storage

    from tasks.documents import find_pdfs
    from tasks.stages import model_fingerprint
    from tasks.st_embedding import SentenceTransformerEmbedding

    pdf_dir = Path(pdf_dir)
    pdfs = [(p.relative_to(pdf_dir).as_posix(), sha256_file(p)) for p in find_pdfs(pdf_dir)]
    key = index_key(model_fingerprint(Path(model_path)), pdfs, settings)
    where = Path(root) / key
    embed = SentenceTransformerEmbedding(model_path, trust_remote_code=settings.trust_remote_code,
                                         embed_batch_size=settings.eval_batch_size)
    if (where / "docstore.json").is_file():
        storage = StorageContext.from_defaults(persist_dir=str(where))
        return load_index_from_storage(storage, embed_model=embed), False, where
    index = build_index(pdf_dir, embed, settings)
    _persist_atomic(index, where)
    return index, True, where


def build_index(pdf_dir: Path, embed_model: Any, settings: Settings) -> Any:
    """A VectorStoreIndex of every chunk of every readable PDF under ``pdf_dir``."""
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    from tasks.chunking import chunk_documents
    from tasks.documents import load_documents

    reading = {name: getattr(settings, name) for name in ("garbage_pdfs", "garbage_threshold")
               if hasattr(settings, name)}
    docs = load_documents(Path(pdf_dir), logger=logger, **reading).documents
    chunks = chunk_documents(docs, settings.chunk_size, settings.chunk_overlap, settings.chunk_by_section)
    nodes = [
        TextNode(id_=c.chunk_id, text=c.text, metadata={"file": c.source, "page": c.page},
                 # Embed the text alone, as in training and evaluation; file and page are provenance.
                 excluded_embed_metadata_keys=_META_KEYS, excluded_llm_metadata_keys=_META_KEYS)
        for c in chunks
    ]
    logger.info("embedding %d chunks of %d documents", len(nodes), len(docs))
    return VectorStoreIndex(nodes, embed_model=embed_model)


def search(index: Any, question: str, top_k: int = 5) -> list[Hit]:
    """The ``top_k`` chunks closest to ``question``, best first."""
    retriever = index.as_retriever(similarity_top_k=top_k)
    hits = []
    for rank, result in enumerate(retriever.retrieve(question), 1):
        meta = result.node.metadata
        hits.append(Hit(rank=rank, score=float(result.score or 0.0), file=str(meta.get("file", "?")),
                        page=int(meta.get("page", 0)), chunk_id=result.node.node_id,
                        text=result.node.get_content()))
    return hits


def _persist_atomic(index: Any, where: Path) -> None:
    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = where.parent / f".{where.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        index.storage_context.persist(persist_dir=str(tmp))
        fsync_tree(tmp)
        if where.exists():  # another process built the same index meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return
        os.rename(tmp, where)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(where.parent)
