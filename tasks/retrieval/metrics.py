"""Retrieval metrics of any ranking, with sentence-transformers' definitions.

:class:`~sentence_transformers.sentence_transformer.evaluation.InformationRetrievalEvaluator`
scores an embedding model. BM25 and the fused rankings are not models, so they are
scored here from a matrix of scores (one row per question, one column per chunk)
through the same evaluator's ``compute_metrics``: every row of every table — BM25,
dense, fused — counts accuracy, MRR, NDCG and MAP the same way, and ranks ties the
same way (higher score first, then the lower chunk id).

Example::

    >>> from tasks.core.qa_dataset import QADataset
    >>> ds = QADataset(queries={"q1": "猫在哪？"}, corpus={"c1": "狗", "c2": "猫在山上"},
    ...                relevant_docs={"q1": ["c2"]})
    >>> import numpy as np
    >>> m = metrics_from_scores(ds, np.array([[0.1, 0.7]]), prefix="bm25")
    >>> m["bm25_ndcg@10"], m["bm25_accuracy@1"]
    (1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.core.qa_dataset import QADataset

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

ACCURACY_AT_K = [1, 3, 5, 10]
PRECISION_RECALL_AT_K = [1, 3, 5, 10]
MRR_AT_K = [10]
NDCG_AT_K = [10]
MAP_AT_K = [100]
# The key under which every metrics dict of a ranking also keeps each question's NDCG@10
# (a list, not a metric: tables and metrics.json leave it out).
PER_QUESTION = "ndcg@10_by_question"


def metric_value(metrics: Mapping[str, float], key: str) -> float | None:
    """``key`` (e.g. ``ndcg@10``) from ``metrics``, whatever similarity prefix it carries.

    >>> metric_value({"cosine_ndcg@10": 0.7}, "ndcg@10")
    0.7
    """
    if key in metrics:
        return float(metrics[key])
    if f"cosine_{key}" in metrics:
        return float(metrics[f"cosine_{key}"])
    for name, value in metrics.items():
        if name.endswith(f"_{key}"):
            return float(value)
    return None


def top_k(row: np.ndarray, k: int, chunk_ids: Sequence[str]) -> list[int]:
    """The ``k`` best columns of ``row``, best first; ties go to the lower chunk id. The one
    ranking rule of the project: the metrics, the reranker's top k and ``flows.query`` all
    order chunks with it, so a tie cannot rank one way when measured and another when searched.

    >>> top_k(np.array([0.5, 0.9, 0.5]), 2, ["c", "a", "b"])
    [1, 2]
    """
    row = np.asarray(row)
    if k >= len(row):
        return sorted(range(len(row)), key=lambda i: (-float(row[i]), chunk_ids[i]))
    # argpartition first: a corpus of thousands of chunks needs only its top k sorted.
    cut = float(np.partition(row, len(row) - k)[len(row) - k])
    near = np.flatnonzero(row >= cut)
    return sorted(near.tolist(), key=lambda i: (-float(row[i]), chunk_ids[i]))[:k]


def ir_evaluator(
    dataset: QADataset, batch_size: int = 32, name: str = "", show_progress_bar: bool = True, **options: Any,
) -> InformationRetrievalEvaluator:
    """The evaluator every retrieval number of the project comes from (training's epoch
    choice, the evaluate stage, the benches): one place for the cut-offs."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    if not any(dataset.relevant_docs.values()):
        raise ValueError("the dataset has no questions with relevant chunks to evaluate on")
    return InformationRetrievalEvaluator(
        queries=dataset.queries,
        corpus=dataset.corpus,
        relevant_docs={qid: set(cids) for qid, cids in dataset.relevant_docs.items()},
        accuracy_at_k=ACCURACY_AT_K,
        precision_recall_at_k=PRECISION_RECALL_AT_K,
        mrr_at_k=MRR_AT_K,
        ndcg_at_k=NDCG_AT_K,
        map_at_k=MAP_AT_K,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
        name=name,
        write_csv=False,
        **options,
    )


