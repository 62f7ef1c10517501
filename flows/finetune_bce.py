"""Fine-tune a Chinese embedding model on questions a local LLM writes about your PDFs.

    python -m flows.finetune_bce                      # bundled sample PDFs and offline models
    python -m flows.finetune_bce --pdf-dir my_pdfs --profile gpu
    python -m flows.finetune_bce --help               # every setting

The flow reads top to bottom as the pipeline: documents → split → chunks →
questions → base model → fine-tune → evaluate both (validation and guard set,
against the champion too) → keep the run, promote it if it wins → report. Every stage is a
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
from tasks.run_artifacts import publish_run_artifacts
from tasks import stages
from tasks.fileio import write_json_atomic, write_text_atomic
from tasks.settings import Settings

N_STAGES = 8


class UnusableDataError(PipelineError, ValueError):
    """The documents give too little data to train or validate on."""


class StageRunner:
    """Runs stage tasks in order, timing each and noting whether Prefect's cache served it."""

    def __init__(self, logger, total: int = N_STAGES):
        self.logger = logger
        self.total = total
        self.summary: dict[str, dict[str, Any]] = {}

    def run(self, name: str, task, *args, outputs: list[Path] = (), **kwargs):
        n = len(self.summary) + 1
        # A cached record that points at files someone deleted is worthless: run again.
        missing = [p for p in outputs if not Path(p).exists()]
        if missing:
            task = task.with_options(refresh_cache=True)
        self.logger.info("[%d/%d] %s …", n, self.total, name)
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


def check_datasets(n_train_queries: int, n_val_queries: int, settings: Settings) -> None:
    """Fail before training when the questions kept cannot train or validate a model."""
    if n_val_queries == 0:
        raise UnusableDataError(
            "no validation question was kept (the filters dropped them all; the questions stage's log "
            "line counts the reasons): add PDFs, raise --val-ratio, or relax the question filters"
        )
    if n_train_queries < settings.batch_size:
        raise UnusableDataError(
            f"{n_train_queries} training questions were kept, fewer than --batch-size {settings.batch_size}: "
            "add PDFs, lower --batch-size, or relax the question filters"
        )


def planned_stages(settings: Settings, has_champion: bool) -> int:
    """How many stages this run shows as ``[n/total]``: the eight, plus the optional ones.

    Optional: the round-trip filter, the guard evaluations (base and fine-tuned), the
    champion's evaluations when a champion exists, promotion, and the questions written by
    people (matching them to chunks, then base, [champion,] fine-tuned).
    """
    from tasks.human_questions import questions_file

    guard = bool(settings.guard_dataset)
    human = questions_file(settings.human_questions, Path(settings.pdf_dir)) is not None
    return (N_STAGES + bool(settings.round_trip_top_k) + 2 * guard + has_champion * (1 + guard) + 1
            + human * (3 + has_champion))


