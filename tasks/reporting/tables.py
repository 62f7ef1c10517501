"""Metrics tables and the run report, as text.

Pure functions: they format, the flow writes. ``rows`` map a model label (``base``,
``finetuned``, a path…) to the metrics of :func:`tasks.evaluation.evaluate.evaluate_model`;
the first model is the baseline and the *change* column is the last model minus the
first, in percentage points.

Example::

    >>> rows = {"base": {"cosine_accuracy@1": 0.50}, "finetuned": {"cosine_accuracy@1": 0.62}}
    >>> print(metrics_table(rows, keys=("accuracy@1",)))
    | metric | base | finetuned | change (pts) |
    |---|---:|---:|---:|
    | accuracy@1 | 0.5000 | 0.6200 | +12.0 |
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.retrieval.metrics import metric_value

MAIN_KEYS: tuple[str, ...] = ("accuracy@1", "accuracy@5", "mrr@10", "ndcg@10", "map@100", "recall@10")

CHANGE_HEADER = "change (pts)"

# The settings a reader needs to reproduce or judge a run, in reading order.
MAIN_SETTINGS: tuple[str, ...] = (
    "profile",
    "base_model",
    "pooling",
    "llm_backend",
    "llm_model",
    "questions_per_chunk",
    "chunk_size",
    "chunk_overlap",
    "val_ratio",
    "epochs",
    "batch_size",
    "learning_rate",
    "warmup_steps",
    "loss_scale",
    "max_seq_length",
    "seed",
)

Rows = Mapping[str, Mapping[str, float]]

HUMAN_TITLE = "Retrieval on questions written by people"

# The change columns of the pipeline's tables: what training did (against the base model
# and the champion), and what the shipped retriever adds to a plain keyword index.
COMPARISONS: tuple[tuple[str, str], ...] = (("finetuned", "base"), ("finetuned", "champion"), ("shipped", "bm25"))


def format_change(first: float | None, last: float | None) -> str:
    """Last minus first in percentage points with a sign: ``+3.2``, ``-0.5``, ``+0.0``.

    >>> format_change(0.40, 0.432)
    '+3.2'
    """
    if first is None or last is None:
        return ""
    points = round((last - first) * 100, 1)
    return f"{points + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0


Comparisons = Sequence[tuple[str, str]]


def table_cells(
    rows: Rows, keys: Sequence[str] = MAIN_KEYS, vs: str | None = None, changes: Comparisons | None = None,
) -> tuple[list[str], list[list[str]]]:
    """Header and body cells shared by the markdown and the console tables.

    Without ``changes`` the change column is the last model minus the first, and ``vs``
    names a model column to add a second change column for (last model minus it), e.g.
    the champion. ``changes`` lists ``(model, against)`` pairs instead: one column
    ``model vs against (pts)`` for each pair whose two models are both in ``rows``.
    """
    models = list(rows)
    if changes is None:
        pairs = [(models[-1], models[0], CHANGE_HEADER)] if len(models) > 1 else []
        if vs is not None and vs in rows and vs not in (models[0], models[-1]):
            pairs.append((models[-1], vs, f"vs {vs} (pts)"))
    else:
        pairs = [(new, old, f"{new} vs {old} (pts)") for new, old in changes if new in rows and old in rows]
    header = ["metric", *models, *(title for _, _, title in pairs)]
    body = []
    for key in keys:
        values = {m: metric_value(rows[m], key) for m in models}
        cells = [key, *("–" if v is None else f"{v:.4f}" for v in values.values())]
        cells += [format_change(values[old], values[new]) for new, old, _ in pairs]
        body.append(cells)
    return header, body


def metrics_table(rows: Rows, keys: Sequence[str] = MAIN_KEYS, vs: str | None = None,
                  changes: Comparisons | None = None) -> str:
    """A markdown table: one row per metric, one column per model, and the changes.

    With a single model there is nothing to compare and no change column.
    """
    if not rows:
        return "_no metrics_"
    return markdown_grid(*table_cells(rows, keys, vs, changes))


def markdown_grid(header: Sequence[str], body: Sequence[Sequence[str]], left: Collection[int] = (0,)) -> str:
    """A markdown table of text cells: the columns at ``left`` aligned left, the rest
    (numbers) right; ``|`` and line breaks in a cell are escaped.

    >>> print(markdown_grid(["model", "runs"], [["base", "3"]]))
    | model | runs |
    |---|---:|
    | base | 3 |
    """
    rule = "|" + "".join("---|" if i in left else "---:|" for i in range(len(header)))
    return "\n".join([_md_row(header), rule, *(_md_row(cells) for cells in body)])


def console_table(rows: Rows, keys: Sequence[str] = MAIN_KEYS, vs: str | None = None,
                  changes: Comparisons | None = None) -> str:
    """The same table as plain text with aligned columns, for the terminal.

    >>> print(console_table({"base": {"mrr@10": 0.5}, "finetuned": {"mrr@10": 0.6}}, keys=("mrr@10",)))
    metric    base  finetuned  change (pts)
    mrr@10  0.5000     0.6000         +10.0
    """
    if not rows:
        return "(no metrics)"
    header, body = table_cells(rows, keys, vs, changes)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    return "\n".join(line(r) for r in [header, *body])


def render_report(
    metrics: Rows,
    summary: Mapping[str, Any],
    settings_dump: Mapping[str, Any],
    *,
    guard: Rows | None = None,
    promotion: Mapping[str, Any] | None = None,
    chart: str | None = None,
    human: Rows | None = None,
    retriever: Mapping[str, Any] | None = None,
) -> str:
    """report.md of a run.

    Args:
        metrics: ``{model label: metrics}``, the baseline first (the flow's ``metrics.json``).
        summary: The flow's ``summary.json``. Read, when present: ``output_dir``,
            ``model_path``, ``base_model`` (``spec``, ``path``, ``source``, ``pooling``),
            ``stages`` (``{stage: {"seconds", "cached", counts…}}``) and ``total_seconds``.
        settings_dump: ``Settings.model_dump(mode="json")``.
        guard: ``{model label: metrics}`` on the guard set, same labels as ``metrics``.
        promotion: The promotion record (``tasks.registry.promotion.PromotionDecision.to_dict()``
            plus ``run_id``, ``champion``): a section saying whether the run was promoted and why.
        chart: Path of the metrics chart, relative to the report, to show under the tables.
        human: ``{model label: metrics}`` on the questions people wrote about these PDFs
            (``tasks.evaluation.human_questions``); its counts come from ``stages["human-questions"]``.
        retriever: What search serves (``tasks.registry.release.shipped``).
    """
    stages: Mapping[str, Mapping[str, Any]] = summary.get("stages") or {}
    parts = ["# Embedding fine-tuning report", ""]

    changes = COMPARISONS if "bm25" in metrics else None
    parts += ["## Retrieval on the validation set", "", metrics_table(metrics, MAIN_KEYS, vs="champion", changes=changes),
              ""]
    if changes:
        parts += ["_Rows: `bm25` is a keyword index over the same chunks; `base`, `champion` and `finetuned` "
                  "are the dense models alone; `shipped` is the retriever this run ships (below). "
                  "Changes are in percentage points._", ""]
    elif len(metrics) > 1:
        first, last = list(metrics)[0], list(metrics)[-1]
        vs = "; vs champion: minus the champion" if "champion" in metrics else ""
        parts += [f"_{CHANGE_HEADER}: {last} minus {first}{vs}, in percentage points._", ""]
    if retriever:
        parts += ["## Shipped retriever", "", *retriever_lines(retriever, metrics), ""]
    if guard:
        parts += [
            "## Retrieval on the guard set",
            "",
            "General Chinese questions written by people (CMRC 2018, `data/guard/`): what the model "
            "could do before fine-tuning, and must not forget.",
            "",
            metrics_table(guard, MAIN_KEYS, vs="champion", changes=changes),
            "",
        ]
    if human:
        parts += [f"## {HUMAN_TITLE}", "", metrics_table(human, MAIN_KEYS, vs="champion", changes=changes), "",
                  *human_lines(stages.get("human-questions") or {}), ""]
    if chart:
        parts += [f"![main metrics: base, fine-tuned, champion]({chart})", ""]
    if promotion:
        parts += ["## Promotion", "", *_promotion_lines(promotion), ""]

    selection = _selection_lines(stages.get("training") or {})
    if selection:
        parts += ["## Model selection", "", *selection, ""]

    data = _dataset_lines(stages)
    if data:
        parts += ["## Data", "", *data, ""]

    skipped = (stages.get("documents") or {}).get("skipped_files") or []
    if skipped:
        from tasks.documents.skipped import skipped_table

        parts += ["## Skipped input files", "", skipped_table(skipped), ""]

    models = _model_lines(summary)
    if models:
        parts += ["## Models", "", *models, ""]

    parts += ["## Settings", "", "| setting | value |", "|---|---|"]
    for name in MAIN_SETTINGS:
        if name in settings_dump:
            value = settings_dump[name]
            if name == "base_model" and value is None:
                value = (summary.get("base_model") or {}).get("spec")
            parts.append(f"| {name} | {_md_escape(_show(value))} |")
    parts.append("")

    if stages:
        parts += ["## Stage timings", "", "| stage | seconds | cached |", "|---|---:|---|"]
        for name, info in stages.items():
            seconds = info.get("seconds")
            cached = "yes" if info.get("cached") else "no"
            parts.append(f"| {name} | {'' if seconds is None else f'{seconds:.1f}'} | {cached} |")
        if summary.get("total_seconds") is not None:
            parts.append(f"| **total** | {summary['total_seconds']:.1f} | |")
        parts.append("")

    return "\n".join(parts)


def human_note(info: Mapping[str, Any]) -> str:
    """One sentence on the human-written questions: how many were used, and that they chose nothing.

    >>> human_note({"file": "q.json", "questions": 10, "resolved": 9, "on_training_chunks": 7})
    '9 of 10 questions in `q.json` were found in the chunks (7 of them in chunks the model was trained on, with LLM questions); report only: they chose no epoch, no α and no promotion.'
    >>> human_note({"questions": 10, "prompt_examples": 3, "resolved": 7})
    '7 of 10 questions were found in the chunks; 3 more were examples in the question-writing prompt and are left out; report only: they chose no epoch, no α and no promotion.'
    """
    where = f" in `{info['file']}`" if info.get("file") else ""
    examples = info.get("prompt_examples") or 0
    shown = (f"; {examples} more were examples in the question-writing prompt and are left out"
             if examples else "")
    trained = info.get("on_training_chunks")
    seen = (f" ({trained} of them in chunks the model was trained on, with LLM questions)"
            if trained is not None else "")
    return (f"{info.get('resolved', '?')} of {info.get('questions', '?')} questions{where} were found in the chunks"
            f"{seen}{shown}; report only: they chose no epoch, no α and no promotion.")


def human_lines(info: Mapping[str, Any], limit: int = 20) -> list[str]:
    """The note under the human-questions table, and the questions not found, with why."""
    lines = [f"_{human_note(info)}_"]
    missing = info.get("unresolved_questions") or []
    if missing:
        lines += ["", "Not found in the chunks (not evaluated):", ""]
        lines += [f"- `{u['id']}`: {u['reason']}" for u in missing[:limit]]
        if len(missing) > limit:
            lines.append(f"- … and {len(missing) - limit} more (`summary.json` → `stages → human-questions`)")
    return lines


def retriever_lines(retriever: Mapping[str, Any], validation: Rows | None = None,
                    served: str = "`python -m flows.query` searches with exactly this retriever") -> list[str]:
    """What the run ships and why: the spec, its model, and every candidate on validation;
    ``served`` says when search uses it.

    >>> r = {"label": "hybrid w=0.4", "description": "BM25 + dense, z-score fusion with dense weight 0.4",
    ...      "model": "finetuned", "validation_ndcg@10": {"bm25": 0.9, "hybrid w=0.4": 0.95, "dense": 0.93}}
    >>> retriever_lines(r)[0]
    '- shipped: **BM25 + dense, z-score fusion with dense weight 0.4**, dense model: `finetuned`'
    """
    scores = retriever.get("validation_ndcg@10") or {}
    lines = [f"- shipped: **{retriever.get('description', retriever.get('label'))}**"
             + (f", dense model: `{retriever['model']}`" if retriever.get("kind") != "bm25" else "")]
    if scores:
        best = retriever.get("label")
        cells = ", ".join(f"{'**' if k == best else ''}{k} {v:.4f}{'**' if k == best else ''}" for k, v in scores.items())
        # The champion's retriever was chosen by its own run, on that run's questions.
        whose = f" of run `{retriever['run_id']}`" if retriever.get("model") == "champion" else ""
        lines.append(f"- chosen on the validation questions{whose} (NDCG@10): {cells}")
    if retriever.get("default") and retriever.get("margin_se"):
        gains = retriever.get("gain_over_default_se") or {}
        ahead = {k: v for k, v in gains.items() if v > retriever["margin_se"]}
        lines.append(f"- rule: ship `{retriever['default']}` unless another retriever beats it on validation by more "
                     f"than {retriever['margin_se']:g} standard errors (paired, per question); "
                     + (f"beyond it: {', '.join(f'{k} ({v:+.1f})' for k, v in ahead.items())}" if ahead else
                        "none did" + (f" (largest gain: {max(gains.values()):+.1f})" if gains else "")))
    dense, bm25 = (metric_value(validation[k], "ndcg@10") if validation and k in validation else None
                   for k in ("finetuned", "bm25"))
    if dense is not None and bm25 is not None and dense < bm25:
        lines.append(f"- the fine-tuned dense model alone trails BM25 on validation by {(bm25 - dense) * 100:.1f} "
                     "NDCG@10 pts")
    if retriever.get("rerank_k"):
        lines.append(f"- the reranker re-scores the first stage's top {retriever['rerank_k']}: the run's cross-encoder, "
                     "kept in its run folder (`runs/<run_id>/reranker`, a sentence-transformers `CrossEncoder`)")
    lines.append(f"- {served}")
    return lines


def _promotion_lines(p: Mapping[str, Any]) -> list[str]:
    verdict = "**promoted**" if p.get("promote") else "**not promoted**"
    lines = [f"- run `{p.get('run_id', '?')}`: {verdict} — {p.get('reason', '')}"]
    if p.get("serving"):
        lines.append(f"- {p['serving']} (`current.json`; `python -m flows.query` searches with it)")
    if p.get("champion"):
        lines.append(f"- champion now: run `{p['champion']}` (`current.json`, `current/`)")
    else:
        lines.append("- champion now: none promoted yet; the base model is the reference")
    if p.get("guard_margin_pts") is not None:
        lines.append(
            f"- rule: beat the {p.get('incumbent', 'champion')} on validation NDCG@10 by more than "
            f"{p.get('min_gain_pts') or 0:.1f} pts and lose at most {p['guard_margin_pts']:.1f} pts of guard "
            "NDCG@10 against the base model"
        )
    return lines


def _selection_lines(training: Mapping[str, Any]) -> list[str]:
    """How the epoch and the interpolation weight α were chosen, with the numbers behind the choice.

    Both are chosen on the validation set, so its table above is optimistic by the choice:
    the report says so, and shows the plain fine-tuned model (α = 1) beside the pick.
    """
    lines = []
    if training.get("best_checkpoint"):
        ndcg = training.get("best_val_ndcg")
        shown = f" (validation NDCG@10 {ndcg:.4f})" if ndcg is not None else ""
        lines.append(f"- epoch kept: `{Path(training['best_checkpoint']).name}`{shown}")
    rows = training.get("alpha_results") or []
    if rows:
        lines += [
            f"- weight interpolation: model = α·fine-tuned + (1−α)·base; chosen α = {_show(training.get('alpha'))}",
            "",
            "| α | validation NDCG@10 | guard NDCG@10 |",
            "|---:|---:|---:|",
        ]
        for r in rows:
            guard = r.get("guard_ndcg")
            shown = "not needed" if r.get("guard_skipped") else "" if guard is None else f"{guard:.4f}"
            lines.append(f"| {r['alpha']:.2f} | {r['val_ndcg']:.4f} | {shown} |")
        lines.append("")
    if lines:
        lines.append(
            "_The epoch and α were chosen on the validation questions, so the validation table is "
            "optimistic by that choice; `bench/` measures on held-out questions written by people._"
        )
    return lines


def _dataset_lines(stages: Mapping[str, Mapping[str, Any]]) -> list[str]:
    wanted = [
        ("documents", "documents", "PDF documents"),
        ("documents", "pages", "pages"),
        ("documents", "skipped", "PDF files skipped"),
        ("chunks", "train_chunks", "training chunks"),
        ("chunks", "val_chunks", "validation chunks"),
        ("questions", "train_queries", "training questions"),
        ("questions", "val_queries", "validation questions"),
        ("questions", "val_corpus_chunks", "chunks searched for each validation question"),
        ("training", "pairs", "training pairs"),
        ("training", "epochs", "epochs"),
        ("training", "steps_run", "training steps run"),
    ]
    lines = [
        f"- {label}: {stages[stage][key]}"
        for stage, key, label in wanted
        if stage in stages and stages[stage].get(key) is not None
    ]
    return lines + _layout_lines(stages)


# Page furniture the reader drops; the layout's other kinds ("table cell", "footnote") are moved
# into chunks of their own, which the chunks stage counts.
_FURNITURE = ("running header or footer", "page number", "watermark", "margin line number")


def _layout_lines(stages: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What the reader left out of the running text, and what the chunker kept apart from it."""
    lines = []
    left_out = (stages.get("documents") or {}).get("left_out")
    if left_out is not None:
        dropped = [f"{k} {left_out[k]}" for k in _FURNITURE if left_out.get(k)]
        lines.append("- page furniture left out of the text (text pieces): " + (", ".join(dropped) or "none"))
    chunks = stages.get("chunks") or {}
    if "table_chunks" in chunks:
        lines.append(
            f"- chunks apart from the running text: {chunks['table_chunks']} of tables (as markdown), "
            f"{chunks.get('footnote_chunks', 0)} of footnotes, {chunks.get('references_chunks', 0)} of reference "
            "lists. They stay in the corpus, search ranks them like any chunk, and the LLM is asked about them "
            "unless `skip_low_value_chunks` finds them mostly numbers or references (docs/architecture.md, "
            "Chunks)")
    return lines


def _model_lines(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    base = summary.get("base_model") or {}
    if base:
        where = base.get("path") or base.get("spec")
        extra = ", ".join(f"{k}: {base[k]}" for k in ("source", "pooling") if base.get(k))
        lines.append(f"- base: `{where}`" + (f" ({extra})" if extra else ""))
    model_path = summary.get("model_path")
    if not model_path and summary.get("output_dir"):
        model_path = f"{summary['output_dir']}/model"
    if model_path:
        lines.append(f"- fine-tuned: `{model_path}`")
    if summary.get("output_dir"):
        lines.append(f"- output folder: `{summary['output_dir']}`")
    return lines


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_md_escape(c) for c in cells) + " |"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _show(value: Any) -> str:
    return "(default)" if value is None else str(value)
