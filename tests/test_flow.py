"""The whole pipeline through Prefect, for real: PDFs made from the sample data, a real
tokenizer and a tiny real model, the deterministic `extractive` question writer.

Run twice: the second run must do no generation and no training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.reporting.tables import metric_value
from tests.sample_pdfs import SAMPLES, first_page_pdf
from tests.tiny_model import make_tiny_st_model

pytestmark = pytest.mark.slow  # every test runs python -m flows.finetune_bce in a subprocess

REPO = Path(__file__).resolve().parent.parent

CONTRACT_METRICS = ["cosine_accuracy@1", "cosine_ndcg@10", "cosine_mrr@10", "cosine_map@100"]


def _two_small_pdfs(folder: Path) -> None:
    """Two real Chinese PDFs: the first pages of two sample documents (one in a subfolder)."""
    assert len(SAMPLES) >= 2, "data/pdf must hold the sample PDFs"
    for src, dest in ((SAMPLES[0], folder / "a.pdf"), (SAMPLES[1], folder / "sub" / "B.PDF")):
        first_page_pdf(src, dest)


def _human_questions(folder: Path) -> int:
    """human_questions.json beside the two PDFs: the shipped questions about their sample PDFs
    (those about later pages find no chunk) and one naming a PDF that is not there."""
    shipped = json.loads((REPO / "data" / "pdf" / "human_questions.json").read_text(encoding="utf-8"))
    renamed = {SAMPLES[0].name: "a.pdf", SAMPLES[1].name: "sub/B.PDF"}
    questions = [{**q, "source": renamed[q["source"]]} for q in shipped["questions"] if q["source"] in renamed]
    questions.append({"id": "elsewhere", "question": "谁开发了它？", "evidence": "由韩国Nexon开发", "source": "c.pdf"})
    (folder / "human_questions.json").write_text(json.dumps({"questions": questions}, ensure_ascii=False), "utf-8")
    return len(questions)


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.finetune_bce", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, prefect_home):
    tmp = tmp_path_factory.mktemp("flow")
    pdf_dir = tmp / "pdfs"
    _two_small_pdfs(pdf_dir)
    n_human = _human_questions(pdf_dir)
    tiny = make_tiny_st_model(tmp / "tiny-model")
    env = {
        **os.environ,
        **prefect_home(tmp / "prefect-home"),  # this run's own cache records
        "PYTHONUNBUFFERED": "1",
    }
    args = [
        "--pdf-dir", str(pdf_dir),
        "--output-dir", str(tmp / "out"),
        "--models-dir", str(tmp / "models"),
        "--cache-dir", str(tmp / "cache"),
        "--base-model", str(tiny),
        "--llm-backend", "extractive",
        "--rerank",  # off by default on the CPU profile; the reranker stage runs for real here
        "--bm25-expansion",  # off by default; the expansion stage and its candidates run for real here
        "--prompt-examples", "2",  # two of people's questions go into the prompt and leave the report
        "--chunk-size", "120",
        "--chunk-overlap", "10",
        "--batch-size", "2",
        "--epochs", "2",
        "--learning-rate", "1e-3",
        "--warmup-steps", "0",
        "--val-ratio", "0.5",
    ]
    first = _run_cli(args, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    first_summary = json.loads((tmp / "out" / "summary.json").read_text())
    first_summary["metrics"] = json.loads((tmp / "out" / "metrics.json").read_text())
    second = _run_cli(args, env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    second_summary = json.loads((tmp / "out" / "summary.json").read_text())
    first_summary["n_human_questions"] = n_human
    return tmp / "out", first, first_summary, second, second_summary


def test_outputs_follow_the_contract(two_runs):
    out, first, summary, _, _ = two_runs
    for name in ("train_dataset.json", "val_dataset.json", "metrics.json", "report.md", "summary.json"):
        assert (out / name).is_file(), name

    for name in ("train_dataset.json", "val_dataset.json"):
        ds = json.loads((out / name).read_text())
        assert set(ds) == {"queries", "corpus", "relevant_docs", "mode"}
        assert ds["queries"] and ds["corpus"]
        for qid, docs in ds["relevant_docs"].items():
            assert qid in ds["queries"] and all(d in ds["corpus"] for d in docs)
    train = json.loads((out / "train_dataset.json").read_text())
    val = json.loads((out / "val_dataset.json").read_text())
    val_answers = {d for docs in val["relevant_docs"].values() for d in docs}
    assert not set(train["corpus"]) & val_answers, "a chunk is on both sides of the split"
    # The default val corpus is the whole index: training chunks are distractors too.
    assert set(train["corpus"]) <= set(val["corpus"])

    metrics = json.loads((out / "metrics.json").read_text())
    # Validation set: BM25, "base"/"finetuned" ("champion" too once another run was promoted),
    # the tuned first stage with the run's reranker on its top 20, and the shipped retriever;
    # the shipped guard set under "guard" and the human_questions.json beside the PDFs under
    # "human", with the same labels.
    rows = {"bm25", "bm25 expanded", "base", "finetuned", "reranked@20", "shipped"}
    assert set(metrics) == rows | {"retriever", "guard", "human"}
    assert set(metrics["guard"]) == set(metrics["human"]) == rows
    # The guard set's passages have no questions of this run: its expanded BM25 is BM25.
    assert metrics["guard"]["bm25 expanded"]["bm25_ndcg@10"] == metrics["guard"]["bm25"]["bm25_ndcg@10"]
    # BM25's extra text: every kept question, by its chunk, beside the run and in its registry copy.
    expansion = json.loads((out / "expansion.json").read_text())
    (run,) = [p for p in (out / "runs").iterdir() if not p.name.startswith(".")]
    assert json.loads((run / "expansion.json").read_text()) == expansion
    for ds in (train, val):
        for qid, text in ds["queries"].items():
            assert all(text in expansion[c] for c in ds["relevant_docs"][qid])
    for side in (metrics["base"], metrics["finetuned"], *metrics["guard"].values(), *metrics["human"].values()):
        if "cosine_ndcg@10" not in side:
            continue  # BM25 and fused rows carry their own prefix
        for key in CONTRACT_METRICS:
            assert 0.0 <= side[key] <= 1.0, key
    for rows in (metrics, metrics["guard"], metrics["human"]):
        for label in ("bm25", "reranked@20", "shipped"):
            assert 0.0 <= metric_value(rows[label], "ndcg@10") <= 1.0
    assert (out / "metrics.png").read_bytes().startswith(b"\x89PNG")
    # Every distinct model is kept under runs/; an unchanged rerun adds no run.
    assert len([p for p in (out / "runs").iterdir() if not p.name.startswith(".")]) == 1

    assert "| " in (out / "report.md").read_text()
    assert "Output folder:" in first.stdout
    assert "ndcg@10" in first.stdout
    # One table a user can read: every row named, the keyword index included.
    header = next(line for line in first.stdout.splitlines() if line.startswith("metric"))
    assert header.split()[:7] == ["metric", "bm25", "bm25", "expanded", "base", "finetuned", "reranked@20"]
    assert header.split()[7] == "shipped"
    assert "shipped vs bm25 (pts)" in header and "shipped retriever:" in first.stdout


def test_the_shipped_retriever_is_chosen_on_validation_and_recorded(two_runs):
    """The weight comes from the validation questions alone; the run record, the champion
    pointer, the model card and the report all name the same retriever."""
    from tasks.retrieval.retriever import RetrieverSpec

    out, _, summary, _, _ = two_runs
    metrics = json.loads((out / "metrics.json").read_text())
    retriever = metrics["retriever"]
    val_scores = retriever["validation_ndcg@10"]
    # BM25, nine fusions, dense, RRF, and for this run's model the even fusion reranked (the
    # base model, served when the run is not promoted, has no reranker of its own).
    assert len(val_scores) == (15 if retriever["model"] == "finetuned" else 14)
    assert {"bm25 (expanded)", "hybrid w=0.5 (expanded)"} <= set(val_scores)
    assert ("hybrid w=0.5 + rerank@20" in val_scores) == (retriever["model"] == "finetuned")
    # The even mix unless a candidate beats it on validation by more than the margin.
    gains, label = retriever["gain_over_default_se"], retriever["label"]
    assert retriever["default"] == "hybrid w=0.5" and set(gains) == set(val_scores) - {"hybrid w=0.5"}
    margin = retriever["margin_se"]  # the recorded gains are rounded to 0.01
    if label == "hybrid w=0.5":
        assert all(g <= margin + 0.005 for g in gains.values())
    else:
        assert gains[label] >= margin - 0.005
        assert val_scores[label] >= max(val_scores[k] for k, g in gains.items() if g > margin + 0.005)
    # The per-question scores that decide it stay out of the tables.
    assert not any(isinstance(v, list) for row in ("bm25", "base", "finetuned", "shipped") for v in metrics[row].values())
    assert metric_value(metrics["shipped"], "ndcg@10") == pytest.approx(val_scores[retriever["label"]], abs=1e-4)
    assert metric_value(metrics["bm25"], "ndcg@10") == pytest.approx(val_scores["bm25"], abs=1e-4)
    assert summary["promotion"]["retriever"] == retriever
    spec = RetrieverSpec.from_dict(retriever)
    assert spec.label == retriever["label"]
    # current.json records what search serves, promoted or not (the base model before any promotion).
    pointer = json.loads((out / "current.json").read_text())
    assert RetrieverSpec.from_dict(pointer["retriever"]) == spec
    assert (pointer["run_id"] is None) == (retriever["model"] == "base") and retriever["run_id"] == pointer["run_id"]
    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    assert "### Retriever" in card and "python -m flows.query" in card
    assert "## Shipped retriever" in (out / "report.md").read_text()


def test_questions_written_by_people_are_reported(two_runs):
    out, first, summary, _, second = two_runs
    human = json.loads((out / "human_dataset.json").read_text())
    assert set(human) == {"queries", "corpus", "relevant_docs", "mode"}
    val = json.loads((out / "val_dataset.json").read_text())
    assert set(human["corpus"]) == set(val["corpus"])  # every chunk, train and validation
    found = summary["stages"]["human-questions"]
    assert found["questions"] == summary["n_human_questions"]
    assert found["resolved"] == len(human["queries"]) > 0
    assert found["prompt_examples"] == 2
    assert found["unresolved"] == found["questions"] - found["resolved"] - 2 >= 1
    assert "elsewhere" in [u["id"] for u in found["unresolved_questions"]]
    for side in ("base", "finetuned"):  # Prefect's task-run names
        assert 0 <= summary["stages"][f"evaluate · human · {side}"]["ndcg_at_10"] <= 1
    assert second["stages"]["human-questions"]["cached"] is True

    report = (out / "report.md").read_text()
    section = report.split("## Retrieval on questions written by people", 1)[1]
    ndcg = [metric_value(summary["metrics"]["human"][m], "ndcg@10")
            for m in ("bm25", "bm25 expanded", "base", "finetuned", "reranked@20", "shipped")]
    assert "| ndcg@10 | " + " | ".join(f"{v:.4f}" for v in ndcg) + " |" in section
    assert "report only" in section and "`elsewhere`: no chunk comes from c.pdf" in section
    assert "2 more were examples in the question-writing prompt and are left out" in section
    asked = {q["id"] for q in json.loads((out.parent / "pdfs" / "human_questions.json").read_text())["questions"]}
    examples = asked - set(human["queries"]) - {u["id"] for u in found["unresolved_questions"]}
    assert len(examples) == 2  # neither evaluated nor listed as not found
    assert "questions written by people about these PDFs" in first.stdout


def test_model_folder_loads_offline_with_its_prompts(two_runs):
    from sentence_transformers import SentenceTransformer

    out = two_runs[0]
    model = SentenceTransformer(str(out / "model"), local_files_only=True)
    assert model.prompts.get("query") == "query: "
    assert model.prompts.get("document") == "passage: "
    assert model.encode(["测试"]).shape[0] == 1


def test_summary_counts_every_stage(two_runs):
    _, _, summary, _, _ = two_runs
    stages = summary["stages"]
    for name in ("documents", "split", "chunks", "questions", "base-model", "training", "bm25-expansion",
                 "reranker-model", "reranker",
                 "evaluate · val · base", "evaluate · val · finetuned", "evaluate · guard · finetuned", "promotion"):
        assert name in stages and stages[name]["seconds"] >= 0, name
    assert stages["documents"]["files"] == 2 and stages["documents"]["skipped"] == 0
    assert stages["documents"]["pages"] == 2
    assert stages["split"]["by"] == "document"
    assert stages["chunks"]["train_chunks"] > 0 and stages["chunks"]["val_chunks"] > 0
    n_chunks = stages["chunks"]["train_chunks"] + stages["chunks"]["val_chunks"]
    assert stages["questions"]["llm_requests_sent"] == n_chunks
    assert stages["questions"]["cache_hits"] == 0
    assert stages["training"]["steps_run"] > 0
    assert stages["reranker"]["steps_run"] > 0 and stages["reranker"]["pairs"] > stages["reranker"]["questions"]
    # Every question kept expands its chunk: the training and the validation ones.
    assert stages["bm25-expansion"]["questions"] == stages["questions"]["train_queries"] + stages["questions"]["val_queries"]
    assert 0 < stages["bm25-expansion"]["chunks"] <= n_chunks
    assert Path(summary["base_model"]["path"]).is_dir()


def test_the_reranker_is_kept_with_its_run_and_loads_as_a_cross_encoder(two_runs):
    from sentence_transformers.cross_encoder import CrossEncoder

    out = two_runs[0]
    (run,) = [p for p in (out / "runs").iterdir() if not p.name.startswith(".")]
    for folder in (out / "reranker", run / "reranker"):
        scores = CrossEncoder(str(folder), local_files_only=True).predict([("问题？", "一段文字。"), ("问题？", "另一段。")])
        assert len(scores) == 2


def test_each_model_embeds_each_question_set_once(two_runs):
    """The α grid scores the base model (α = 0) and the α it saves on the validation and
    guard sets; the evaluate stages of those (model, set) pairs read those scores back, so
    the only scores added after training are those of the people's questions."""
    from tasks.training.interpolation import alpha_grid
    from tasks.core.settings import Settings

    out, first, summary, _, _ = two_runs
    grid = alpha_grid(Settings().interpolation_alphas)
    rows = summary["stages"]["training"]["alpha_results"]
    assert [r["alpha"] for r in rows] == grid
    chosen = next(r for r in rows if r["alpha"] == summary["stages"]["training"]["alpha"])
    assert not rows[0]["guard_skipped"] and not chosen["guard_skipped"]  # the reference and the saved α
    files = list((out / "work" / "dense-scores").glob("*.npy"))
    # Every α on validation, the guard set where it could change α, + the people's questions:
    # base and tuned, one file if the grid chose α = 0 (the base's weights).
    scored = len(grid) + sum(not r["guard_skipped"] for r in rows)
    assert len(files) == scored + (1 if chosen["alpha"] == 0 else 2)
    hits = [line for line in (first.stdout + first.stderr).splitlines() if "dense scores" in line and "read from" in line]
    assert len(hits) >= 4, hits  # val and guard, base and tuned