def _champion_model(out: Path) -> Path | None:
    from tasks.registry import read_champion

    champion = read_champion(out)
    return champion.model_path if champion else None


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
    champion = _champion_model(out)  # read before this run may promote itself
    run = StageRunner(logger, total=planned_stages(settings, has_champion=champion is not None))

    docs = run.run("documents", stages.read_documents, settings.pdf_dir, work, settings.garbage_pdfs,
                   settings.garbage_threshold, outputs=[work / "documents.jsonl"])
    if run.summary["documents"]["cached"]:  # else the task logged one line per skipped file already
        for s in docs.skipped:
            logger.warning("skipped %s: %s", s["source"], s["reason"])
    run.note("documents", files=docs.n_files, documents=docs.n_documents, pages=docs.n_pages,
             duplicates=docs.n_duplicates, skipped=len(docs.skipped), skipped_files=docs.skipped)
    if docs.skipped:
        publish_skipped_inputs(docs.skipped, settings)

    plan = run.run("split", stages.split_train_val, docs.documents_path, settings.val_ratio, settings.seed)
    run.note("split", by=plan["by"], train_documents=len(plan["train_ids"]), val_documents=len(plan["val_ids"]))

    chunks = run.run(
        "chunks", stages.chunk, docs.documents_path, plan, settings.chunk_size, settings.chunk_overlap,
        settings.val_ratio, settings.seed, work, settings.chunk_by_section, outputs=[work / "chunks.jsonl"],
    )
    run.note("chunks", train_chunks=chunks.n_train_chunks, val_chunks=chunks.n_val_chunks)
    check_usable(chunks, settings)

    questions = run.run(
        "questions", stages.generate, chunks.chunks_path, settings, out,
        outputs=[out / "train_dataset.json", out / "val_dataset.json"],
    )
    gen = dict(questions.stats)
    if run.summary["questions"]["cached"]:
        gen.update(requests_sent=0, cache_hits=gen.get("chunks_asked", gen["chunks"]))  # nothing was asked this time
    run.note("questions", llm_requests_sent=gen["requests_sent"], cache_hits=gen["cache_hits"],
             questions_kept=gen["questions_kept"], train_queries=questions.n_train_queries,
             val_queries=questions.n_val_queries, dropped=gen["dropped"],
             chunks_not_asked=sum(gen.get("chunks_skipped", {}).values()), not_asked=gen.get("chunks_skipped", {}),
             failed_chunks=gen.get("failed_chunks", 0),
             val_corpus_chunks=chunks.n_val_chunks + (chunks.n_train_chunks if settings.val_corpus == "all" else 0))
    check_datasets(questions.n_train_queries, questions.n_val_queries, settings)

    base = run.run("base_model", stages.prepare_base, settings, outputs=[])
    if not _model_complete(Path(base["path"])):
        base = run.run("base_model", stages.prepare_base.with_options(refresh_cache=True), settings)
    run.note("base_model", source=base["source"], pooling=base["pooling"], path=base["path"])

    train_dataset, round_trip = questions.train_dataset, None
    if settings.round_trip_top_k:
        rt_path = out / "train_dataset_round_trip.json"
        rt = run.run("round_trip", stages.round_trip, base["path"], questions.train_dataset,
                     settings.round_trip_top_k, settings.eval_batch_size, rt_path, outputs=[rt_path],
                     trust_remote_code=settings.trust_remote_code)
        run.note("round_trip", top_k=settings.round_trip_top_k, kept=rt.report["kept"], dropped=rt.report["dropped"])
        check_datasets(rt.n_train_queries, questions.n_val_queries, settings)
        train_dataset, round_trip = rt.train_dataset, rt.report
    publish_generation_report(out, gen, round_trip)

    model_dir = out / "model"
    trained = run.run(
        "training", stages.train.with_options(refresh_cache=not _model_complete(model_dir)),
        base["path"], train_dataset, model_dir, settings, questions.val_dataset,
        str(settings.guard_dataset) if settings.guard_dataset else None,
    )
    steps = 0 if run.summary["training"]["cached"] else trained["steps"]
    run.note("training", steps_run=steps, pairs=trained["n_pairs"], epochs=trained["epochs"],
             learning_rate=trained.get("learning_rate"), hard_negatives=trained.get("hard_negatives"),
             best_checkpoint=trained.get("best_checkpoint"), best_val_ndcg=trained.get("best_val_ndcg"),
             alpha=trained.get("alpha"), alpha_results=trained.get("alpha_results") or [])

    grids = evaluate_models(run, "evaluate", {"base": base["path"], "finetuned": str(model_dir)},
                            questions.val_dataset, settings, queries=questions.n_val_queries)

    # Guard set, champion, promotion, the shipped retriever and the versioned run folder.
    metrics, promotion = guard_and_promotion(run, settings, out, base["path"], model_dir,
                                             questions.val_dataset, grids, trained)
    # Report only, measured after every choice (epoch, α, promotion, retriever) was made without it.
    human = human_question_rows(run, settings, out, chunks.chunks_path, base["path"], model_dir,
                                rival=champion if "champion" in metrics else None,
                                planned_champion=champion is not None, shipped=promotion["retriever"])
    if human:
        metrics["human"] = human

    summary = {
        "output_dir": str(out.resolve()),
        "base_model": {**base, "spec": settings.resolved_base_model(), "path": str(Path(base["path"]).resolve())},
        "model_path": str(model_dir.resolve()),
        "promotion": promotion,
        "stages": run.summary,
        "total_seconds": round(sum(s["seconds"] for s in run.summary.values()), 2),
    }
    write_outputs(out, metrics, summary, settings)
    publish_run_artifacts(summary)  # stage timings, links to the model and report (Prefect UI)
    return {"metrics": metrics, "summary": summary}


