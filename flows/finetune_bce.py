"""Fine-tune a Chinese embedding model on questions a local LLM writes about your PDFs.

    python -m flows.finetune_bce                      # bundled sample PDFs and offline models
    python -m flows.finetune_bce --pdf-dir my_pdfs --profile gpu
    python -m flows.finetune_bce --help               # every setting

The flow reads top to bottom as the pipeline: documents → split → chunks →
questions → base model → fine-tune → evaluate both → report. Every stage is a
Prefect task with a cache key from its real inputs, so an unchanged rerun does no
generation and no training.
"""

from __future__ import annotations

import os
import sys

# Before Prefect is imported: no telemetry, and a patient start for the local server
# on a small machine.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# The stage code logs through plain `logging`; this routes it into the run's logs (UI too).
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks")

import logging
import time
from pathlib import Path
from typing import Any, Callable

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State

from tasks.errors import PipelineError
from tasks.preflight import check_settings
from tasks.run_lock import RunLock
from tasks import stages
from tasks.fileio import write_json_atomic, write_text_atomic
from tasks.settings import Settings

N_STAGES = 8


class UnusableDataError(PipelineError, ValueError):
    """The documents give too little data to train or validate on."""


class StageRunner:
    """Runs stage tasks in order, timing each and noting whether Prefect's cache served it."""

    def __init__(self, logger):
        self.logger = logger
        self.summary: dict[str, dict[str, Any]] = {}

    def run(self, name: str, task, *args, outputs: list[Path] = (), **kwargs):
        n = len(self.summary) + 1
        # A cached record that points at files someone deleted is worthless: run again.
        missing = [p for p in outputs if not Path(p).exists()]
        if missing:
            task = task.with_options(refresh_cache=True)
        self.logger.info("[%d/%d] %s …", n, N_STAGES, name)
        started = time.perf_counter()
        state: State = task(*args, return_state=True, **kwargs)
        result = state.result()  # raises the task's error if it failed
        seconds = round(time.perf_counter() - started, 2)
        self.summary[name] = {"seconds": seconds, "cached": state.name == "Cached"}
        return result

    def note(self, name: str, **counts: Any) -> None:
        self.summary[name].update(counts)
        shown = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items() if not isinstance(v, (list, dict)))
        flag = " (cached)" if self.summary[name]["cached"] else ""
        self.logger.info("    %s%s — %s [%.1f s]", name, flag, shown, self.summary[name]["seconds"])


def check_usable(chunks: stages.ChunksRecord, settings: Settings) -> None:
    """Fail before the expensive stages when the data cannot train or validate a model."""
    if chunks.n_val_chunks == 0:
        raise UnusableDataError(
            "the validation split has no chunks: add PDFs or raise --val-ratio"
        )
    pairs = chunks.n_train_chunks * settings.questions_per_chunk
    if pairs < settings.batch_size:
        raise UnusableDataError(
            f"{chunks.n_train_chunks} training chunks give at most {pairs} pairs, fewer than "
            f"--batch-size {settings.batch_size}: add PDFs, lower --chunk-size or lower --batch-size"
        )


def _model_complete(path: Path) -> bool:
    return (path / "modules.json").is_file() and (path / "config_sentence_transformers.json").is_file()


@flow(name="finetune-bce")
def finetune_bce(settings: Settings = Settings()) -> dict[str, Any]:
    """PDFs → questions → fine-tuned embedding model → metrics, in one run."""
    logger = get_run_logger()
    # PREFECT_LOGGING_EXTRA_LOGGERS gives the stage loggers Prefect's handlers, not a level.
    logging.getLogger("tasks").setLevel(logging.INFO)
    check_settings(settings)
    with RunLock(Path(settings.output_dir)):
        return _pipeline(settings, logger)


