"""The base-model stage: resolve, download if needed, and convert the base model."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from tasks.core.settings import Settings
from tasks.core.stage import stage


def _summary(record: dict, cached: bool) -> dict:
    return {"source": record["source"], "pooling": record["pooling"], "path": str(record["path"])}


@stage("base-model", settings=("models",), retries=1, summary=_summary)
def prepare_base(model: Path | str, settings: Settings) -> dict[str, Any]:
    """Make ``model`` (a local folder, a hub id or the bundled model) a sentence-transformers
    folder; a folder counts by its files, a name by itself."""
    from tasks.models.base import prepare_base_model

    info = asdict(prepare_base_model(settings, spec=str(model)))
    return {**info, "path": Path(info["path"])}


@stage("reranker-model", settings=("reranking",), retries=1)
def prepare_reranker(spec: str, base_path: Path, settings: Settings) -> dict[str, Any]:
    """The folder the reranker is trained from: ``spec`` (``base``, a local folder or a hub
    id, downloaded once) resolved against the prepared base model at ``base_path``."""
    from tasks.models.reranker import prepare_reranker_start

    return {"spec": spec, "path": prepare_reranker_start(spec, Path(base_path), settings)}