def evaluate_models(
    run: StageRunner, prefix: str, models: dict[str, str], dataset: str | Path, settings: Settings, **counts: Any,
) -> dict[str, dict[str, dict]]:
    """The ``evaluate`` stage for each model on one dataset, as stages ``<prefix>_<side>``.

    Returns ``{side: {retriever label: metrics}}`` in the order given (every retriever of
    ``settings.retriever_candidates()``: BM25, the fusions, dense, RRF); each stage's summary
    gets ``counts`` and the dense and BM25 NDCG@10.
    """
    from tasks.report import metric_value

    retrievers = [spec.to_dict() for spec in settings.retriever_candidates()]
    set_name = Path(dataset).stem.removesuffix("_dataset") or "val"
    grids = {}
    for side, path in models.items():
        name = f"{prefix}_{side}"
        grids[side] = run.run(name, stages.evaluate, str(path), str(dataset), settings.eval_batch_size, retrievers,
                              trust_remote_code=settings.trust_remote_code, set_name=set_name, label=side)
        run.note(name, **counts, ndcg_at_10=round(metric_value(grids[side]["dense"], "ndcg@10"), 4),
                 bm25_ndcg_at_10=round(metric_value(grids[side]["bm25"], "ndcg@10"), 4))
    return grids


def table_rows(grids: dict[str, dict[str, dict]], shipped: dict[str, Any] | None = None) -> dict[str, dict]:
    """The rows of one table: ``bm25``, each model's dense row (base, [champion,] finetuned)
    and, with ``shipped`` (the retriever record), the shipped retriever on this dataset."""
    rows = {"bm25": next(iter(grids.values()))["bm25"], **{side: grid["dense"] for side, grid in grids.items()}}
    if shipped is not None and shipped["model"] in grids:
        rows["shipped"] = grids[shipped["model"]][shipped["label"]]
    return rows


def ship_retriever(grids: dict[str, dict[str, dict]], serving: str, model_path: str, settings: Settings) -> dict:
    """The retriever to ship with the ``serving`` model, chosen on the validation ``grids``:
    BM25 alone, the dense model alone, or a fusion. Its record names the spec, the model
    and every candidate's validation NDCG@10."""
    from tasks.report import metric_value
    from tasks.retrieval.retriever import choose

    candidates = settings.retriever_candidates()
    spec = choose(grids[serving], candidates)
    return {**spec.to_dict(), "label": spec.label, "description": spec.describe(), "model": serving,
            "model_path": str(Path(model_path).resolve()),
            "validation_ndcg@10": {s.label: round(metric_value(grids[serving][s.label], "ndcg@10"), 4)
                                   for s in candidates}}


