"""Retrieval metrics checked against a hand computation, and the flows.evaluate CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from flows.evaluate import main as evaluate_cli
from tasks.evaluation.evaluate import evaluate_model
from tasks.core.qa_dataset import QADataset
from tests.tiny_model import make_tiny_st_model

REPO = Path(__file__).resolve().parents[2]

EXPECTED_KEYS = {
    *(f"cosine_accuracy@{k}" for k in (1, 3, 5, 10)),
    *(f"cosine_precision@{k}" for k in (1, 3, 5, 10)),
    *(f"cosine_recall@{k}" for k in (1, 3, 5, 10)),
    "cosine_mrr@10",
    "cosine_ndcg@10",
    "cosine_map@100",
}

DOCS = [
    "长江是中国最长的河流。",
    "黄河被称为中华民族的母亲河。",
    "珠穆朗玛峰是世界最高峰。",
    "员工每年享有带薪年假五天。",
    "合同到期前三十日应书面通知。",
    "光合作用释放氧气。",
    "计算机网络分为局域网和广域网。",
    "北京是中国的首都。",
    "上海是重要的金融中心。",
    "熊猫主要吃竹子。",
    "地球绕太阳公转一周约一年。",
    "水在一百度沸腾。",
]
QUESTIONS = {
    "q0": ("中国最长的河流是哪条？", ["d0"]),
    "q1": ("哪条河是母亲河？", ["d1", "d0"]),  # two relevant chunks
    "q2": ("世界最高峰是什么？", ["d2"]),
    "q3": ("年假有几天？", ["d3"]),
    "q4": ("合同到期前要做什么？", ["d4", "d3", "d7"]),  # three
    "q5": ("熊猫吃什么？", ["d9"]),
}


def qa_dataset() -> QADataset:
    return QADataset(
        queries={q: text for q, (text, _) in QUESTIONS.items()},
        corpus={f"d{i}": text for i, text in enumerate(DOCS)},
        relevant_docs={q: rel for q, (_, rel) in QUESTIONS.items()},
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_st_model(tmp_path_factory.mktemp("eval") / "tiny")


def hand_metrics(model_path: Path, ds: QADataset) -> dict[str, float]:
    """The IR metrics from first principles: cosine similarity, rank, count."""
    model = SentenceTransformer(str(model_path))
    qids, cids = list(ds.relevant_docs), list(ds.corpus)
    # encode_query / encode_document add the model's "query: " / "passage: " prompts.
    q = model.encode_query([ds.queries[i] for i in qids])
    d = model.encode_document([ds.corpus[c] for c in cids])
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    scores = q @ d.T

    per_query: dict[str, list[float]] = {}
    for row, qid in enumerate(qids):
        relevant = set(ds.relevant_docs[qid])
        ranking = [cids[j] for j in sorted(range(len(cids)), key=lambda j: (-scores[row, j], cids[j]))]
        hits = [c in relevant for c in ranking]
        first_hit = hits.index(True) + 1 if any(hits) else math.inf
        m = per_query.setdefault
        for k in (1, 3, 5, 10):
            m(f"cosine_accuracy@{k}", []).append(float(first_hit <= k))
            m(f"cosine_precision@{k}", []).append(sum(hits[:k]) / k)
            m(f"cosine_recall@{k}", []).append(sum(hits[:k]) / len(relevant))
        m("cosine_mrr@10", []).append(1 / first_hit if first_hit <= 10 else 0.0)
        dcg = sum(1 / math.log2(r + 2) for r, hit in enumerate(hits[:10]) if hit)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), 10)))
        m("cosine_ndcg@10", []).append(dcg / idcg)
        precisions = [sum(hits[: r + 1]) / (r + 1) for r, hit in enumerate(hits[:100]) if hit]
        m("cosine_map@100", []).append(sum(precisions) / min(len(relevant), 100))
    return {key: float(np.mean(values)) for key, values in per_query.items()}


def test_keys_have_no_name_prefix_and_are_floats(tiny):
    for name in ("val", "", "train_dataset"):
        metrics = evaluate_model(str(tiny), qa_dataset(), name=name)
        assert set(metrics) == EXPECTED_KEYS
        assert all(type(v) is float and 0.0 <= v <= 1.0 for v in metrics.values())


def test_metrics_match_a_hand_computation(tiny):
    ds = qa_dataset()
    metrics = evaluate_model(str(tiny), ds)
    expected = hand_metrics(tiny, ds)
    assert set(expected) == EXPECTED_KEYS
    for key in EXPECTED_KEYS:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    # A random model is not perfect here, so the comparison above is not trivially all ones.
    assert metrics["cosine_accuracy@1"] < 1.0


def test_prompts_are_applied(tmp_path, tiny):
    # A twin of `tiny` (same weights and vocabulary) without prompts. On this dataset the
    # prompts change the ranking, so each model matching its own hand computation shows
    # that the evaluator used the query/document prompts of the model it was given.
    bare = make_tiny_st_model(tmp_path / "bare", prompts=None)
    ds = qa_dataset()
    with_prompts, without = evaluate_model(str(tiny), ds), evaluate_model(str(bare), ds)
    assert with_prompts == pytest.approx(hand_metrics(tiny, ds), abs=1e-6)
    assert without == pytest.approx(hand_metrics(bare, ds), abs=1e-6)
    assert with_prompts["cosine_mrr@10"] != pytest.approx(without["cosine_mrr@10"], abs=1e-3)


def test_trivially_findable_answers_score_perfectly(tmp_path):
    # Without prompts, a question identical to its chunk has cosine similarity 1 with it.
    model = make_tiny_st_model(tmp_path / "m", prompts=None)
    ds = QADataset(
        queries={f"q{i}": t for i, t in enumerate(DOCS)},
        corpus={f"d{i}": t for i, t in enumerate(DOCS)},
        relevant_docs={f"q{i}": [f"d{i}"] for i in range(len(DOCS))},
    )
    m = evaluate_model(str(model), ds)
    for key in ("accuracy@1", "accuracy@10", "recall@1", "precision@1", "mrr@10", "ndcg@10", "map@100"):
        assert m[f"cosine_{key}"] == pytest.approx(1.0), key
    assert m["cosine_precision@3"] == pytest.approx(1 / 3)
    assert m["cosine_precision@10"] == pytest.approx(1 / 10)


def test_accepts_a_path_and_writes_nothing(tiny, tmp_path, monkeypatch):
    ds = qa_dataset()
    path = tmp_path / "data" / "val_dataset.json"
    ds.save(path)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.as_posix() for p in tmp_path.rglob("*"))
    assert evaluate_model(str(tiny), path, batch_size=4) == pytest.approx(evaluate_model(str(tiny), ds))
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == before


def test_dataset_without_questions_is_an_error(tiny):
    with pytest.raises(ValueError, match="no questions"):
        evaluate_model(str(tiny), QADataset(queries={}, corpus={"d0": "文本"}, relevant_docs={}))
    with pytest.raises(ValueError, match="no questions"):
        evaluate_model(str(tiny), QADataset(queries={"q": "问"}, corpus={"d0": "文本"}, relevant_docs={"q": []}))


# --- python -m flows.evaluate ----------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "flows.evaluate", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
def test_cli_compares_models_and_writes_json(tiny, tmp_path):
    other = make_tiny_st_model(tmp_path / "other", seed=1)
    dataset = tmp_path / "val_dataset.json"
    qa_dataset().save(dataset)
    proc = run_cli("--model", str(tiny), "--model", str(other), "--dataset", str(dataset), "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr
    written = json.loads((tmp_path / "val_dataset_metrics.json").read_text())
    assert list(written) == [str(tiny), str(other)]
    assert set(written[str(tiny)]["dense"]) == EXPECTED_KEYS
    assert written[str(tiny)]["dense"] == pytest.approx(evaluate_model(str(tiny), dataset))
    assert 0.5 < written[str(tiny)]["bm25"]["bm25_ndcg@10"] <= 1.0  # these questions reuse their chunk's words
    assert f"{other} vs {tiny} (pts)" in proc.stdout and f"{other} vs bm25 (pts)" in proc.stdout
    assert "ndcg@10" in proc.stdout and "hybrid w=0.5" in proc.stdout
    assert "val_dataset_metrics.json" in proc.stdout


@pytest.mark.slow
def test_cli_missing_dataset_is_a_clear_error(tmp_path):
    proc = run_cli("--model", "whatever", "--dataset", str(tmp_path / "nope.json"))
    assert proc.returncode == 2
    assert f"error: dataset file {tmp_path / 'nope.json'} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_output_path_and_input_errors(tiny, tmp_path, capsys):
    dataset = tmp_path / "val.json"
    qa_dataset().save(dataset)
    out = tmp_path / "sub" / "m.json"
    assert evaluate_cli(["--model", str(tiny), "--dataset", str(dataset), "--output", str(out)]) == 0
    assert list(json.loads(out.read_text())) == [str(tiny)]
    assert "change" not in capsys.readouterr().out  # one model: nothing to compare

    bad = tmp_path / "bad.json"
    bad.write_text('{"questions": []}')
    assert evaluate_cli(["--model", str(tiny), "--dataset", str(bad)]) == 2
    assert "is not an EmbeddingQAFinetuneDataset JSON file" in capsys.readouterr().err

    missing = tmp_path / "no-such-model"
    assert evaluate_cli(["--model", str(tiny), "--model", str(missing), "--dataset", str(dataset)]) == 2
    assert f"error: model folder {missing} does not exist" in capsys.readouterr().err

    assert evaluate_cli(["--model", str(tiny), "--model", str(tiny), "--dataset", str(dataset)]) == 2
    assert "given twice" in capsys.readouterr().err


def test_cli_evaluates_the_runs_retrievers_with_the_runs_tokenizer(tiny, tmp_path, monkeypatch, capsys):
    """The retrievers a run compares, as its evaluate stage scores them: BM25 with the run's
    tokenizer, the fusions of its weights, the dense model, RRF."""
    from tasks.evaluation.evaluate import evaluate_retrievers
    from tasks.retrieval.metrics import PER_QUESTION
    from tasks.retrieval.retriever import candidates

    dataset = tmp_path / "val_dataset.json"
    qa_dataset().save(dataset)

    def stage_grid(weights, tokenizer):  # what the pipeline's evaluate stage records for this model
        grid = evaluate_retrievers(str(tiny), dataset, candidates(weights, tokenizer), batch_size=32, name="val")
        return {label: {k: v for k, v in m.items() if k != PER_QUESTION} for label, m in grid.items()}

    out = tmp_path / "flag.json"
    argv = ["--model", str(tiny), "--dataset", str(dataset), "--output", str(out)]
    assert evaluate_cli([*argv, "--bm25-tokenizer", "jieba", "--fusion-weights", "0.3,0.5"]) == 0
    grid = json.loads(out.read_text())[str(tiny)]
    assert list(grid) == ["bm25", "hybrid w=0.3", "hybrid w=0.5", "dense", "rrf"]
    assert grid == stage_grid([0.3, 0.5], "jieba")
    assert grid["bm25"] != stage_grid([0.3], "char")["bm25"]  # so the tokenizer used shows
    assert "hybrid w=0.3" in capsys.readouterr().out

    # With no flag, the run's settings as the run takes them: its config file, then BCE_* variables.
    config = tmp_path / "run.toml"
    config.write_text('bm25_tokenizer = "jieba"\nfusion_weights = [0.7]\nepochs = 1\n')
    assert evaluate_cli([*argv, "--config", str(config)]) == 0
    assert json.loads(out.read_text())[str(tiny)] == stage_grid([0.7], "jieba")
    monkeypatch.setenv("BCE_FUSION_WEIGHTS", "0.4")
    assert evaluate_cli(argv) == 0
    assert json.loads(out.read_text())[str(tiny)] == stage_grid([0.4], "char")

    assert evaluate_cli([*argv, "--no-bm25"]) == 0
    assert list(json.loads(out.read_text())[str(tiny)]) == ["dense"]
    with pytest.raises(SystemExit) as e:
        evaluate_cli([*argv, "--bm25-tokenizer", "words"])
    assert e.value.code == 2 and "invalid choice: 'words'" in capsys.readouterr().err
    assert evaluate_cli([*argv, "--fusion-weights", "2"]) == 2
    assert "fusion_weights must lie in [0, 1], got [2.0]" in capsys.readouterr().err


def test_cli_help():
    with pytest.raises(SystemExit) as e:
        evaluate_cli(["--help"])
    assert e.value.code == 0
