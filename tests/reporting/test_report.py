"""Formatting of the metrics tables and report.md."""

from __future__ import annotations

from tasks.reporting.tables import (
    CHANGE_HEADER,
    MAIN_KEYS,
    console_table,
    format_change,
    metric_value,
    metrics_table,
    render_report,
)

BASE = {
    "cosine_accuracy@1": 0.40,
    "cosine_accuracy@5": 0.70,
    "cosine_mrr@10": 0.52,
    "cosine_ndcg@10": 0.60,
    "cosine_map@100": 0.55,
    "cosine_recall@10": 0.90,
    "cosine_precision@1": 0.40,
}
TUNED = {**BASE, "cosine_accuracy@1": 0.432, "cosine_mrr@10": 0.505, "cosine_ndcg@10": 0.60}


def test_markdown_table_layout_values_and_change_sign():
    lines = metrics_table({"base": BASE, "fine-tuned": TUNED}).splitlines()
    assert lines[0] == f"| metric | base | fine-tuned | {CHANGE_HEADER} |"
    assert lines[1] == "|---|---:|---:|---:|"
    assert len(lines) == 2 + len(MAIN_KEYS)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert list(rows) == list(MAIN_KEYS)
    assert rows["accuracy@1"] == "| accuracy@1 | 0.4000 | 0.4320 | +3.2 |"
    assert rows["mrr@10"] == "| mrr@10 | 0.5200 | 0.5050 | -1.5 |"
    assert rows["ndcg@10"] == "| ndcg@10 | 0.6000 | 0.6000 | +0.0 |"
    assert "precision@1" not in rows  # not a main key


def test_change_is_last_minus_first_and_never_negative_zero():
    table = metrics_table({"a": {"cosine_mrr@10": 0.5}, "b": {"cosine_mrr@10": 0.9}, "c": {"cosine_mrr@10": 0.6}},
                          keys=("mrr@10",))
    assert table.splitlines()[0] == f"| metric | a | b | c | {CHANGE_HEADER} |"
    assert table.splitlines()[2].endswith("| +10.0 |")
    assert format_change(0.5, 0.5 - 1e-9) == "+0.0"
    assert format_change(0.1, 0.3) == "+20.0"
    assert format_change(None, 0.3) == ""


def test_single_model_has_no_change_column_and_missing_metrics_show_a_dash():
    lines = metrics_table({"only": {"cosine_ndcg@10": 0.5}}, keys=("ndcg@10", "mrr@10")).splitlines()
    assert lines[0] == "| metric | only |"
    assert lines[2:] == ["| ndcg@10 | 0.5000 |", "| mrr@10 | – |"]
    assert metrics_table({}) == "_no metrics_"


def test_metric_value_ignores_the_similarity_prefix():
    assert metric_value({"cosine_ndcg@10": 0.7}, "ndcg@10") == 0.7
    assert metric_value({"dot_ndcg@10": 0.6}, "ndcg@10") == 0.6
    assert metric_value({"ndcg@10": 0.5}, "ndcg@10") == 0.5
    assert metric_value({"cosine_ndcg@100": 0.5}, "ndcg@10") is None


def test_console_table_is_aligned_plain_text():
    text = console_table({"base": BASE, "fine-tuned": TUNED})
    lines = text.splitlines()
    assert "|" not in text
    assert lines[0].split() == ["metric", "base", "fine-tuned", "change", "(pts)"]
    # Numbers are right-aligned, so every line ends at the same column.
    assert len({len(line) for line in lines}) == 1
    assert lines[1].split() == ["accuracy@1", "0.4000", "0.4320", "+3.2"]
    assert console_table({}) == "(no metrics)"


def test_report_has_table_sizes_models_settings_and_timings():
    summary = {
        "output_dir": "/runs/x",
        "base_model": {"spec": "bundled:multilingual-e5-small", "path": "/models/base/e5", "source": "bundled",
                       "pooling": "mean"},
        "stages": {
            "documents": {"seconds": 1.24, "cached": False, "files": 3, "documents": 3, "pages": 12, "skipped": 0},
            "chunks": {"seconds": 0.5, "cached": True, "train_chunks": 40, "val_chunks": 10},
            "questions": {"seconds": 120.0, "cached": False, "train_queries": 40, "val_queries": 10},
            "training": {"seconds": 30.0, "cached": False, "pairs": 40, "epochs": 3, "steps_run": 15},
        },
        "total_seconds": 151.74,
    }
    settings = {"profile": "cpu", "base_model": None, "epochs": 3, "batch_size": 8, "learning_rate": 2e-5,
                "max_seq_length": None, "seed": 42, "llm_api_key": "secret"}
    report = render_report({"base": BASE, "finetuned": TUNED}, summary, settings)

    assert report.startswith("# ")
    assert "| accuracy@1 | 0.4000 | 0.4320 | +3.2 |" in report
    assert "finetuned minus base" in report
    for line in ("- training questions: 40", "- validation questions: 10", "- validation chunks: 10",
                 "- PDF documents: 3", "- training pairs: 40"):
        assert line in report
    assert "`/models/base/e5` (source: bundled, pooling: mean)" in report
    assert "- fine-tuned: `/runs/x/model`" in report
    assert "| epochs | 3 |" in report and "| learning_rate | 2e-05 |" in report
    assert "| base_model | bundled:multilingual-e5-small |" in report  # resolved from the summary
    assert "| max_seq_length | (default) |" in report
    assert "secret" not in report  # only the main settings
    assert "| documents | 1.2 | no |" in report and "| chunks | 0.5 | yes |" in report
    assert "| **total** | 151.7 | |" in report


def test_report_tolerates_a_minimal_summary():
    report = render_report({"base": BASE}, {}, {})
    assert "| accuracy@1 | 0.4000 |" in report
    assert "Stage timings" not in report and "## Data" not in report


def test_report_shows_how_epoch_and_alpha_were_chosen_and_warns_of_the_bias():
    training = {
        "best_checkpoint": "/x/work/train-e5/checkpoint-24",
        "best_val_ndcg": 0.9349,
        "alpha": 0.5,
        "alpha_results": [
            {"alpha": 0.0, "val_ndcg": 0.9349, "guard_ndcg": 0.9081},
            {"alpha": 0.5, "val_ndcg": 0.9566, "guard_ndcg": 0.9162},
            {"alpha": 1.0, "val_ndcg": 0.9349, "guard_ndcg": None},
        ],
    }
    md = render_report({"base": {}, "finetuned": {}}, {"stages": {"training": training}}, {})
    section = md.split("## Model selection", 1)[1].split("\n## ", 1)[0]
    assert "`checkpoint-24` (validation NDCG@10 0.9349)" in section
    assert "chosen α = 0.5" in section
    assert "| 0.50 | 0.9566 | 0.9162 |" in section
    assert "| 1.00 | 0.9349 |  |" in section
    assert "optimistic" in section


def test_report_has_no_selection_section_without_selection():
    md = render_report({"base": {}, "finetuned": {}}, {"stages": {"training": {"steps_run": 3}}}, {})
    assert "## Model selection" not in md
