"""The metrics chart is drawn again only when what it shows changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.reporting import chart

VAL = {"base": {"cosine_ndcg@10": 0.80, "cosine_mrr@10": 0.75}, "finetuned": {"cosine_ndcg@10": 0.86, "cosine_mrr@10": 0.81}}


def _no_drawing(*args, **kwargs):
    raise AssertionError("drew the chart again")


def test_an_unchanged_chart_is_reused_without_drawing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics.png"
    first = chart.chart_png(path, {"validation set": VAL})  # no file yet: drawn
    path.write_bytes(first)
    monkeypatch.setattr(chart, "metrics_chart_png", _no_drawing)
    assert chart.chart_png(path, {"validation set": VAL}) == first


@pytest.mark.parametrize("change", ["value", "panel", "keys"])
def test_a_chart_of_other_numbers_is_drawn_again(change: str, tmp_path: Path) -> None:
    path = tmp_path / "metrics.png"
    path.write_bytes(chart.metrics_chart_png({"validation set": VAL}))
    panels, keys = {"validation set": VAL}, chart.CHART_KEYS
    if change == "value":
        panels = {"validation set": {**VAL, "finetuned": {"cosine_ndcg@10": 0.87, "cosine_mrr@10": 0.81}}}
    elif change == "panel":
        panels = {"validation set": VAL, "guard set": VAL}
    else:
        keys = ("ndcg@10",)
    new = chart.chart_png(path, panels, keys)
    assert new != path.read_bytes()
    assert chart.png_digest(new) == chart.chart_digest(panels, keys) != chart.png_digest(path.read_bytes())


def test_a_png_without_a_digest_is_drawn_again(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "metrics.png"
    Image.new("RGB", (4, 4)).save(path)  # e.g. a chart from before digests, or any other picture
    assert chart.png_digest(path.read_bytes()) is None
    assert chart.png_digest(chart.chart_png(path, {"validation set": VAL})) == chart.chart_digest({"validation set": VAL})


def test_the_digest_follows_the_drawing_code(monkeypatch: pytest.MonkeyPatch) -> None:
    before = chart.chart_digest({"validation set": VAL})
    monkeypatch.setattr("tasks.core.caching.code_fingerprint", lambda module, *a: "edited " + module)
    assert chart.chart_digest({"validation set": VAL}) != before