def guard_and_promotion(
    run: StageRunner, settings: Settings, out: Path, base_path: str, model_dir: Path, val_dataset: str,
    grids: dict, trained: dict,
) -> tuple[dict, dict]:
    """Evaluate on the guard set and against the champion, decide, choose the retriever to
    ship, and keep the run.

    Returns metrics.json's content — ``bm25``, ``base``, [``champion``,] ``finetuned`` and
    ``shipped`` on the validation set, ``guard`` with the same labels, ``retriever`` — and
    the promotion record.
    """
    from datetime import datetime, timezone

    from tasks.model_card import card_section, update_model_card
    from tasks.promotion import already_champion, decide_promotion
    from tasks.registry import find_run, new_run_id, read_champion
    from tasks.report import metric_value

    fingerprint = stages.model_fingerprint(model_dir)
    known_run = find_run(out, fingerprint)
    run_id = known_run or new_run_id(datetime.now(timezone.utc), fingerprint)
    champion = read_champion(out)
    is_champion = champion is not None and champion.model_fingerprint == fingerprint
    rival = champion if champion is not None and not is_champion else None
    models = {"base": base_path, **({"champion": str(rival.model_path)} if rival else {}), "finetuned": str(model_dir)}
    if champion is not None and not rival:  # planned for a rival that turned out to be this model
        run.total -= 1 + bool(settings.guard_dataset)

    val_grids = {"base": grids["base"]}
    if rival:
        val_grids.update(evaluate_models(run, "evaluate", {"champion": models["champion"]}, val_dataset, settings,
                                         run_id=rival.run_id))
    val_grids["finetuned"] = grids["finetuned"]
    guard_grids = evaluate_models(run, "guard", models, settings.guard_dataset, settings) if settings.guard_dataset else {}
    rows = table_rows(val_grids)
    guard = table_rows(guard_grids) if guard_grids else {}

    ndcg = lambda m: metric_value(m, "ndcg@10") if m else None  # noqa: E731
    if is_champion:
        decision = already_champion(champion.run_id)
    else:
        decision = decide_promotion(
            ndcg(rows["finetuned"]), ndcg(rows.get("champion", rows["base"])),
            challenger_guard=ndcg(guard.get("finetuned")), base_guard=ndcg(guard.get("base")),
            guard_margin_pts=settings.promotion_guard_margin, min_gain_pts=settings.promotion_min_gain,
            incumbent=f"champion (run {rival.run_id})" if rival else "base model",
        )
    now_champion = run_id if decision.promote or is_champion else (champion.run_id if champion else None)
    serving = "finetuned" if decision.promote or is_champion else "champion" if rival else "base"
    retriever = ship_retriever(val_grids, serving, models[serving], settings)
    rows, guard = table_rows(val_grids, retriever), table_rows(guard_grids, retriever) if guard_grids else {}
    promotion = {**decision.to_dict(), "run_id": run_id, "run_dir": f"runs/{run_id}", "new_run": known_run is None,
                 "champion": now_champion, "retriever": retriever}
    run.logger.info("shipped retriever: %s with the %s model (validation NDCG@10 %.4f; BM25 alone %.4f)",
                    retriever["description"], serving, retriever["validation_ndcg@10"][retriever["label"]],
                    retriever["validation_ndcg@10"]["bm25"])

    # The retriever this run's model ships with whenever it is the champion (card and run record).
    own_retriever = retriever if serving == "finetuned" else ship_retriever(val_grids, "finetuned", str(model_dir),
                                                                             settings)
    # The card goes in before the model is copied into runs/<id>/, so the copy carries it.
    update_model_card(model_dir, card_section(
        run_id=run_id,
        data={"training pairs": trained.get("n_pairs"), "epochs": trained.get("epochs"),
              "validation questions": len(_json(val_dataset)["queries"]),
              "guard set": str(settings.guard_dataset) if settings.guard_dataset else "none"},
        settings={k: v for k, v in settings.model_dump(mode="json").items() if k in _CARD_SETTINGS},
        validation=rows, guard=guard or None, promotion=promotion, retriever=own_retriever,
    ))
    record = {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "base_model": settings.resolved_base_model(),
              "scores": {"validation_ndcg@10": ndcg(rows["finetuned"]), "guard_ndcg@10": ndcg(guard.get("finetuned"))},
              # What flows.query searches with once this run is the champion: its model and this retriever.
              "retriever": {k: v for k, v in own_retriever.items() if k != "model_path"}}
    run.run("promotion", stages.register_and_promote, out, run_id, model_dir, fingerprint, decision.promote, record)
    run.note("promotion", run_id=run_id, promoted=decision.promote, reason=decision.reason)
    return {**rows, **({"guard": guard} if guard else {}), "retriever": retriever}, promotion


