"""A run's outputs for people: metrics.json, summary.json, report.md, the chart, the Prefect
artifacts, and the tables printed at the end of ``python -m flows.finetune_bce``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact

from tasks.core.fileio import write_bytes_atomic, write_text_atomic
from tasks.core.settings import Settings

TABLE_ROWS = ("bm25", "bm25 expanded", "base", "champion", "finetuned", "shipped")


def validation_rows(metrics: dict) -> dict:
    """The validation-set columns of metrics.json, in table order (BM25, BM25 over the chunks
    with their questions, base, champion,
    fine-tuned, the tuned first stage reranked at each depth, shipped)."""
    order = [*TABLE_ROWS[:-1], *(k for k in metrics if k.startswith("reranked@")), TABLE_ROWS[-1]]
    return {k: metrics[k] for k in order if k in metrics}


def json_text(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def run_summary(out: Path, base: dict, settings: Settings, promotion: dict, stages: dict[str, dict]) -> dict:
    """summary.json: where things are, the promotion record, and each stage's seconds, cache hit and counts."""
    return {
        "output_dir": str(out.resolve()),
        "base_model": {**{k: str(v) if isinstance(v, Path) else v for k, v in base.items()},
                       "spec": settings.resolved_base_model(), "path": str(Path(base["path"]).resolve())},
        "model_path": str((out / "model").resolve()),
        "promotion": promotion,
        "stages": stages,
        "total_seconds": round(sum(s["seconds"] or 0 for s in stages.values()), 2),
    }


def publish_generation_report(out: Path, stats: dict, round_trip: dict | None) -> None:
    """generation_report.md/.json in the output folder, and the Prefect artifact ``generation-report``."""
    from tasks.reporting.generation_report import ARTIFACT_KEY, write_generation_report

    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=write_generation_report(out, stats, round_trip),
        description="Question generation: chunks asked and skipped, questions kept and dropped (with examples)",
    )


def publish_skipped_inputs(skipped: list[dict[str, str]], pdf_dir: Path) -> None:
    """The table of PDFs the run could not use, as the Prefect artifact ``skipped-inputs``."""
    from tasks.documents.skipped import ARTIFACT_KEY, skipped_markdown

    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=skipped_markdown(skipped, str(pdf_dir)),
        description="Input files the run could not use, why, and what to do",
    )


def write_outputs(out: Path, metrics: dict, summary: dict, settings: Settings) -> None:
    """metrics.json, summary.json, report.md, metrics.png, and the tables as Prefect artifacts.

    A run registered for the first time gets the same files in ``runs/<id>/``.
    """
    from tasks.reporting.chart import chart_png
    from tasks.reporting.tables import COMPARISONS, HUMAN_TITLE, human_note, metrics_table, render_report, retriever_lines

    validation, guard, human = validation_rows(metrics), metrics.get("guard"), metrics.get("human")
    promotion = summary.get("promotion")
    files = {
        "metrics.json": json_text(metrics),
        "summary.json": json_text(summary),
        "report.md": render_report(validation, summary, settings.model_dump(mode="json"), guard=guard,
                                   promotion=promotion, chart="metrics.png", human=human,
                                   retriever=metrics.get("retriever")),
        "metrics.png": chart_png(out / "metrics.png", {"validation set": validation, "guard set": guard or {},
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
                     f"_{human_note(summary['stages'].get('human-questions') or {})}_\n")
    if metrics.get("retriever"):
        markdown += "\n## Shipped retriever\n\n" + "\n".join(retriever_lines(metrics["retriever"], validation)) + "\n"
    if promotion:
        verdict = "promoted" if promotion["promote"] else "not promoted"
        markdown += f"\n**Run `{promotion['run_id']}`: {verdict}** — {promotion['reason']}\n"
        if promotion.get("serving"):
            markdown += f"\n{promotion['serving']}\n"
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


def print_results(result: dict) -> None:
    """The tables a finished run prints: validation, guard, people's questions, what shipped."""
    from tasks.reporting.tables import COMPARISONS, console_table

    metrics, summary = result["metrics"], result["summary"]
    promotion = summary.get("promotion")
    print()
    print("validation set (questions the LLM wrote about held-out documents; chooses the epoch, α, promotion, retriever)")
    print(console_table(validation_rows(metrics), changes=COMPARISONS))
    if metrics.get("guard"):
        print("\nguard set (general questions written by people)")
        print(console_table(metrics["guard"], changes=COMPARISONS))
    if metrics.get("human"):
        found = summary["stages"].get("human-questions") or {}
        examples = f", {found['prompt_examples']} were prompt examples" if found.get("prompt_examples") else ""
        print(f"\nquestions written by people about these PDFs ({found.get('resolved')} of {found.get('questions')} "
              f"found in the chunks{examples}; report only)")
        print(console_table(metrics["human"], changes=COMPARISONS))
    if metrics.get("retriever"):
        r = metrics["retriever"]
        print(f"\nshipped retriever: {r['description']}" + (f" + the {r['model']} model" if r["kind"] != "bm25" else "")
              + " (`python -m flows.query` searches with it)")
    if promotion:
        verdict = "promoted" if promotion["promote"] else "not promoted"
        print(f"\nrun {promotion['run_id']}: {verdict} — {promotion['reason']}")
        if promotion.get("serving"):
            print(promotion["serving"])
        if promotion.get("champion"):
            print(f"champion: {Path(summary['output_dir']) / 'runs' / promotion['champion'] / 'model'}")
    print(f"\nOutput folder: {summary['output_dir']}")