def test_second_run_does_no_generation_and_no_training(two_runs):
    out, _, first, second_proc, second = two_runs
    assert second["stages"]["questions"]["llm_requests_sent"] == 0
    assert second["stages"]["training"]["steps_run"] == 0
    assert second["stages"]["training"]["cached"] is True
    assert second["stages"]["reranker"]["cached"] is True and second["stages"]["reranker"]["steps_run"] == 0
    # The cached evaluations report exactly what the first run measured.
    assert json.loads((out / "metrics.json").read_text()) == first["metrics"]
    assert "Output folder:" in second_proc.stdout


def test_help_lists_every_setting():
    proc = subprocess.run(
        [sys.executable, "-m", "flows.finetune_bce", "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0
    for flag in ("--pdf-dir", "--output-dir", "--base-model", "--llm-backend", "--llm-model", "--llm-base-url",
                 "--chunk-size", "--chunk-overlap", "--val-ratio", "--seed", "--epochs", "--batch-size",
                 "--questions-per-chunk", "--config"):
        assert flag in proc.stdout, flag


def test_bad_settings_are_explained_without_a_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "flows.finetune_bce", "--chunk-size", "100", "--chunk-overlap", "100"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert "chunk_overlap (100) must be smaller than chunk_size (100)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_base_model_fails_at_once_with_the_fix(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flows.finetune_bce", "--base-model", str(tmp_path / "no-model"),
         "--output-dir", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert f"--base-model: the path {tmp_path / 'no-model'} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
