"""The promotion stage: keep the run's model in the registry and make it the champion if it won."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.core.stage import default_summary, stage_logger


# Never cached: it acts on the registry as it is now, not as it was when its inputs last matched.
@task(name="promotion", cache_policy=NO_CACHE)
def register_and_promote(
    output_dir: Path, run_id: str, model_dir: Path, fingerprint: str, promote: bool, record: dict[str, Any],
    reranker_dir: Path | None = None,
) -> dict[str, Any]:
    """Keep the run's model (and its reranker) under ``runs/<run_id>/`` (unless that run is
    registered already) and, if ``promote``, point ``current.json``/``current`` at it."""
    from tasks.registry.release import RERANKER_DIR
    from tasks.registry.runs import find_run, register_run, run_dir, set_champion

    created = find_run(Path(output_dir), fingerprint, record.get("reranker_fingerprint")) is None
    if created:
        register_run(Path(output_dir), run_id, Path(model_dir), fingerprint, files={}, record=record,
                     folders={RERANKER_DIR: Path(reranker_dir)} if reranker_dir is not None else None)
    if promote:
        set_champion(Path(output_dir), run_id, {"promoted_at": record.get("created_at"), **record.get("scores", {}),
                                                **({"retriever": record["retriever"]} if "retriever" in record else {})})
        stage_logger().info("promoted run %s: %s", run_id, run_dir(Path(output_dir), run_id) / "model")
    return {"run_id": run_id, "created": created, "promoted": promote}


register_and_promote.summarize = default_summary
