"""A persisted LlamaIndex VectorStoreIndex over the PDFs' chunks, for searching with a model.

The PDFs are read and chunked by the pipeline's own code (``tasks.documents.reading``,
``tasks.chunks.chunking``), so the index holds the same chunks the model was trained and
evaluated on; each node keeps its file and page. The index is persisted under
``<root>/<key>/``, where the key hashes the model (its files, without the card), the
PDFs (their content hashes) and the reading and chunking settings: a changed model or
document set builds a new index, an unchanged one is loaded. A BM25 index of the same
chunks is persisted beside the vectors (``bm25-<tokenizer>/``), so BM25 and hybrid
search load as fast as dense search. It is written to a hidden folder and renamed into
place, so a crash never leaves half an index to load.

:class:`Searcher` ranks with the retriever a run shipped (``tasks.retrieval``): the same
:func:`~tasks.retrieval.retriever.combine` over the same scores as the evaluation.

Example::

    >>> import tempfile
    >>> from tasks.models.base import prepare_base_model
    >>> from tasks.retrieval.retriever import RetrieverSpec
    >>> model = prepare_base_model(Settings(base_model="bundled:multilingual-e5-small")).path  # or a run's current
    >>> root = Path(tempfile.mkdtemp())  # the query command uses outputs/finetune_bce/query_index
    >>> index, built, where = open_index(Path("data/pdf"), model, root, Settings())
    >>> built, where.parent == root
    (True, True)
    >>> searcher = Searcher(index, RetrieverSpec.hybrid(0.4), load_bm25(index, RetrieverSpec.hybrid(0.4)))
    >>> for hit in searcher.search("尤金袋鼠分布在哪里？", top_k=1):
    ...     print(hit.rank, hit.file, hit.page)
    1 sample_01.pdf 1
    >>> open_index(Path("data/pdf"), model, root, Settings())[1]  # unchanged model and PDFs: loaded, not built
    False
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.core.fileio import replace_folder, sha256_file, stable_hash
from tasks.retrieval.lexical import TOKENIZERS, BM25Index
from tasks.core.settings import Settings

if TYPE_CHECKING:
    from tasks.retrieval.rerank import CrossEncoderReranker
    from tasks.retrieval.retriever import RetrieverSpec

logger = logging.getLogger(__name__)

_META_KEYS = ["file", "page", "pages"]


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    file: str
    page: int
    chunk_id: str
    text: str
    pages: str = ""  # "3" or "3–4": a chunk may cross a page break


def index_key(model_fingerprint: str, pdf_hashes: list[tuple[str, str]], settings: Settings) -> str:
    """What the index depends on, hashed: model, PDFs (path, sha256) and chunking settings."""
    reading = [getattr(settings, name, None) for name in ("garbage_pdfs", "garbage_threshold")]
    return stable_hash(["query-index-v3", model_fingerprint, sorted(pdf_hashes),
                        settings.chunk_size, settings.chunk_overlap, settings.chunk_by_section, reading])[:16]


def open_index(pdf_dir: Path, model_path: str, root: Path, settings: Settings) -> tuple[Any, bool, Path]:
    """(index, whether it was built now, its folder): load the persisted index or build it."""
    from llama_index.core import StorageContext, load_index_from_storage

    from tasks.documents.reading import find_pdfs
    from tasks.core.caching import model_fingerprint
    from tasks.models.st_embedding import SentenceTransformerEmbedding

    pdf_dir = Path(pdf_dir)
    pdfs = [(p.relative_to(pdf_dir).as_posix(), sha256_file(p)) for p in find_pdfs(pdf_dir)]
    key = index_key(model_fingerprint(Path(model_path)), pdfs, settings)
    where = Path(root) / key
    embed = SentenceTransformerEmbedding(model_path, trust_remote_code=settings.trust_remote_code,
                                         embed_batch_size=settings.eval_batch_size)
    if (where / "docstore.json").is_file():
        storage = StorageContext.from_defaults(persist_dir=str(where))
        index, built = load_index_from_storage(storage, embed_model=embed), False
    else:
        index, built = build_index(pdf_dir, embed, settings), True
        _persist_atomic(index, where)
    index.persist_dir = str(where)  # where load_bm25 finds the keyword index beside the vectors
    return index, built, where


def build_index(pdf_dir: Path, embed_model: Any, settings: Settings) -> Any:
    """A VectorStoreIndex of every chunk of every readable PDF under ``pdf_dir``."""
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    from tasks.chunks.chunking import chunk_documents
    from tasks.documents.reading import load_documents

    reading = {name: getattr(settings, name) for name in ("garbage_pdfs", "garbage_threshold")
               if hasattr(settings, name)}
    docs = load_documents(Path(pdf_dir), logger=logger, **reading).documents
    chunks = chunk_documents(docs, settings.chunk_size, settings.chunk_overlap, settings.chunk_by_section)
    nodes = [
        TextNode(id_=c.chunk_id, text=c.text, metadata={"file": c.source, "page": c.page, "pages": c.pages},
                 # Embed the text alone, as in training and evaluation; file and page are provenance.
                 excluded_embed_metadata_keys=_META_KEYS, excluded_llm_metadata_keys=_META_KEYS)
        for c in chunks
    ]
    logger.info("embedding %d chunks of %d documents", len(nodes), len(docs))
    return VectorStoreIndex(nodes, embed_model=embed_model)


class Searcher:
    """Search the chunks of an index with one retriever (:class:`RetrieverSpec`): BM25, the
    dense model, or the two fused, exactly as the evaluation ranked them.

    Everything is loaded once — the chunks, their stored vectors, the BM25 index — so many
    questions cost one query embedding each (or one batch for :meth:`search_many`).
    """

    def __init__(self, index: Any, retriever: RetrieverSpec | None = None, bm25: BM25Index | None = None,
                 reranker: CrossEncoderReranker | None = None):
        from tasks.retrieval.retriever import RetrieverSpec

        self.index = index
        self.retriever = retriever or RetrieverSpec("dense")
        if self.retriever.rerank_k and reranker is None:
            raise ValueError(f"{self.retriever.label} needs a reranker (a CrossEncoderReranker)")
        self.reranker = reranker
        nodes = index.docstore.docs
        self.bm25 = bm25 or (BM25Index.build(list(nodes), [n.get_content() for n in nodes.values()],
                                             self.retriever.tokenizer) if self.retriever.uses_bm25 else None)
        self.chunk_ids = self.bm25.chunk_ids if self.bm25 is not None else list(nodes)
        self.nodes = [nodes[c] for c in self.chunk_ids]
        self.texts = [n.get_content() for n in self.nodes]
        self._vectors = None

    def first_stage(self) -> "Searcher":
        """This searcher without its reranker, sharing what it loaded (chunks, vectors, BM25)."""
        plain = Searcher(self.index, self.retriever.first_stage, self.bm25)
        plain._vectors = self._vectors
        return plain

    def _dense(self, questions: list[str]) -> np.ndarray:
        """Cosine of each question to every chunk, as the evaluation computes it: the model's
        query prompt and similarity over the vectors stored in the index."""
        import torch

        if self._vectors is None:
            stored = self.index.vector_store.data.embedding_dict
            self._vectors = torch.tensor([stored[c] for c in self.chunk_ids], dtype=torch.float32)
        model = self.index._embed_model._model
        q = model.encode_query(questions, batch_size=self.index._embed_model.embed_batch_size, convert_to_tensor=True,
                               show_progress_bar=False)
        return model.similarity(q, self._vectors.to(q.device)).cpu().numpy()

    def scores(self, questions: list[str]) -> np.ndarray:
        """The retriever's score of every chunk (columns: :attr:`chunk_ids`) for each question;
        with a reranker, the cross-encoder's for the first stage's top k."""
        from tasks.retrieval.retriever import ranking

        dense = self._dense(questions) if self.retriever.uses_dense else None
        lexical = self.bm25.score_matrix(questions) if self.retriever.uses_bm25 else None
        pairs = self.reranker.scorer(questions, self.texts) if self.retriever.rerank_k else None
        return ranking(self.retriever, dense, lexical, pairs, self.chunk_ids)

    def search_many(self, questions: list[str], top_k: int = 5) -> list[list[Hit]]:
        """The ``top_k`` chunks of each question, best first (ties: the lower chunk id first)."""
        if not questions:
            return []
        results = []
        for row in self.scores(list(questions)):
            order = sorted(range(len(row)), key=lambda i: (-float(row[i]), self.chunk_ids[i]))[:top_k]
            results.append([self._hit(rank, i, float(row[i])) for rank, i in enumerate(order, 1)])
        return results

    def search(self, question: str, top_k: int = 5) -> list[Hit]:
        return self.search_many([question], top_k)[0]

    def _hit(self, rank: int, i: int, score: float) -> Hit:
        node = self.nodes[i]
        meta = node.metadata
        page = int(meta.get("page", 0))
        return Hit(rank=rank, score=score, file=str(meta.get("file", "?")), page=page,
                   chunk_id=node.node_id, text=node.get_content(), pages=str(meta.get("pages", page)))


def search(index: Any, question: str, top_k: int = 5, retriever: RetrieverSpec | None = None) -> list[Hit]:
    """The ``top_k`` chunks for ``question``, best first (dense unless ``retriever`` says otherwise)."""
    return Searcher(index, retriever, load_bm25(index, retriever)).search(question, top_k)


def load_bm25(index: Any, retriever: RetrieverSpec | None) -> BM25Index | None:
    """The BM25 index persisted beside ``index`` for ``retriever``'s tokenizer, if there is one."""
    folder = getattr(index, "persist_dir", None)
    if retriever is None or not retriever.uses_bm25 or folder is None:
        return None
    where = Path(folder) / f"bm25-{retriever.tokenizer}"
    return BM25Index.load(where) if (where / "chunk_ids.json").is_file() else None


def _persist_atomic(index: Any, where: Path) -> None:
    # Another process may build the same index meanwhile: the first one in is kept.
    with replace_folder(where, if_exists="keep") as tmp:
        index.storage_context.persist(persist_dir=str(tmp))
        # The keyword index of the same chunks, for BM25 and hybrid search (one per tokenizer).
        nodes = index.docstore.docs
        for tokenizer in TOKENIZERS:
            BM25Index.build(list(nodes), [n.get_content() for n in nodes.values()], tokenizer).save(
                tmp / f"bm25-{tokenizer}")
