"""What the Prefect UI shows about a run besides the metrics: stage timings and where the model went.

Two artifacts next to ``finetune-metrics`` (and the generation report): the table
``finetune-stages`` (per stage: seconds, cache hit, counts) and the links
``finetune-model`` and ``finetune-report`` to the model folder and report.md. Links are
``file://`` addresses: the UI cannot open a worker's disk, but shows where to look.

Example::

    >>> stage_rows({"stages": {"training": {"seconds": 3.2, "cached": False, "steps_run": 7}}})
    [{'stage': 'training', 'seconds': 3.2, 'cached': 'no', 'counts': 'steps run: 7'}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def stage_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage of ``summary.json``; counts that are lists or tables stay in the file."""
    rows = []
    for name, info in summary.get("stages", {}).items():
        counts = ", ".join(
            f"{k.replace('_', ' ')}: {v}" for k, v in info.items()
            if k not in ("seconds", "cached") and not isinstance(v, (list, dict))
        )
        rows.append({"stage": name, "seconds": info.get("seconds"), "cached": "yes" if info.get("cached") else "no",
                     "counts": counts})
    return rows


def publish_run_artifacts(summary: dict[str, Any]) -> None:
    """Create the stage table and the model/report links on the current flow run."""
    from prefect.artifacts import create_link_artifact, create_table_artifact

    total = summary.get("total_seconds")
    create_table_artifact(
        key="finetune-stages", table=stage_rows(summary),
        description=f"Stage timings and counts ({total} s in all); the same numbers are in summary.json",
    )
    out = Path(summary["output_dir"])
    create_link_artifact(
        key="finetune-model", link=Path(summary["model_path"]).resolve().as_uri(), link_text=summary["model_path"],
        description="The fine-tuned sentence-transformers model (on the worker's disk)",
    )
    create_link_artifact(
        key="finetune-report", link=(out / "report.md").resolve().as_uri(), link_text=str(out / "report.md"),
        description="Metrics, datasets, settings and stage timings of this run",
    )