def model_evaluator(
    model: SentenceTransformer, dataset: QADataset, batch_size: int = 32, name: str = "", **options: Any,
) -> InformationRetrievalEvaluator:
    """:func:`ir_evaluator` with ``model``'s own ``query``/``document`` prompts.

    Passed explicitly so what is prepended does not hang on ``encode_query``'s fallback
    rules (e.g. a ``default_prompt_name``); empty prompts mean no prefix.
    """
    return ir_evaluator(dataset, batch_size, name, query_prompt=model.prompts.get("query") or None,
                        corpus_prompt=model.prompts.get("document") or None, **options)


def question_order(dataset: QADataset) -> list[str]:
    """The questions that are scored (those with a relevant chunk), in the evaluator's order."""
    return [qid for qid in dataset.queries if dataset.relevant_docs.get(qid)]


def metrics_from_scores(
    dataset: QADataset, scores: np.ndarray, prefix: str, evaluator: InformationRetrievalEvaluator | None = None,
    per_question: bool = False,
) -> dict[str, Any]:
    """Metrics of the ranking ``scores`` (rows: :func:`question_order`, columns: corpus order),
    as ``{f"{prefix}_ndcg@10": …}``; with ``per_question``, also each question's NDCG@10
    under :data:`PER_QUESTION`."""
    evaluator = evaluator or ir_evaluator(dataset)
    scores = np.asarray(scores)
    expected = (len(evaluator.queries_ids), len(evaluator.corpus_ids))
    if scores.shape != expected:
        raise ValueError(f"scores have shape {scores.shape}, the dataset needs {expected} (questions × chunks)")
    max_k = max(*ACCURACY_AT_K, *PRECISION_RECALL_AT_K, *MRR_AT_K, *NDCG_AT_K, *MAP_AT_K)
    ids = evaluator.corpus_ids
    results = []
    for row in scores:
        order = top_k(row, max_k, ids)
        results.append([{"corpus_id": ids[i], "score": float(row[i])} for i in order])
    raw = evaluator.compute_metrics(results)
    metrics: dict[str, Any] = {
        f"{prefix}_{name.replace('@k', f'@{k}')}": float(value)
        for name, values in raw.items()
        for k, value in values.items()
    }
    if per_question:
        metrics[PER_QUESTION] = ndcg_by_question(results, evaluator)
    return metrics


def ndcg_by_question(results: list[list[dict[str, Any]]], evaluator: InformationRetrievalEvaluator,
                     k: int = NDCG_AT_K[0]) -> list[float]:
    """NDCG@k of each question (the evaluator's order) from its ranked hits, with the
    evaluator's definition (binary relevance, ideal DCG of min(relevant, k) hits): their
    mean is the evaluator's ``ndcg@k``. What a paired comparison of two rankers needs.

    >>> from tasks.core.qa_dataset import QADataset
    >>> ds = QADataset(queries={"q1": "a", "q2": "b"}, corpus={"c1": "x", "c2": "y"},
    ...                relevant_docs={"q1": ["c1"], "q2": ["c1"]})
    >>> hits = [[{"corpus_id": "c1"}, {"corpus_id": "c2"}], [{"corpus_id": "c2"}, {"corpus_id": "c1"}]]
    >>> [round(v, 4) for v in ndcg_by_question(hits, ir_evaluator(ds))]
    [1.0, 0.6309]
    """
    out = []
    for qid, hits in zip(evaluator.queries_ids, results):
        relevant = evaluator.relevant_docs[qid]
        dcg = sum(1 / np.log2(rank + 2) for rank, hit in enumerate(hits[:k]) if hit["corpus_id"] in relevant)
        ideal = sum(1 / np.log2(rank + 2) for rank in range(min(len(relevant), k)))
        out.append(round(float(dcg / ideal), 6))
    return out


def dense_scores(
    model: SentenceTransformer, dataset: QADataset, batch_size: int = 32,
    evaluator: InformationRetrievalEvaluator | None = None,
) -> np.ndarray:
    """The model's similarity of every question to every chunk, embedded as the evaluator
    embeds them (the model's ``query``/``document`` prompts, the same batches)."""
    evaluator = evaluator or model_evaluator(model, dataset, batch_size)
    q = evaluator.embed_inputs(model, evaluator.queries, encode_fn_name="query", prompt=evaluator.query_prompt)
    d = evaluator.embed_inputs(model, evaluator.corpus, encode_fn_name="document", prompt=evaluator.corpus_prompt)
    return model.similarity(q, d).cpu().numpy()
