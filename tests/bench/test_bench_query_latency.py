"""bench/query_latency.py for real: the sample PDFs, the tiny real model and a real
cross-encoder folder, a few questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny_model import make_tiny_st_model

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_times_the_first_stage_and_each_reranker_depth(tmp_path: Path) -> None:
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from bench.query_latency import main

    tiny = make_tiny_st_model(tmp_path / "tiny")
    torch.manual_seed(0)
    CrossEncoder(str(tiny), num_labels=1, max_length=128).save_pretrained(str(tmp_path / "reranker"))
    code = main(["--output-dir", str(tmp_path / "out"), "--pdf-dir", str(REPO / "data" / "pdf"), "--model", str(tiny),
                 "--reranker", str(tmp_path / "reranker"), "--rerank-depths", "5,10", "--n", "4",
                 "--variant", "layers=1+int8+maxlen=64", "--out", str(tmp_path / "bench")])
    assert code == 0
    rows = json.loads((tmp_path / "bench" / "results.json").read_text(encoding="utf-8"))["rows"]
    assert [r["retriever"] for r in rows] == [
        "hybrid w=0.5", "hybrid w=0.5 + rerank@5", "hybrid w=0.5 + rerank@10",
        "hybrid w=0.5 + rerank@5 (layers=1+int8+maxlen=64)", "hybrid w=0.5 + rerank@10 (layers=1+int8+maxlen=64)"]
    assert all(r["questions"] == 4 and 0 < r["p50_ms"] <= r["p95_ms"] for r in rows)


def test_a_run_without_a_reranker_is_one_line(tmp_path: Path, capsys) -> None:
    from bench.query_latency import main

    tiny = make_tiny_st_model(tmp_path / "tiny")
    code = main(["--output-dir", str(tmp_path / "out"), "--pdf-dir", str(REPO / "data" / "pdf"), "--model", str(tiny),
                 "--rerank-depths", "5", "--n", "2", "--out", str(tmp_path / "bench")])
    assert code == 2 and "needs a reranker" in capsys.readouterr().err


def test_a_variant_changes_the_served_reranker_as_it_says(tmp_path: Path) -> None:
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from bench.harness import BenchInputError
    from bench.query_latency import serve_as
    from tasks.retrieval.rerank import CrossEncoderReranker

    tiny = make_tiny_st_model(tmp_path / "tiny")
    torch.manual_seed(0)
    CrossEncoder(str(tiny), num_labels=1, max_length=128).save_pretrained(str(tmp_path / "reranker"))
    reranker = CrossEncoderReranker(tmp_path / "reranker")
    before = reranker.predict([("问题", "一段文字")])
    serve_as(reranker, "layers=1+maxlen=32+int8")
    model = reranker.model
    assert len(model.model.base_model.encoder.layer) == 1 and model.max_length == 32
    assert isinstance(model.model.classifier, torch.ao.nn.quantized.dynamic.Linear)
    assert reranker.predict([("问题", "一段文字")]) != pytest.approx(before)
    with pytest.raises(BenchInputError, match="not int8"):
        serve_as(reranker, "fp16")
