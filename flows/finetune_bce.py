"""Fine-tune a Chinese embedding model on questions a local LLM writes about your PDFs.

    python -m flows.finetune_bce                      # bundled sample PDFs and offline models
    python -m flows.finetune_bce --pdf-dir my_pdfs --profile gpu
    python -m flows.finetune_bce --help               # every setting

Each stage is a Prefect task in its package (``tasks/<stage>/stage.py``) whose cache key
comes from its code, its input files and the settings it reads, so an unchanged rerun does
no generation and no training. Timings and cache hits are Prefect's, copied into summary.json.
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
from pathlib import Path
from typing import Any, Callable

from prefect import flow, get_run_logger

from tasks.chunks.stage import chunk, split_train_val
from tasks.core.errors import PipelineError
from tasks.core.preflight import check_datasets, check_settings, check_usable
from tasks.core.run_lock import RunLock
from tasks.core.settings import Settings
from tasks.core.stage import StageRuns
from tasks.documents.stage import read_documents
from tasks.evaluation.stage import evaluate, human_questions, prompt_examples
from tasks.models.stage import prepare_base, prepare_reranker
from tasks.questions.stage import bm25_expansion, generate, round_trip
from tasks.registry import release
from tasks.registry.stage import register_and_promote
from tasks.reranking.stage import train_reranker_stage
from tasks.reporting.artifacts import publish_run_artifacts
from tasks.reporting.run_outputs import (publish_generation_report, publish_skipped_inputs, run_summary,
                                         write_outputs)
from tasks.training.stage import train


@flow(name="finetune-bce")
def finetune_bce(settings: Settings = Settings()) -> dict[str, Any]:
    """PDFs → questions → fine-tuned embedding model → metrics, in one run."""
    # PREFECT_LOGGING_EXTRA_LOGGERS gives the stage loggers Prefect's handlers, not a level.
    logging.getLogger("tasks").setLevel(logging.INFO)
    check_settings(settings)
    with RunLock(Path(settings.output_dir)):
        return pipeline(settings, StageRuns(get_run_logger()))


def pipeline(settings: Settings, stages: StageRuns) -> dict[str, Any]:
    out = Path(settings.output_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    champion = release.read_champion(out)  # read before this run may promote itself

    docs = stages.run(read_documents, settings.pdf_dir, work / "documents.jsonl", settings)
    if docs.skipped:
        publish_skipped_inputs(docs.skipped, settings.pdf_dir)
    plan = stages.run(split_train_val, docs.documents_path, settings)
    chunks = stages.run(chunk, docs.documents_path, plan, settings, work / "chunks.jsonl")
    check_usable(chunks.n_train_chunks, chunks.n_val_chunks, settings)

    # A few of people's questions may show the LLM how users ask; they then leave the report.
    people = release.human_questions_file(settings)
    examples = (stages.run(prompt_examples, people, settings.prompt_examples, settings.seed)
                if people is not None and settings.prompt_examples else [])
    questions = stages.run(generate, chunks.chunks_path, settings, out / "train_dataset.json",
                           out / "val_dataset.json", work / "questions.jsonl", [e["question"] for e in examples])
    check_datasets(questions.n_train_queries, questions.n_val_queries, settings)

    base = stages.run(prepare_base, settings.resolved_base_model(), settings)
    train_dataset, filtered = questions.train_dataset, None
    if settings.round_trip_top_k:
        rt = stages.run(round_trip, base["path"], questions.train_dataset, settings.round_trip_top_k,
                        settings.eval_batch_size, out / "train_dataset_round_trip.json",
                        trust_remote_code=settings.trust_remote_code)
        check_datasets(rt.n_train_queries, questions.n_val_queries, settings)
        train_dataset, filtered = rt.train_dataset, rt.report
    publish_generation_report(out, questions.stats, filtered)

    scores = work / "dense-scores"  # the α grid's, read again by the evaluations of the same weights
    trained = stages.run(train, base["path"], train_dataset, out / "model", settings, questions.val_dataset,
                         settings.guard_dataset, scores)

    # The second stage: a cross-encoder on the same questions, negatives from the first stage's top ranks.
    reranker = None
    if settings.resolved_rerank():
        start = stages.run(prepare_reranker, settings.resolved_reranker_model(), base["path"], settings)
        reranker = stages.run(train_reranker_stage, start["path"], out / "model", train_dataset, out / "reranker",
                              settings)["path"]

    # The keyword side may index each chunk with its questions; none is ever scored against itself.
    expansion = (stages.run(bm25_expansion, train_dataset, questions.val_dataset, out / "expansion.json")["path"]
                 if settings.bm25_expansion else None)

    # Every model on every question set; promotion and the shipped retriever use validation only.
    contenders = release.contenders(out, base["path"], out / "model", champion, reranker, expansion)
    val = evaluate_models(stages, contenders, questions.val_dataset, settings, scores)
    guard = evaluate_models(stages, contenders, settings.guard_dataset, settings, scores)
    decision = release.decide(contenders, val, guard, trained, questions.val_dataset, settings)
    release.update_model_card(out / "model", decision.card)  # before the registry copies the model
    stages.run(register_and_promote, out, contenders.run_id, out / "model", contenders.fingerprint,
               decision.promotion["promote"], decision.record, reranker, decision.serving, expansion)
    # What search serves, read back from the one record of it: every output below names it.
    served = release.shipped(release.read_serving(out).record, contenders)
    promotion = {**decision.promotion, "retriever": served,
                 "serving": release.serving_line(served, decision.promotion["promote"])}
    stages.logger.info("%s", promotion["serving"])

    # Report only, measured after every choice (epoch, α, promotion, retriever) was made without it.
    metrics = release.report_rows(val, guard, served)
    if people is not None:
        found = stages.run(human_questions, people, chunks.chunks_path, out / "human_dataset.json",
                           [e["id"] for e in examples])
        if found.dataset is not None:
            metrics["human"] = release.table_rows(
                evaluate_models(stages, contenders, found.dataset, settings, scores), served)

    summary = run_summary(out, base, settings, promotion, stages.summary())
    write_outputs(out, metrics, summary, settings)
    publish_run_artifacts(summary)  # stage timings, links to the model and report (Prefect UI)
    return {"metrics": metrics, "summary": summary}


def evaluate_models(stages: StageRuns, contenders: release.Contenders, dataset: Path | None, settings: Settings,
                    scores: Path) -> dict:
    """``{model: {retriever: metrics}}`` for each model on ``dataset`` ({} without one); a
    model with a reranker also gets its first stage + reranker at each depth, and the model
    search serves its served retriever (:meth:`release.Contenders.retrievers`)."""
    if dataset is None:
        return {}
    set_name = Path(dataset).stem.removesuffix("_dataset") or "val"
    grids = {}
    for side, path in contenders.models.items():
        specs = contenders.retrievers(side, settings)
        grids[side] = stages.run(evaluate, path, dataset, settings.eval_batch_size, [s.to_dict() for s in specs],
                                 trust_remote_code=settings.trust_remote_code, set_name=set_name, label=side,
                                 score_cache=scores, reranker_path=contenders.rerankers.get(side),
                                 expansion=contenders.expansions.get(side))
    return grids


def main(argv: list[str] | None = None, run_flow: Callable[..., dict] = finetune_bce) -> int:
    from flows.settings_cli import build_parser, settings_from_args
    from tasks.reporting.run_outputs import print_results

    args = build_parser("python -m flows.finetune_bce", __doc__.splitlines()[0]).parse_args(argv)
    try:
        settings = settings_from_args(args)
        check_settings(settings)  # the flow checks again; here it fails before the server starts
    except PipelineError as e:  # a bad flag, config file or setting: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        result = run_flow(settings=settings)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_results(result)
    return 0


if __name__ == "__main__":
    from flows.signals import exit_cleanly_on_signals

    # SIGTERM must unwind like Ctrl-C, or the local Prefect server outlives the run.
    sys.exit(exit_cleanly_on_signals(main))
