"""The evaluate stage (every retriever of one model on one question set) and the stage that
matches the questions people wrote to the chunks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.chunks.stage import load_chunks_file
from tasks.core.stage import stage, stage_logger


def _evaluate_summary(grid: dict, cached: bool) -> dict:
    from tasks.retrieval.metrics import metric_value
    from tasks.retrieval.retriever import EXPANDED_BM25, RERANK_MARK

    return {"ndcg_at_10": round(metric_value(grid["dense"], "ndcg@10"), 4),
            "bm25_ndcg_at_10": round(metric_value(grid["bm25"], "ndcg@10"), 4),
            **({"bm25_expanded_ndcg_at_10": round(metric_value(grid[EXPANDED_BM25], "ndcg@10"), 4)}
               if EXPANDED_BM25 in grid else {}),
            **{f"rerank@{label.split(RERANK_MARK, 1)[1]}_ndcg_at_10".replace(" ", "_"): round(metric_value(m, "ndcg@10"), 4)
               for label, m in grid.items() if RERANK_MARK in label}}


@stage("evaluate", writes=("score_cache",), run_name="evaluate · {set_name} · {label}", summary=_evaluate_summary)
def evaluate(
    model_path: Path, dataset: Path, batch_size: int, retrievers: list[dict[str, Any]],
    trust_remote_code: bool = False, set_name: str = "val", label: str = "model",
    score_cache: Path | None = None, reranker_path: Path | None = None, expansion: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Retrieval metrics on one dataset of every retriever built from one model and BM25:
    ``{label: metrics}`` (``dense``, ``bm25``, ``hybrid w=…``, ``rrf``, and with
    ``reranker_path`` the reranked ones, with ``expansion`` the ones whose BM25 indexes
    the chunks' questions). ``score_cache``: the folder where training left the dense
    scores it computed while choosing α."""
    from tasks.evaluation.evaluate import evaluate_retrievers
    from tasks.retrieval.retriever import RetrieverSpec

    return evaluate_retrievers(str(model_path), Path(dataset), [RetrieverSpec.from_dict(r) for r in retrievers],
                               batch_size=batch_size, trust_remote_code=trust_remote_code, name=set_name,
                               score_cache=score_cache, reranker_path=reranker_path, expansion=expansion)


@stage("prompt-examples")
def prompt_examples(questions_path: Path, k: int, seed: int) -> list[dict[str, str]]:
    """``k`` questions people wrote, ``[{"id", "question"}]``, to show the question writer as
    examples; the human-questions stage leaves them out of the evaluation."""
    from tasks.evaluation.human_questions import load_human_questions, pick_examples

    return [{"id": q.qid, "question": q.question} for q in pick_examples(load_human_questions(Path(questions_path)), k, seed)]


@dataclass
class HumanQuestionsRecord:
    dataset: Path | None  # human_dataset.json; None when no question found its chunk
    n_questions: int
    n_resolved: int
    unresolved: list[dict[str, str]]  # {"id", "reason"}
    n_on_train_chunks: int  # resolved questions whose answer lies in a chunk the model was trained on
    n_examples: int = 0  # left out of the evaluation: shown to the question writer as examples


def _human_summary(record: HumanQuestionsRecord, cached: bool) -> dict:
    return {"questions": record.n_questions, "prompt_examples": record.n_examples, "resolved": record.n_resolved,
            "unresolved": len(record.unresolved),
            "on_training_chunks": record.n_on_train_chunks, "unresolved_questions": record.unresolved}


@stage("human-questions", writes=("out_path",), summary=_human_summary)
def human_questions(questions_path: Path, chunks_path: Path, out_path: Path,
                    exclude: list[str] | None = None) -> HumanQuestionsRecord:
    """Match questions people wrote to the chunks holding their evidence; write the dataset
    (corpus: every chunk) to ``out_path``, or remove a stale one when none matched.
    ``exclude``: ids of the questions that were prompt examples, left out."""
    from tasks.evaluation.human_questions import load_human_questions, resolve_questions

    train, val = load_chunks_file(chunks_path)
    result = resolve_questions(load_human_questions(Path(questions_path)), train + val, exclude or ())
    out_path = Path(out_path)
    for u in result.unresolved:
        stage_logger().info("human question %s not used: %s", u["id"], u["reason"])
    if result.n_excluded:
        stage_logger().info("%d of %d questions were prompt examples: left out of the evaluation",
                            result.n_excluded, result.n_questions)
    if result.unresolved:
        stage_logger().warning("%d of %d questions in %s were not found in the chunks (summary.json lists them)",
                               len(result.unresolved), result.n_questions, questions_path)
    if result.n_resolved:
        result.dataset.save(out_path)
    else:
        out_path.unlink(missing_ok=True)
        stage_logger().warning(
            "none of the %d questions in %s was found in the chunks: no evaluation on them",
            result.n_questions, questions_path,
        )
    train_ids = {c.chunk_id for c in train}
    return HumanQuestionsRecord(
        dataset=out_path if result.n_resolved else None,
        n_questions=result.n_questions,
        n_resolved=result.n_resolved,
        unresolved=result.unresolved,
        n_on_train_chunks=sum(bool(train_ids & set(d)) for d in result.dataset.relevant_docs.values()),
        n_examples=result.n_excluded,
    )