def human_question_rows(
    run: StageRunner, settings: Settings, out: Path, chunks_path: str, base_path: str, model_dir: Path,
    rival: Path | None, planned_champion: bool, shipped: dict | None = None,
) -> dict[str, dict] | None:
    """Base, [champion,] fine-tuned on the questions people wrote about these PDFs, or None
    when there is no such file or none of its questions was found in the chunks.

    metrics.json's ``human`` (same labels as ``guard``). Report only: nothing here feeds
    back into the epoch, α or promotion, which were all decided before this runs.
    """
    from tasks.human_questions import questions_file

    path = questions_file(settings.human_questions, Path(settings.pdf_dir))
    if path is None:
        return None
    found = run.run("human_questions", stages.human_questions, str(path), chunks_path, out / "human_dataset.json",
                    outputs=[out / "human_dataset.json"])
    run.note("human_questions", file=str(path), questions=found.n_questions, resolved=found.n_resolved,
             unresolved=len(found.unresolved), on_training_chunks=found.n_on_train_chunks,
             unresolved_questions=found.unresolved)
    if found.unresolved:
        run.logger.warning("%d of %d questions in %s were not found in the chunks (summary.json lists them)",
                           len(found.unresolved), found.n_questions, path)
    if not found.dataset:
        run.total -= 2 + planned_champion
        return None
    if planned_champion and rival is None:  # the champion is this run's model
        run.total -= 1
    models = {"base": base_path, **({"champion": str(rival)} if rival else {}), "finetuned": str(model_dir)}
    return table_rows(evaluate_models(run, "human", models, found.dataset, settings, queries=found.n_resolved),
                      shipped)


# The settings a model card names: what data and training made the model.
_CARD_SETTINGS = ("profile", "base_model", "pooling", "llm_backend", "llm_model", "chunk_size", "chunk_overlap",
                  "chunk_by_section",
                  "val_ratio", "seed", "epochs", "batch_size", "learning_rate", "warmup_steps", "loss_scale",
                  "max_seq_length", "hard_negatives", "hard_negative_miner", "cached_loss", "interpolation_alphas",
                  "bm25_tokenizer", "fusion_weights",
                  "promotion_guard_margin", "promotion_min_gain")


def _json(path: str | Path) -> dict:
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))


TABLE_ROWS = ("bm25", "base", "champion", "finetuned", "shipped")


def validation_rows(metrics: dict) -> dict:
    """The validation-set columns of metrics.json, in table order (BM25, base, champion,
    fine-tuned, shipped)."""
    return {k: metrics[k] for k in TABLE_ROWS if k in metrics}


def publish_generation_report(out: Path, stats: dict, round_trip: dict | None) -> None:
    """generation_report.md/.json in the output folder, and the Prefect artifact ``generation-report``."""
    from tasks.generation_report import ARTIFACT_KEY, write_generation_report

    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=write_generation_report(out, stats, round_trip),
        description="Question generation: chunks asked and skipped, questions kept and dropped (with examples)",
    )


def publish_skipped_inputs(skipped: list[dict[str, str]], settings: Settings) -> None:
    """The table of PDFs the run could not use, as the Prefect artifact ``skipped-inputs``."""
    from tasks.skipped_inputs import ARTIFACT_KEY, skipped_markdown

    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=skipped_markdown(skipped, str(settings.pdf_dir)),
        description="Input files the run could not use, why, and what to do",
    )


