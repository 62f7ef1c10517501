"""bench/retrievers.py and bench/lexical_tokenizers.py on the real shared data: a real
BM25 index, the real tiny model, the deterministic extractive question writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny_model import make_tiny_st_model


@pytest.mark.slow
def test_retriever_bench_on_legal_judgments_writes_every_row(cjrc_json: Path, tmp_path: Path) -> None:
    from bench.retrievers import main

    tiny = make_tiny_st_model(tmp_path / "tiny")
    code = main(["--data", str(cjrc_json), "--n-passages", "8", "--llm-backend", "extractive",
                 "--base-model", str(tiny), "--config", "epochs=1,batch_size=2,hard_negative_miner=bm25",
                 "--generation", "max_copied_chars=0,questions_per_chunk=2", "--reranker-config", "reranker_batch_size=4",
                 "--prompt-examples", "2",
                 "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    labels = [row["row"] for row in results["rows"]]
    assert labels[:3] == ["BM25", "BM25 over each chunk and its questions", "base (dense)"]
    # Each model's even fusion with the expanded BM25 too (--expansion, the bench's default).
    assert sum(label.endswith("+ expanded BM25 fused, w=0.5") for label in labels) == 2
    assert any(label.startswith("tuned [") and label.endswith("(dense)") for label in labels)
    assert sum("RRF" in label for label in labels) == 2
    # Each model's reranker, trained on the fit questions: its order alone and mixed, at depth 20.
    assert sum(label.endswith("fused, rerank@20") for label in labels) == 2
    assert sum(label.endswith("fused, rerank@20 mix 0.5") for label in labels) == 2
    assert results["training"]["reranker [base]"]["steps"] > 0
    assert results["human_questions"]["trained"] > 0 and results["human_questions"]["held-out"] > 0
    assert results["generation_settings"] == "max_copied_chars=0,questions_per_chunk=2"
    assert len(results["prompt_examples"]) == 2
    assert "copies the chunk" not in results["generation"]["dropped"]
    for choice in results["choices"]:  # chosen on the synthetic validation questions
        assert choice["shipped"] in choice["val_ndcg@10"] and "bm25" in choice["val_ndcg@10"]
        assert choice["validation_argmax"] in choice["val_ndcg@10"]
        # ... and every candidate on the human questions, to see how far that choice lands from the best
        assert set(choice["held-out_ndcg@10"]) == set(choice["val_ndcg@10"]) == set(choice["trained_ndcg@10"])
    assert "| BM25 |" in (tmp_path / "out" / "results.md").read_text(encoding="utf-8")


def test_prompt_examples_leave_the_test_set_they_come_from() -> None:
    from bench.retrievers import without_examples
    from tasks.core.qa_dataset import QADataset

    ds = QADataset(queries={f"q{i}": f"问题{i}？" for i in range(6)}, corpus={"c": "块"},
                   relevant_docs={f"q{i}": ["c"] for i in range(6)})
    kept, examples = without_examples(ds, 2, seed=42)
    assert len(examples) == 2 and len(kept.queries) == 4
    assert not set(examples) & set(kept.queries.values())
    assert set(kept.relevant_docs) == set(kept.queries)
    assert without_examples(ds, 0, seed=42) == (ds, [])


@pytest.mark.parametrize("generation", ["epochs=2", "max_copied_chars=-1", "seed=1"])
def test_retriever_bench_refuses_what_is_not_a_generation_setting(generation: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from bench.retrievers import main

    data = tmp_path / "squad.json"
    data.write_text("{}", encoding="utf-8")  # checked before it is read
    assert main(["--data", str(data), "--generation", generation]) == 2
    assert "error: config" in capsys.readouterr().err


def test_lexical_bench_scores_each_tokenizer_on_the_sample_pdfs(tmp_path: Path) -> None:
    from bench.lexical_tokenizers import bm25_metrics, sample_dataset

    ds = sample_dataset()
    scores = {t: bm25_metrics(ds, t, "lucene")["bm25_ndcg@10"] for t in ("char", "jieba")}
    assert all(0.8 < s <= 1.0 for s in scores.values())
