"""The reranker stage: train a cross-encoder on the run's training pairs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from tasks.core.settings import Settings
from tasks.core.stage import stage


def _summary(record: dict, cached: bool) -> dict:
    return {"steps_run": 0 if cached else record["steps"], "pairs": record["n_pairs"],
            "questions": record["n_questions"], "start": record["start"]}


@stage("reranker", writes=("out_dir",), settings=("reranking",), summary=_summary)
def train_reranker_stage(start: Path | str, first_stage_model: Path, train_dataset: Path, out_dir: Path,
                         settings: Settings) -> dict[str, Any]:
    """Train the reranker from ``start`` on ``train_dataset``, with negatives from the first
    stage built on ``first_stage_model``; saved atomically to ``out_dir``."""
    from tasks.core.memory import release_freed_memory
    from tasks.reranking.training import train_reranker

    result = asdict(train_reranker(str(start), str(first_stage_model), Path(train_dataset), Path(out_dir), settings))
    release_freed_memory()
    return {**result, "path": Path(result["path"])}
