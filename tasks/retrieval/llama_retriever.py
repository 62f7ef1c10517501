"""The shipped retriever as LlamaIndex components, for a RAG application.

:class:`FirstStageRetriever` is a LlamaIndex ``BaseRetriever`` over a
:class:`~tasks.retrieval.index.Searcher`'s first stage (BM25, dense or fused);
:class:`CrossEncoderRerank` is a node postprocessor that re-scores nodes with the run's
cross-encoder; :class:`ShippedRetriever` puts the two together the way the run measured
them: the first stage's top ``rerank_k``, reranked, then the first stage's order below.
``flows.query.shipped_retriever`` builds one from a run's output folder.

Why not LlamaIndex's ``SentenceTransformerRerank``: it reads at most 512 tokens whatever the
model was trained with, and its sort treats a score of exactly 0 as missing, so it would not
rank as the evaluation did.

Example::

    from llama_index.core.query_engine import RetrieverQueryEngine
    from flows.query import shipped_retriever

    retriever = shipped_retriever("outputs/finetune_bce", "data/pdf", top_k=5)
    nodes = retriever.retrieve("尤金袋鼠分布在哪里？")
    engine = RetrieverQueryEngine.from_args(retriever, llm=my_local_llm)
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from tasks.retrieval.index import Searcher
from tasks.retrieval.metrics import top_k
from tasks.retrieval.rerank import CrossEncoderReranker


class FirstStageRetriever(BaseRetriever):
    """The ``top_k`` nodes of a :class:`Searcher`'s first stage, with its scores."""

    def __init__(self, searcher: Searcher, top_k: int = 5):
        super().__init__()
        self.searcher = searcher.first_stage()
        self.top_k = top_k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.searcher.search(query_bundle.query_str, self.top_k)
        by_id = {n.node_id: n for n in self.searcher.nodes}
        return [NodeWithScore(node=by_id[h.chunk_id], score=h.score) for h in hits]


class CrossEncoderRerank(BaseNodePostprocessor):
    """Re-score nodes with a cross-encoder and keep the best ``top_n`` (ties: the lower node id)."""

    top_n: int = Field(default=5, description="Nodes to keep, best first.")
    _reranker: CrossEncoderReranker = PrivateAttr()

    def __init__(self, reranker: CrossEncoderReranker, top_n: int = 5, **kwargs: Any):
        super().__init__(top_n=top_n, **kwargs)
        self._reranker = reranker

    @classmethod
    def class_name(cls) -> str:
        return "CrossEncoderRerank"

    def _postprocess_nodes(self, nodes: list[NodeWithScore],
                           query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("CrossEncoderRerank needs the query (a QueryBundle)")
        scores = self._reranker.predict([(query_bundle.query_str, n.node.get_content()) for n in nodes])
        order = top_k(scores, self.top_n, [n.node.node_id for n in nodes])
        return [NodeWithScore(node=nodes[i].node, score=float(scores[i])) for i in order]


class ShippedRetriever(BaseRetriever):
    """The first stage's top ``rerank_k`` reranked, then the rest of its ``top_k`` in its own
    order: what :func:`tasks.retrieval.retriever.ranking` ranks. Without a reranker, the
    first stage alone."""

    def __init__(self, searcher: Searcher, top_k: int = 5):
        super().__init__()
        self.rerank_k = searcher.retriever.rerank_k or 0
        self.top_k = top_k
        self.first = FirstStageRetriever(searcher, max(top_k, self.rerank_k))
        self.rerank = CrossEncoderRerank(searcher.reranker, top_n=self.rerank_k) if self.rerank_k else None

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        nodes = self.first.retrieve(query_bundle)
        if self.rerank is None:
            return nodes[:self.top_k]
        head = self.rerank.postprocess_nodes(nodes[:self.rerank_k], query_bundle)
        return (head + nodes[self.rerank_k:])[:self.top_k]
