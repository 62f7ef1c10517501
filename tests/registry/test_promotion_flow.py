"""Champion/challenger through the real flow: two runs into one output folder.

Run A (a real fine-tune of the tiny model) beats the base model and is promoted; run B,
trained with a learning rate that wrecks the model, is worse than A on the validation
set: it is kept under runs/ and reported, and not promoted; A stays the champion and
its registered model is untouched. Real PDFs, real tokenizer, real training and
evaluation, the shipped guard set, Prefect for real. After each run, what the report ships
is what ``flows.query`` searches with: the same retriever, and on the run's validation
questions the same NDCG@10 (so the same ranking of the same chunks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.core.caching import model_fingerprint
from tests.sample_pdfs import SAMPLES, first_page_pdf
from tests.tiny_model import make_tiny_st_model

pytestmark = pytest.mark.slow  # runs the whole flow in subprocesses

REPO = Path(__file__).resolve().parents[2]


def _small_pdfs(folder: Path, n: int = 4) -> None:
    folder.mkdir(parents=True)
    for i, src in enumerate(SAMPLES[:n]):
        first_page_pdf(src, folder / f"doc{i}.pdf")
    # People's questions: those whose answer is on these pages are the report's human table.
    shipped = json.loads((REPO / "data" / "pdf" / "human_questions.json").read_text(encoding="utf-8"))
    renamed = {src.name: f"doc{i}.pdf" for i, src in enumerate(SAMPLES[:n])}
    questions = [{**q, "source": renamed[q["source"]]} for q in shipped["questions"] if q["source"] in renamed]
    (folder / "human_questions.json").write_text(json.dumps({"questions": questions}, ensure_ascii=False), "utf-8")


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "flows.finetune_bce", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _served(out: Path, pdfs: Path) -> dict:
    """What flows.query searches with now, and its NDCG@10 on the run's validation questions
    and on people's questions (whose corpus is every chunk: the index flows.query builds,
    when it chunks as the run did)."""
    from flows.query import open_searcher
    from tasks.core.qa_dataset import QADataset
    from tasks.core.settings import Settings
    from tasks.retrieval.metrics import ir_evaluator, metric_value, metrics_from_scores

    opened = open_searcher(pdfs, out, Settings(pdf_dir=pdfs, output_dir=out))
    searcher = opened.searcher
    ndcg = {}
    for name in ("val", "human"):
        dataset = QADataset.load(out / f"{name}_dataset.json")
        evaluator = ir_evaluator(dataset, show_progress_bar=False)
        assert sorted(searcher.chunk_ids) == sorted(evaluator.corpus_ids)  # the run's chunks, not the defaults'
        columns = [searcher.chunk_ids.index(c) for c in evaluator.corpus_ids]
        scores = searcher.scores(evaluator.queries)[:, columns]
        ndcg[name] = metric_value(metrics_from_scores(dataset, scores, "served", evaluator), "ndcg@10")
    return {"spec": searcher.retriever, "lines": opened.lines, "ndcg@10": ndcg["val"], "human_ndcg@10": ndcg["human"]}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, prefect_home):
    tmp = tmp_path_factory.mktemp("promotion")
    _small_pdfs(tmp / "pdfs")
    tiny = make_tiny_st_model(tmp / "tiny-model")
    env = {**os.environ, **prefect_home(tmp / "prefect-home"), "PYTHONUNBUFFERED": "1"}
    common = [
        "--pdf-dir", str(tmp / "pdfs"), "--output-dir", str(tmp / "out"), "--models-dir", str(tmp / "models"),
        "--cache-dir", str(tmp / "cache"), "--base-model", str(tiny), "--llm-backend", "extractive", "--rerank",
        "--bm25-expansion",
        "--chunk-size", "120", "--chunk-overlap", "10", "--batch-size", "4", "--warmup-steps", "0",
        "--val-ratio", "0.5",
        # A random tiny model learns little with its random token embeddings frozen.
        "--no-freeze-embeddings",
        # A random tiny model's guard scores are noise: the guard rule is tested in test_promotion.py.
        "--promotion-guard-margin", "100",
    ]
    out = tmp / "out"
    a = _run([*common, "--epochs", "3", "--learning-rate", "1e-3"], env)
    a_state = {
        "metrics": json.loads((out / "metrics.json").read_text()),
        "summary": json.loads((out / "summary.json").read_text()),
        "current": json.loads((out / "current.json").read_text()) if (out / "current.json").is_file() else None,
        "served": _served(out, tmp / "pdfs"),
    }
    b = _run([*common, "--epochs", "2", "--learning-rate", "0.5"], env)
    b_served = _served(out, tmp / "pdfs")
    return out, a, a_state, b, b_served


def test_first_run_beats_the_base_model_and_is_promoted(two_runs):
    out, a, state, _, _ = two_runs
    promotion = state["summary"]["promotion"]
    assert promotion["incumbent"] == "base model"
    assert promotion["promote"] is True, promotion
    assert promotion["val_gain_pts"] > 0
    assert state["current"]["run_id"] == promotion["run_id"]
    assert "promoted" in a.stdout and "guard set" in a.stdout
    # metrics.json: the validation contract plus the guard set.
    rows = {"bm25", "bm25 expanded", "base", "finetuned", "reranked@20", "shipped"}
    assert set(state["metrics"]) == rows | {"retriever", "guard", "human"}
    assert set(state["metrics"]["guard"]) == set(state["metrics"]["human"]) == rows
    assert (out / "runs" / promotion["run_id"] / "reranker" / "config.json").is_file()
    # The champion ships with the retriever chosen for it, and flows.query reads it from here.
    assert state["current"]["retriever"]["label"] == state["metrics"]["retriever"]["label"]
    assert state["metrics"]["retriever"]["model"] == "finetuned"
    assert 0 <= state["metrics"]["guard"]["finetuned"]["cosine_ndcg@10"] <= 1


def test_worse_second_run_is_kept_reported_and_not_promoted(two_runs):
    out, _, state, b, _ = two_runs
    a_id = state["summary"]["promotion"]["run_id"]
    summary = json.loads((out / "summary.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    promotion = summary["promotion"]
    assert promotion["run_id"] != a_id
    assert promotion["incumbent"] == f"champion (run {a_id})"
    assert promotion["promote"] is False and promotion["val_gain_pts"] <= 0, promotion
    assert promotion["champion"] == a_id
    assert "not promoted" in b.stdout
    # The champion was evaluated on this run's validation and guard sets, next to base and tuned.
    assert list(metrics)[:5] == ["bm25", "bm25 expanded", "base", "champion", "finetuned"]
    assert set(metrics["guard"]) == {"bm25", "bm25 expanded", "base", "champion", "finetuned", "reranked@20", "shipped"}
    # Not promoted: what is shipped is still the champion, with the retriever its own run chose
    # for it (among candidates that included its reranker), measured on this run's questions.
    assert metrics["retriever"]["model"] == "champion" and metrics["retriever"]["run_id"] == a_id
    assert metrics["retriever"]["label"] == state["metrics"]["retriever"]["label"]
    assert "hybrid w=0.5 + rerank@20" in metrics["retriever"]["validation_ndcg@10"]
    assert metrics["champion"] == state["metrics"]["finetuned"]  # same model, same questions
    # Nothing was overwritten: both runs are kept, the pointer still names A.
    runs = sorted(p.name for p in (out / "runs").iterdir() if not p.name.startswith("."))
    assert runs == sorted([a_id, promotion["run_id"]])
    current = json.loads((out / "current.json").read_text())
    assert current["run_id"] == a_id and current["model_path"] == f"runs/{a_id}/model"
    a_record = json.loads((out / "runs" / a_id / "run.json").read_text())
    assert model_fingerprint(out / "runs" / a_id / "model") == a_record["model_fingerprint"]
    assert model_fingerprint(out / "model") != a_record["model_fingerprint"]  # model/ is the latest run
    if (out / "current").is_symlink():
        assert (out / "current").resolve() == (out / "runs" / a_id / "model").resolve()


def test_report_chart_and_model_card(two_runs):
    out, _, _, _, _ = two_runs
    report = (out / "report.md").read_text()
    assert "## Retrieval on the guard set" in report
    assert ("| metric | bm25 | bm25 expanded | base | champion | finetuned | reranked@20 | shipped | finetuned vs base (pts) | "
            "finetuned vs champion (pts) | shipped vs bm25 (pts) |") in report
    assert "**not promoted**" in report and "![main metrics" in report
    png = (out / "metrics.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    run_id = json.loads((out / "summary.json").read_text())["promotion"]["run_id"]
    run_dir = out / "runs" / run_id
    for name in ("metrics.json", "report.md", "metrics.png", "summary.json", "run.json", "model/modules.json",
                 "reranker/config.json"):
        assert (run_dir / name).is_file(), name
    card = (out / "model" / "README.md").read_text()
    assert "<!-- bce-finetune:begin -->" in card and "Retrieval on the guard set" in card
    assert f"Run `{run_id}`" in card and "learning_rate | 0.5" in card
    assert card == (run_dir / "model" / "README.md").read_text()


def test_what_the_report_ships_is_what_flows_query_serves(two_runs):
    """Promoted (run A) and not promoted (run B): the report's shipped row, metrics.json's
    retriever, summary.json, current.json, the console, report.md and the model card name
    one retriever, and flows.query ranks with it as the evaluation did."""
    from tasks.retrieval.metrics import metric_value
    from tasks.retrieval.retriever import RetrieverSpec

    out, a, state, b, b_served = two_runs
    a_id = state["summary"]["promotion"]["run_id"]
    after_b = {"metrics": json.loads((out / "metrics.json").read_text()),
               "summary": json.loads((out / "summary.json").read_text()),
               "current": json.loads((out / "current.json").read_text()), "served": b_served}
    for run, proc, verdict in ((state, a, "promoted: search now serves"), (after_b, b, "not promoted: search keeps serving")):
        metrics, served = run["metrics"], run["served"]
        spec = RetrieverSpec.from_dict(metrics["retriever"])
        assert served["spec"] == spec == RetrieverSpec.from_dict(run["current"]["retriever"])
        assert run["summary"]["promotion"]["retriever"] == metrics["retriever"]
        # People's questions are in no chunk's expansion: search ranks them as the report did.
        assert metric_value(metrics["human"]["shipped"], "ndcg@10") == pytest.approx(served["human_ndcg@10"], abs=1e-9)
        if not spec.expanded:  # search indexes the validation questions beside their chunks; the evaluation never
            assert metric_value(metrics["shipped"], "ndcg@10") == pytest.approx(served["ndcg@10"], abs=1e-9)
        line = f"{verdict} run {a_id}: {spec.describe()}"
        assert run["summary"]["promotion"]["serving"] == line and line in proc.stdout
        # flows.query chunked as the run did (--chunk-size 120), not with its own defaults.
        assert any(entry.startswith("chunks: ") and "chunk_size 120" in entry and f"run {a_id}" in entry
                   for entry in served["lines"])
    assert after_b["current"] == state["current"]  # not promoted: current.json untouched
    b_id = after_b["summary"]["promotion"]["run_id"]
    assert f"not promoted: search keeps serving run {a_id}" in (out / "report.md").read_text()
    assert f"not promoted: search keeps serving run {a_id}" in (out / "runs" / b_id / "model" / "README.md").read_text()
    assert json.loads((out / "runs" / a_id / "run.json").read_text())["index_settings"]["chunk_size"] == 120
