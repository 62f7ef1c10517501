"""bench/reranker_recipes.py on the real legal data: the tiny real model, the extractive
question writer, two variants of a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny_model import make_tiny_st_model


@pytest.mark.slow
def test_each_variant_gets_every_row_on_every_set(cjrc_json: Path, tmp_path: Path) -> None:
    from bench.reranker_recipes import main

    tiny = make_tiny_st_model(tmp_path / "tiny")
    code = main(["--data", str(cjrc_json), "--n-passages", "6", "--llm-backend", "extractive",
                 "--base-model", str(tiny), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
                 "--variant", "loss=mnrl,epochs=1,bs=2,nneg=2,inbatch=1,layers=1,depth=3",
                 "--variant", "loss=bce,epochs=1,bs=4,nneg=2"])
    assert code == 0
    rows = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))["rows"]
    assert len(rows) == 2 * 3 * 5  # variants × sets × retrievers
    assert {r["set"] for r in rows} == {"val", "trained", "held-out"}
    assert all(0 <= r["ndcg@10"] <= 1 for r in rows)
    # The first stage does not depend on the variant; the reranked rows do (or may).
    first = {(r["set"], r["retriever"], r["ndcg@10"]) for r in rows if "rerank" not in r["retriever"]}
    assert len(first) == 3 * 3
    # Each variant reranks at its own depth.
    assert {r["retriever"] for r in rows if "rerank" in r["retriever"]} == {
        "+ rerank@3", "+ rerank@3 mix 0.5", "+ rerank@20", "+ rerank@20 mix 0.5"}


def test_an_unknown_variant_field_is_one_line(tmp_path: Path, capsys) -> None:
    from bench.reranker_recipes import main

    assert main(["--variant", "losss=mnrl", "--out", str(tmp_path)]) == 2
    assert "is not one of" in capsys.readouterr().err
