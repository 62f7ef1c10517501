"""A persisted search index over the PDFs' chunks, for searching with a model.

The PDFs are read and chunked by the pipeline's own code (``tasks.documents.reading``,
``tasks.chunks.chunking``), so the index holds the same chunks the model was trained and
evaluated on; each node keeps its file and page. The index is persisted under
``<root>/<key>/``, where the key hashes the model (its files, without the card), the
PDFs (their content hashes) and the reading and chunking settings: a changed model or
document set builds a new index, an unchanged one is loaded. It is written to a hidden
folder and renamed into place, so a crash never leaves half an index to load.

The folder holds a LlamaIndex ``VectorStoreIndex`` (for a RAG application that opens it)
and, beside it, what search reads itself: the chunk vectors (``vectors.npy``, rows in
``chunk_ids.json`` order) and a BM25 index of the same chunks per tokenizer
(``bm25-<tokenizer>/``). Search never reaches into LlamaIndex's stores or embedding
wrapper, whose private layout changes between releases.

:class:`Searcher` ranks with the retriever a run shipped (``tasks.retrieval``): the same
:func:`~tasks.retrieval.retriever.ranking` over the same scores as the evaluation, and
the same tie rule (:func:`~tasks.retrieval.metrics.top_k`).

Example::

    >>> import tempfile
    >>> from tasks.models.base import prepare_base_model
    >>> from tasks.retrieval.retriever import RetrieverSpec
    >>> model = prepare_base_model(Settings(base_model="bundled:multilingual-e5-small")).path  # or a run's current
    >>> root = Path(tempfile.mkdtemp())  # the query command uses outputs/finetune_bce/query_index
    >>> index, built, where = open_index(Path("data/pdf"), model, root, Settings())
    >>> built, where.parent == root
    (True, True)
    >>> searcher = Searcher(index, RetrieverSpec.hybrid(0.4))
    >>> for hit in searcher.search("尤金袋鼠分布在哪里？", top_k=1):
    ...     print(hit.rank, hit.file, hit.page)
    1 sample_01.pdf 1
    >>> open_index(Path("data/pdf"), model, root, Settings())[1]  # unchanged model and PDFs: loaded, not built
    False
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.core.fileio import replace_folder, sha256_file, stable_hash
from tasks.core.settings import Settings
from tasks.retrieval.lexical import TOKENIZERS, BM25Index

if TYPE_CHECKING:
    from tasks.retrieval.rerank import CrossEncoderReranker
    from tasks.retrieval.retriever import RetrieverSpec

logger = logging.getLogger(__name__)

_META_KEYS = ["file", "page", "pages"]
# The settings the index's chunks depend on: how the PDFs are read and how pages are cut.
INDEX_SETTINGS = ("garbage_pdfs", "garbage_threshold", "chunk_size", "chunk_overlap", "chunk_by_section")
_VECTORS, _IDS = "vectors.npy", "chunk_ids.json"


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    file: str
    page: int
    chunk_id: str
    text: str
    pages: str = ""  # "3" or "3–4": a chunk may cross a page break


@dataclass
class SearchIndex:
    """The chunks of a PDF folder embedded by one model, as persisted in :attr:`folder`."""

    index: Any  # LlamaIndex's VectorStoreIndex of the chunks, for RAG applications
    folder: Path
    model: Any  # the SentenceTransformer that embedded the chunks: it embeds the questions
    chunk_ids: list[str]
    vectors: np.ndarray  # one normalised row per chunk, in chunk_ids order
    batch_size: int = 32

    @property
    def nodes(self) -> dict[str, Any]:
        """``{chunk id: LlamaIndex node}`` (text, file and page)."""
        return self.index.docstore.docs

    def bm25(self, tokenizer: str) -> BM25Index | None:
        """The BM25 index of the same chunks persisted for ``tokenizer``, if there is one."""
        where = self.folder / f"bm25-{tokenizer}"
        return BM25Index.load(where) if (where / "chunk_ids.json").is_file() else None


def index_key(model_fingerprint: str, pdf_hashes: list[tuple[str, str]], settings: Settings) -> str:
    """What the index depends on, hashed: model, PDFs (path, sha256), the reading and
    chunking settings (:data:`INDEX_SETTINGS`) and the code that reads, chunks and embeds
    (an upgrade that chunks otherwise builds the index again)."""
    from tasks.core.caching import code_fingerprint

    return stable_hash(["query-index", code_fingerprint(__name__), model_fingerprint, sorted(pdf_hashes),
                        [getattr(settings, name) for name in INDEX_SETTINGS]])[:16]


def open_index(pdf_dir: Path, model_path: str, root: Path, settings: Settings) -> tuple[SearchIndex, bool, Path]:
    """(index, whether it was built now, its folder): load the persisted index or build it."""
    from llama_index.core import StorageContext, load_index_from_storage

    from tasks.core.caching import model_fingerprint
    from tasks.documents.reading import find_pdfs
    from tasks.models.st_embedding import SentenceTransformerEmbedding

    pdf_dir = Path(pdf_dir)
    pdfs = [(p.relative_to(pdf_dir).as_posix(), sha256_file(p)) for p in find_pdfs(pdf_dir)]
    where = Path(root) / index_key(model_fingerprint(Path(model_path)), pdfs, settings)
    embed = SentenceTransformerEmbedding(model_path, trust_remote_code=settings.trust_remote_code,
                                         embed_batch_size=settings.eval_batch_size)
    if (where / "docstore.json").is_file() and (where / _VECTORS).is_file():
        index = load_index_from_storage(StorageContext.from_defaults(persist_dir=str(where)), embed_model=embed)
        ids = json.loads((where / _IDS).read_text(encoding="utf-8"))
        return SearchIndex(index, where, embed.model, ids, np.load(where / _VECTORS), settings.eval_batch_size), \
            False, where
    index, ids, vectors = build_index(pdf_dir, embed, settings)
    _persist_atomic(index, ids, vectors, where)
    return SearchIndex(index, where, embed.model, ids, vectors, settings.eval_batch_size), True, where


def build_index(pdf_dir: Path, embed_model: Any, settings: Settings) -> tuple[Any, list[str], np.ndarray]:
    """(VectorStoreIndex, chunk ids, their vectors) of every chunk of every readable PDF
    under ``pdf_dir``. The chunks are embedded here, as the evaluation embeds them (the
    model's document prompt, normalised), and handed to LlamaIndex with their vectors."""
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    from tasks.chunks.chunking import chunk_documents
    from tasks.documents.reading import load_documents

    docs = load_documents(Path(pdf_dir), logger=logger, garbage_pdfs=settings.garbage_pdfs,
                          garbage_threshold=settings.garbage_threshold).documents
    chunks = chunk_documents(docs, settings.chunk_size, settings.chunk_overlap, settings.chunk_by_section)
    logger.info("embedding %d chunks of %d documents", len(chunks), len(docs))
    vectors = np.asarray(embed_model.model.encode_document(
        [c.text for c in chunks], batch_size=embed_model.embed_batch_size, normalize_embeddings=True,
        convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)
    nodes = [
        TextNode(id_=c.chunk_id, text=c.text, metadata={"file": c.source, "page": c.page, "pages": c.pages},
                 embedding=v.tolist(),
                 # Embed the text alone, as in training and evaluation; file and page are provenance.
                 excluded_embed_metadata_keys=_META_KEYS, excluded_llm_metadata_keys=_META_KEYS)
        for c, v in zip(chunks, vectors)
    ]
    return VectorStoreIndex(nodes, embed_model=embed_model), [c.chunk_id for c in chunks], vectors


class Searcher:
    """Search the chunks of an index with one retriever (:class:`RetrieverSpec`): BM25 (over
    each chunk with its questions, ``expansion``, for an expanded retriever), the dense model,
    or the two fused, and a reranker on top, exactly as the evaluation ranked them.

    Everything is loaded once — the chunks, their vectors, the BM25 index — so many
    questions cost one query embedding each (or one batch for :meth:`search_many`).
    """

    def __init__(self, index: SearchIndex, retriever: RetrieverSpec | None = None, bm25: BM25Index | None = None,
                 reranker: CrossEncoderReranker | None = None, expansion: dict[str, list[str]] | None = None):
        from tasks.retrieval.retriever import RetrieverSpec

        self.index = index
        self.retriever = retriever or RetrieverSpec("dense")
        if self.retriever.rerank_k and reranker is None:
            raise ValueError(f"{self.retriever.label} needs a reranker (a CrossEncoderReranker)")
        self.reranker = reranker
        self.chunk_ids = list(index.chunk_ids)
        nodes = index.nodes
        self.nodes = [nodes[c] for c in self.chunk_ids]
        self.texts = [n.get_content() for n in self.nodes]
        self.bm25 = None
        if self.retriever.uses_bm25 and self.retriever.expanded and bm25 is None:
            from tasks.retrieval.expansion import expanded_index

            if expansion is None:
                raise ValueError(f"{self.retriever.label} needs the questions written about the chunks (an expansion)")
            # Built here, not persisted: it is cheap, and which questions it holds is the run's, not the index's.
            bm25 = expanded_index(self.chunk_ids, self.texts, expansion, self.retriever.tokenizer)
        if self.retriever.uses_bm25:
            self.bm25 = (bm25 or index.bm25(self.retriever.tokenizer)
                         or BM25Index.build(self.chunk_ids, self.texts, self.retriever.tokenizer))
            if self.bm25.chunk_ids != self.chunk_ids:
                raise ValueError(f"the BM25 index in {index.folder} lists other chunks than its vectors: "
                                 "delete the folder and search again to rebuild it")

    def first_stage(self) -> "Searcher":
        """This searcher without its reranker, sharing what it loaded (chunks, vectors, BM25)."""
        return Searcher(self.index, self.retriever.first_stage, self.bm25)

    def _dense(self, questions: list[str]) -> np.ndarray:
        """Cosine of each question to every chunk, as the evaluation computes it: the model's
        query prompt and similarity over the chunks' vectors."""
        import torch

        model = self.index.model
        q = model.encode_query(questions, batch_size=self.index.batch_size, convert_to_tensor=True,
                               show_progress_bar=False)
        return model.similarity(q, torch.from_numpy(self.index.vectors).to(q.device)).cpu().numpy()

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
        from tasks.retrieval.metrics import top_k as best

        if not questions:
            return []
        return [[self._hit(rank, i, float(row[i])) for rank, i in enumerate(best(row, top_k, self.chunk_ids), 1)]
                for row in self.scores(list(questions))]

    def search(self, question: str, top_k: int = 5) -> list[Hit]:
        return self.search_many([question], top_k)[0]

    def _hit(self, rank: int, i: int, score: float) -> Hit:
        node = self.nodes[i]
        meta = node.metadata
        page = int(meta.get("page", 0))
        return Hit(rank=rank, score=score, file=str(meta.get("file", "?")), page=page,
                   chunk_id=node.node_id, text=node.get_content(), pages=str(meta.get("pages", page)))


def _persist_atomic(index: Any, chunk_ids: list[str], vectors: np.ndarray, where: Path) -> None:
    # Another process may build the same index meanwhile: the first one in is kept.
    with replace_folder(where, if_exists="keep") as tmp:
        index.storage_context.persist(persist_dir=str(tmp))
        np.save(tmp / _VECTORS, vectors)
        (tmp / _IDS).write_text(json.dumps(chunk_ids, ensure_ascii=False), encoding="utf-8")
        # The keyword index of the same chunks, for BM25 and hybrid search (one per tokenizer).
        nodes = index.docstore.docs
        texts = [nodes[c].get_content() for c in chunk_ids]
        for tokenizer in TOKENIZERS:
            BM25Index.build(chunk_ids, texts, tokenizer).save(tmp / f"bm25-{tokenizer}")