def write_outputs(out: Path, metrics: dict, summary: dict, settings: Settings) -> None:
    """metrics.json, summary.json, report.md, metrics.png, and the tables as Prefect artifacts.

    A run registered for the first time gets the same files in ``runs/<id>/``.
    """
    from prefect.artifacts import create_link_artifact

    from tasks.chart import metrics_chart_png
    from tasks.fileio import write_bytes_atomic
    from tasks.report import COMPARISONS, HUMAN_TITLE, human_note, metrics_table, render_report, retriever_lines

    validation, guard, human = validation_rows(metrics), metrics.get("guard"), metrics.get("human")
    promotion = summary.get("promotion")
    files = {
        "metrics.json": json_text(metrics),
        "summary.json": json_text(summary),
        "report.md": render_report(validation, summary, settings.model_dump(mode="json"), guard=guard,
                                   promotion=promotion, chart="metrics.png", human=human,
                                   retriever=metrics.get("retriever")),
        "metrics.png": metrics_chart_png({"validation set": validation, "guard set": guard or {},
                                          "questions written by people": human or {}}),
    }
    targets = [out]
    if promotion and promotion.get("new_run"):
        targets.append(out / promotion["run_dir"])  # a new run folder: these files do not exist there yet
    for folder in targets:
        for name, content in files.items():
            if isinstance(content, bytes):
                write_bytes_atomic(folder / name, content)
            else:
                write_text_atomic(folder / name, content)

    markdown = f"## Retrieval on the validation set\n\n{metrics_table(validation, changes=COMPARISONS)}\n"
    if guard:
        markdown += f"\n## Retrieval on the guard set\n\n{metrics_table(guard, changes=COMPARISONS)}\n"
    if human:
        markdown += (f"\n## {HUMAN_TITLE}\n\n{metrics_table(human, changes=COMPARISONS)}\n\n"
                     f"_{human_note(summary['stages'].get('human_questions') or {})}_\n")
    if metrics.get("retriever"):
        markdown += "\n## Shipped retriever\n\n" + "\n".join(retriever_lines(metrics["retriever"], validation)) + "\n"
    if promotion:
        verdict = "promoted" if promotion["promote"] else "not promoted"
        markdown += f"\n**Run `{promotion['run_id']}`: {verdict}** — {promotion['reason']}\n"
    markdown += f"\nChart: `{(out / 'metrics.png').resolve()}`\n\nOutput: `{out.resolve()}`"
    create_markdown_artifact(
        key="finetune-metrics", markdown=markdown,
        description="Base, champion and fine-tuned model on the validation, guard and human-written questions",
    )
    # The UI cannot show a local file inline; a link artifact names the chart.
    create_link_artifact(
        key="finetune-metrics-chart", link=(out / "metrics.png").resolve().as_uri(), link_text="metrics.png",
        description="Bar chart of the main metrics (base, fine-tuned, champion)",
    )


def json_text(obj: Any) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def main(argv: list[str] | None = None, run_flow: Callable[..., dict] = finetune_bce) -> int:
    from flows.settings_cli import SettingsError, build_parser, settings_from_args
    from tasks.report import COMPARISONS, console_table

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
    metrics, promotion = result["metrics"], result["summary"].get("promotion")
    print()
    print("validation set (questions the LLM wrote about held-out documents; chooses the epoch, α, promotion, retriever)")
    print(console_table(validation_rows(metrics), changes=COMPARISONS))
    if metrics.get("guard"):
        print("\nguard set (general questions written by people)")
        print(console_table(metrics["guard"], changes=COMPARISONS))
    if metrics.get("human"):
        found = result["summary"]["stages"].get("human_questions") or {}
        print(f"\nquestions written by people about these PDFs ({found.get('resolved')} of {found.get('questions')} "
              "found in the chunks; report only)")
        print(console_table(metrics["human"], changes=COMPARISONS))
    if metrics.get("retriever"):
        r = metrics["retriever"]
        print(f"\nshipped retriever: {r['description']}" + (f" + the {r['model']} model" if r["kind"] != "bm25" else "")
              + " (chosen on the validation questions; `python -m flows.query` searches with it)")
    if promotion:
        verdict = "promoted" if promotion["promote"] else "not promoted"
        print(f"\nrun {promotion['run_id']}: {verdict} — {promotion['reason']}")
        if promotion.get("champion"):
            print(f"champion: {Path(result['summary']['output_dir']) / 'runs' / promotion['champion'] / 'model'}")
    print(f"\nOutput folder: {result['summary']['output_dir']}")
    return 0


if __name__ == "__main__":
    from flows.signals import exit_cleanly_on_signals

    # SIGTERM must unwind like Ctrl-C, or the local Prefect server outlives the run.
    sys.exit(exit_cleanly_on_signals(main))
