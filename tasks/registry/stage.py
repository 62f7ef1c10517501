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
    reranker_dir: Path | None = None, serving: dict[str, Any] | None = None, expansion: Path | None = None,
) -> dict[str, Any]:
    """Keep the run's model (and its reranker, and its questions by chunk, ``expansion``)
    under ``runs/<run_id>/`` (unless that run is registered already; a run registered before
    runs kept their questions gets them now) and write ``serving`` (what search serves after the run) to
    ``current.json``: the run's own record if ``promote`` (and point ``current`` at it), the
    base model's before any promotion; a champion that stays is left as it is."""
    from tasks.core.fileio import write_bytes_atomic
    from tasks.registry.runs import (EXPANSION_FILE, RERANKER_DIR, find_run, register_run, run_dir, serve_base_model,
                                     set_champion)

    created = find_run(Path(output_dir), fingerprint, record.get("reranker_fingerprint")) is None
    if created:
        files = {EXPANSION_FILE: Path(expansion).read_bytes()} if expansion is not None else {}
        register_run(Path(output_dir), run_id, Path(model_dir), fingerprint, files=files, record=record,
                     folders={RERANKER_DIR: Path(reranker_dir)} if reranker_dir is not None else None)
    elif expansion is not None and not (run_dir(Path(output_dir), run_id) / EXPANSION_FILE).is_file():
        write_bytes_atomic(run_dir(Path(output_dir), run_id) / EXPANSION_FILE, Path(expansion).read_bytes())
    if promote:
        set_champion(Path(output_dir), run_id, serving)
        stage_logger().info("promoted run %s: %s", run_id, run_dir(Path(output_dir), run_id) / "model")
    elif serving is not None and serving.get("run_id") is None:
        serve_base_model(Path(output_dir), serving)
    return {"run_id": run_id, "created": created, "promoted": promote}


register_and_promote.summarize = default_summary
