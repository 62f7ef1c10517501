"""Retrieval metrics of an embedding model on a question/chunk dataset.

Every question is embedded with the model's ``query`` prompt, every chunk with its
``document`` prompt, and the chunks are ranked by the model's similarity (cosine for
all models here) with
:class:`~sentence_transformers.sentence_transformer.evaluation.InformationRetrievalEvaluator`.
The returned keys carry the similarity name but not the evaluation name, so the
metrics of several models or datasets can be compared key by key.

Example::

    >>> metrics = evaluate_model("outputs/finetune_bce/model", Path("outputs/finetune_bce/val_dataset.json"))
    >>> sorted(metrics)[:3]
    ['cosine_accuracy@1', 'cosine_accuracy@10', 'cosine_accuracy@3']
    >>> metrics["cosine_ndcg@10"]
    0.8123
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.qa_dataset import QADataset

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

ACCURACY_AT_K = [1, 3, 5, 10]
PRECISION_RECALL_AT_K = [1, 3, 5, 10]
MRR_AT_K = [10]
NDCG_AT_K = [10]
MAP_AT_K = [100]


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
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    if not any(dataset.relevant_docs.values()):
        raise ValueError("the dataset has no questions with relevant chunks to evaluate on")
    evaluator = InformationRetrievalEvaluator(
        queries=dataset.queries,
        corpus=dataset.corpus,
        relevant_docs={qid: set(cids) for qid, cids in dataset.relevant_docs.items()},
        accuracy_at_k=ACCURACY_AT_K,
        precision_recall_at_k=PRECISION_RECALL_AT_K,
        mrr_at_k=MRR_AT_K,
        ndcg_at_k=NDCG_AT_K,
        map_at_k=MAP_AT_K,
        batch_size=batch_size,
        show_progress_bar=True,
        name=name,
        # Passed explicitly so what is prepended does not hang on encode_query's
        # fallback rules (e.g. a default_prompt_name); empty prompts mean no prefix.
        query_prompt=model.prompts.get("query") or None,
        corpus_prompt=model.prompts.get("document") or None,
        write_csv=False,
    )
    logger.info(
        "evaluating on %d questions against %d chunks (%s)", len(evaluator.queries), len(evaluator.corpus), name
    )
    # output_path=None: the evaluator writes no CSV or predictions; this function is pure.
    raw = evaluator(model, output_path=None)
    prefix = f"{name}_" if name else ""
    return {key.removeprefix(prefix): float(value) for key, value in raw.items()}