def _pipeline(settings: Settings, logger) -> dict[str, Any]:
    out = Path(settings.output_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    run = StageRunner(logger)

    docs = run.run("documents", stages.read_documents, settings.pdf_dir, work, outputs=[work / "documents.jsonl"])
    for s in docs.skipped:
        logger.warning("skipped %s: %s", s["source"], s["reason"])
    run.note("documents", files=docs.n_files, documents=docs.n_documents, pages=docs.n_pages,
             duplicates=docs.n_duplicates, skipped=len(docs.skipped), skipped_files=docs.skipped)

    plan = run.run("split", stages.split_train_val, docs.documents_path, settings.val_ratio, settings.seed)
    run.note("split", by=plan["by"], train_documents=len(plan["train_ids"]), val_documents=len(plan["val_ids"]))

    chunks = run.run(
        "chunks", stages.chunk, docs.documents_path, plan, settings.chunk_size, settings.chunk_overlap,
        settings.val_ratio, settings.seed, work, outputs=[work / "chunks.jsonl"],
    )
    run.note("chunks", train_chunks=chunks.n_train_chunks, val_chunks=chunks.n_val_chunks)
    check_usable(chunks, settings)

    questions = run.run(
        "questions", stages.generate, chunks.chunks_path, settings, out,
        outputs=[out / "train_dataset.json", out / "val_dataset.json"],
    )
    gen = dict(questions.stats)
    if run.summary["questions"]["cached"]:
        gen.update(requests_sent=0, cache_hits=gen["chunks"])  # nothing was asked this time
    run.note("questions", llm_requests_sent=gen["requests_sent"], cache_hits=gen["cache_hits"],
             questions_kept=gen["questions_kept"], train_queries=questions.n_train_queries,
             val_queries=questions.n_val_queries, dropped=gen["dropped"])

    base = run.run("base_model", stages.prepare_base, settings, outputs=[])
    if not _model_complete(Path(base["path"])):
        base = run.run("base_model", stages.prepare_base.with_options(refresh_cache=True), settings)
    run.note("base_model", source=base["source"], pooling=base["pooling"], path=base["path"])

    model_dir = out / "model"
    trained = run.run(
        "training", stages.train.with_options(refresh_cache=not _model_complete(model_dir)),
        base["path"], questions.train_dataset, model_dir, settings,
    )
    steps = 0 if run.summary["training"]["cached"] else trained["steps"]
    run.note("training", steps_run=steps, pairs=trained["n_pairs"], epochs=trained["epochs"])

    metrics = {}
    for side, model_path in (("base", base["path"]), ("finetuned", str(model_dir))):
        name = f"evaluate_{side}"
        metrics[side] = run.run(name, stages.evaluate, model_path, questions.val_dataset, settings.eval_batch_size)
        run.note(name, queries=questions.n_val_queries, ndcg_at_10=round(metrics[side]["cosine_ndcg@10"], 4))

    summary = {
        "output_dir": str(out.resolve()),
        "base_model": {**base, "spec": settings.resolved_base_model(), "path": str(Path(base["path"]).resolve())},
        "model_path": str(model_dir.resolve()),
        "stages": run.summary,
        "total_seconds": round(sum(s["seconds"] for s in run.summary.values()), 2),
    }
    write_outputs(out, metrics, summary, settings)
    return {"metrics": metrics, "summary": summary}


def write_outputs(out: Path, metrics: dict, summary: dict, settings: Settings) -> None:
    """metrics.json, summary.json, report.md, and the table as a Prefect artifact."""
    from tasks.report import metrics_table, render_report

    write_json_atomic(out / "metrics.json", metrics)
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "report.md", render_report(metrics, summary, settings.model_dump(mode="json")))
    create_markdown_artifact(
        key="finetune-metrics",
        markdown=f"## Retrieval on the validation set\n\n{metrics_table(metrics)}\n\nOutput: `{out.resolve()}`",
        description="Base vs fine-tuned model on the validation questions",
    )


def main(argv: list[str] | None = None, run_flow: Callable[..., dict] = finetune_bce) -> int:
    from flows.settings_cli import SettingsError, build_parser, settings_from_args
    from tasks.report import console_table

    parser = build_parser("python -m flows.finetune_bce", __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        check_settings(settings)  # the flow checks again; here it fails before the server starts
    except (SettingsError, FileNotFoundError, PipelineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        result = run_flow(settings=settings)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print()
    print(console_table(result["metrics"]))
    print(f"\nOutput folder: {result['summary']['output_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
