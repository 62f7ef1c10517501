"""The training stage: fine-tune the base model on the question/chunk pairs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from tasks.core.settings import Settings
from tasks.core.stage import stage


def _summary(record: dict, cached: bool) -> dict:
    return {"steps_run": 0 if cached else record["steps"], "pairs": record["n_pairs"], "epochs": record["epochs"],
            "learning_rate": record.get("learning_rate"), "hard_negatives": record.get("hard_negatives"),
            "best_checkpoint": record.get("best_checkpoint"), "best_val_ndcg": record.get("best_val_ndcg"),
            "alpha": record.get("alpha"), "alpha_results": record.get("alpha_results") or []}


@stage("training", writes=("model_dir", "score_cache"), settings=("training",), summary=_summary)
def train(base_model_path: Path, train_dataset: Path, model_dir: Path, settings: Settings,
          val_dataset: Path | None = None, guard_dataset: Path | None = None,
          score_cache: Path | None = None) -> dict[str, Any]:
    """Fine-tune the base model on the training pairs (best epoch on ``val_dataset``, α on it
    and ``guard_dataset``); the model is saved atomically. The α grid's dense scores go to
    ``score_cache``, where the evaluate stages find them."""
    from tasks.core.memory import release_freed_memory
    from tasks.training.trainer import train_model

    result = asdict(train_model(
        str(base_model_path), Path(train_dataset), Path(model_dir), settings,
        val_dataset=Path(val_dataset) if val_dataset else None,
        guard_dataset=Path(guard_dataset) if guard_dataset else None,
        score_cache=Path(score_cache) if score_cache else None,
    ))
    release_freed_memory()  # the trainer's activations, gradients and optimizer state, before the evaluations
    return {**result, "model_path": Path(result["model_path"])}
