"""Retrieval metrics of an embedding model on a question/chunk dataset.

Every question is embedded with the model's ``query`` prompt, every chunk with its
``document`` prompt, and the chunks are ranked by the model's similarity (cosine for
all models here) with
:class:`~sentence_transformers.sentence_transformer.evaluation.InformationRetrievalEvaluator`.
The returned keys carry the similarity name but not the evaluation name, so the
metrics of several models or datasets can be compared key by key.

Example::

    >>> from tasks.core.settings import Settings
    >>> from tasks.models.base import prepare_base_model
    >>> model = prepare_base_model(Settings(base_model="bundled:multilingual-e5-small")).path
    >>> dataset = QADataset(queries={"q1": "袋鼠住在哪里？", "q2": "泡泡战士是谁开发的？"},
    ...                     corpus={"c1": "尤金袋鼠分布在澳洲南部。", "c2": "泡泡战士由韩国Nexon开发。"},
    ...                     relevant_docs={"q1": ["c1"], "q2": ["c2"]})
    >>> metrics = evaluate_model(model, dataset)
    >>> sorted(metrics)[:3]
    ['cosine_accuracy@1', 'cosine_accuracy@10', 'cosine_accuracy@3']
    >>> metrics["cosine_ndcg@10"]
    1.0
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.core.qa_dataset import QADataset
from tasks.retrieval.retriever import RetrieverSpec

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)


def evaluate_model(
    model_path: str,
    dataset: Path | QADataset,
    batch_size: int = 32,
    name: str = "val",
    *,
    trust_remote_code: bool = False,
) -> dict[str, float]:
    """Evaluate ``model_path`` on ``dataset`` and return ``{metric: value}``.

    Args:
        model_path: A sentence-transformers model folder or an id it can load.
        dataset: A :class:`QADataset` or the path of its JSON file.
        batch_size: Texts per encoding batch.
        name: Name of the evaluation in logs; not part of the returned keys.
        trust_remote_code: Let the model folder run its own code (see Settings).

    Returns:
        Keys like ``cosine_accuracy@1``, ``cosine_recall@10``, ``cosine_mrr@10``,
        ``cosine_ndcg@10``, ``cosine_map@100``; values are floats in [0, 1].
        Nothing is written to disk.
    """
    from sentence_transformers import SentenceTransformer

    if not isinstance(dataset, QADataset):
        dataset = QADataset.load(Path(dataset))
    model = SentenceTransformer(model_path, trust_remote_code=trust_remote_code)
    return evaluate_loaded_model(model, dataset, batch_size=batch_size, name=name)


def evaluate_loaded_model(
    model: SentenceTransformer, dataset: QADataset, batch_size: int = 32, name: str = "val"
) -> dict[str, float]:
    """Like :func:`evaluate_model` for a model already in memory (e.g. right after training)."""
    from tasks.retrieval.metrics import model_evaluator

    evaluator = model_evaluator(model, dataset, batch_size, name)
    logger.info(
        "evaluating on %d questions against %d chunks (%s)", len(evaluator.queries), len(evaluator.corpus), name
    )
    # output_path=None: the evaluator writes no CSV or predictions; this function is pure.
    raw = evaluator(model, output_path=None)
    prefix = f"{name}_" if name else ""
    return {key.removeprefix(prefix): float(value) for key, value in raw.items()}


def evaluate_retrievers(
    model_path: str,
    dataset: Path | QADataset,
    specs: list[RetrieverSpec],
    batch_size: int = 32,
    name: str = "val",
    *,
    trust_remote_code: bool = False,
    score_cache: Path | None = None,
    reranker_path: Path | None = None,
    expansion: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of every retriever in ``specs`` built from ``model_path`` and BM25 over the
    dataset's corpus (and, for reranked specs, the cross-encoder at ``reranker_path``):
    ``{spec.label: metrics}``.

    The model embeds the questions and chunks once (or its scores come from ``score_cache``,
    a :class:`~tasks.retrieval.dense_cache.DenseScoreCache` folder, when the same weights
    scored the same texts before); BM25 (with the specs' tokenizer) indexes the same chunks;
    every spec is a ranking of those two score matrices
    (:func:`tasks.retrieval.retriever.ranking`). The ``dense`` entry carries the
    ``cosine_`` keys of :func:`evaluate_model`, with the same values. Reranked specs are
    left out without a reranker, expanded ones without ``expansion`` (the chunks' questions,
    :func:`tasks.retrieval.expansion.save_expansion`'s file; no question of ``dataset`` is
    scored against its own chunk expanded by it, :func:`~tasks.retrieval.expansion.expanded_scores`).
    """
    from tasks.retrieval.first_stage import first_stage_scores
    from tasks.retrieval.rerank import CrossEncoderReranker
    from tasks.retrieval.retriever import score_grid

    if not isinstance(dataset, QADataset):
        dataset = QADataset.load(Path(dataset))
    tokenizers = {s.tokenizer for s in specs}
    if len(tokenizers) != 1:
        raise ValueError(f"one BM25 tokenizer per evaluation, got {sorted(tokenizers)}")
    evaluator, dense, lexical = first_stage_scores(model_path, dataset, tokenizers.pop(), batch_size, name,
                                                   trust_remote_code=trust_remote_code, score_cache=score_cache)
    expanded = None
    if expansion is not None and any(s.expanded for s in specs):
        from tasks.retrieval.expansion import expanded_scores, load_expansion

        expanded = expanded_scores(evaluator.corpus_ids, evaluator.corpus, load_expansion(expansion),
                                   evaluator.queries, [evaluator.relevant_docs[q] for q in evaluator.queries_ids],
                                   specs[0].tokenizer)
    else:
        specs = [s for s in specs if not s.expanded]
    score_pairs = None
    if reranker_path is not None and any(s.rerank_k for s in specs):
        score_pairs = CrossEncoderReranker(reranker_path, batch_size, trust_remote_code=trust_remote_code).scorer(
            evaluator.queries, evaluator.corpus, show_progress_bar=True)
    else:
        specs = [s for s in specs if not s.rerank_k]
    logger.info("evaluating %d retrievers on %d questions against %d chunks (%s)",
                len(specs), len(evaluator.queries), len(evaluator.corpus), name)
    grid = score_grid(dataset, dense, lexical, specs, evaluator, score_pairs, expanded)
    if "dense" in grid:  # the cosine_ keys every earlier table and metrics.json used
        grid["dense"] = {k.replace("dense_", "cosine_", 1): v for k, v in grid["dense"].items()}
    return grid
