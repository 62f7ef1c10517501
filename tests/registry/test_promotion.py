"""Champion/challenger decision, the run registry, the model card section, the chart and
the report's guard and promotion sections (pure code and real files; the flow itself is
in test_promotion_flow.py)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from tasks.reporting.chart import metrics_chart_png
from tasks.registry.model_card import BEGIN, END, card_section, update_model_card, with_section
from tasks.registry.promotion import already_champion, decide_promotion
from tasks.registry.runs import (
    LINK, POINTER, find_run, new_run_id, read_champion, register_run, run_dir, set_champion,
)
from tasks.reporting.tables import render_report
from tasks.core.caching import model_fingerprint
from tests.tiny_model import make_tiny_st_model


# --- the decision -------------------------------------------------------------------------


def decide(val, incumbent, guard=None, base_guard=None, margin=0.5, min_gain=0.0):
    return decide_promotion(val, incumbent, challenger_guard=guard, base_guard=base_guard,
                            guard_margin_pts=margin, min_gain_pts=min_gain, incumbent="champion (run x)")


def test_promoted_when_better_on_validation_and_guard_within_margin():
    d = decide(0.82, 0.80, guard=0.896, base_guard=0.900)
    assert d.promote and d.val_gain_pts == 2.0 and d.guard_loss_pts == 0.4
    assert "+2.0 pts vs the champion (run x)" in d.reason


def test_a_tie_or_a_loss_on_validation_keeps_the_champion():
    assert not decide(0.80, 0.80, 0.9, 0.9).promote
    lost = decide(0.79, 0.80, 0.95, 0.9)
    assert not lost.promote and lost.val_gain_pts == -1.0 and "needs more than 0" in lost.reason


def test_losing_more_than_the_margin_on_the_guard_set_blocks_promotion():
    d = decide(0.90, 0.80, guard=0.894, base_guard=0.900)  # 0.6 points lost
    assert not d.promote and d.guard_loss_pts == 0.6 and "margin of 0.5" in d.reason
    assert decide(0.90, 0.80, guard=0.894, base_guard=0.900, margin=1.0).promote
    assert decide(0.90, 0.80, guard=0.895, base_guard=0.900).promote  # exactly the margin (float noise aside)


def test_min_gain_and_no_guard_set():
    assert not decide(0.805, 0.80, min_gain=1.0).promote
    assert decide(0.82, 0.80, min_gain=1.0).promote
    d = decide(0.82, 0.80)
    assert d.promote and "no guard set evaluated" in d.reason and d.guard_loss_pts is None


def test_already_champion_is_not_a_promotion():
    d = already_champion("r1")
    assert not d.promote and "already the champion" in d.reason
    assert json.loads(json.dumps(d.to_dict()))["incumbent"] == "run r1"


# --- the registry -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_st_model(tmp_path_factory.mktemp("tiny") / "m")


def test_runs_are_registered_once_and_never_overwritten(tmp_path, tiny):
    fp = model_fingerprint(tiny)
    run_id = new_run_id(datetime(2026, 11, 27, 15, 1, 2), fp)
    assert run_id == f"20261127-150102-{fp[:8]}"
    assert find_run(tmp_path, fp) is None
    folder = register_run(tmp_path, run_id, tiny, fp, files={"note.txt": "hi"}, record={"created_at": "t"})
    assert folder == run_dir(tmp_path, run_id)
    assert model_fingerprint(folder / "model") == fp
    assert json.loads((folder / "run.json").read_text())["model_fingerprint"] == fp
    assert find_run(tmp_path, fp) == run_id
    with pytest.raises(FileExistsError):
        register_run(tmp_path, run_id, tiny, fp, files={})
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]  # no leftovers


def test_the_registered_copy_does_not_follow_later_writes(tmp_path, tiny):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    fp = model_fingerprint(model)
    register_run(tmp_path, "r1", model, fp, files={})
    with open(model / "model.safetensors", "r+b") as f:  # a later run rewriting in place
        f.write(b"\0" * 16)
    assert model_fingerprint(tmp_path / "runs" / "r1" / "model") == fp


def test_champion_pointer_json_and_symlink(tmp_path, tiny):
    assert read_champion(tmp_path) is None
    for run_id in ("r1", "r2"):
        register_run(tmp_path, run_id, tiny, f"fp-{run_id}", files={})
    set_champion(tmp_path, "r1", {"validation_ndcg@10": 0.5})
    set_champion(tmp_path, "r2")
    champion = read_champion(tmp_path)
    assert champion.run_id == "r2" and champion.model_fingerprint == "fp-r2"
    assert champion.model_path == tmp_path / "runs" / "r2" / "model"
    pointer = json.loads((tmp_path / POINTER).read_text())
    assert pointer["model_path"] == "runs/r2/model"  # relative: the folder can move
    if (tmp_path / LINK).is_symlink():
        assert os.readlink(tmp_path / LINK) == "runs/r2/model"
        assert ((tmp_path / LINK) / "modules.json").is_file()
    with pytest.raises(FileNotFoundError):
        set_champion(tmp_path, "r3")


def test_a_champion_whose_model_is_gone_is_no_champion(tmp_path, tiny, caplog):
    import shutil

    register_run(tmp_path, "r1", tiny, "fp", files={})
    set_champion(tmp_path, "r1")
    shutil.rmtree(tmp_path / "runs" / "r1" / "model")
    assert read_champion(tmp_path) is None
    assert "missing" in caplog.text


# --- model card, chart, report --------------------------------------------------------------------

VAL = {"base": {"cosine_ndcg@10": 0.80, "cosine_accuracy@1": 0.7},
       "champion": {"cosine_ndcg@10": 0.83, "cosine_accuracy@1": 0.72},
       "finetuned": {"cosine_ndcg@10": 0.82, "cosine_accuracy@1": 0.74}}
GUARD = {k: {"cosine_ndcg@10": v} for k, v in (("base", 0.9), ("champion", 0.897), ("finetuned", 0.893))}


def test_model_card_section_is_added_once_and_replaced(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("---\nlanguage: zh\n---\n# model\n", encoding="utf-8")
    promo = {"promote": False, "reason": "validation ndcg@10 -1.0 pts"}
    update_model_card(tmp_path, card_section(run_id="r1", data={"training pairs": 54}, settings={"epochs": 3},
                                             validation=VAL, guard=GUARD, promotion=promo))
    first = card.read_text(encoding="utf-8")
    assert first.startswith("---\nlanguage: zh\n---\n# model\n")
    assert "Run `r1`" in first and "training pairs: 54" in first and "| epochs | 3 |" in first
    assert "not promoted" in first and "Retrieval on the guard set" in first
    update_model_card(tmp_path, card_section(run_id="r2", data={}, settings={}, validation=VAL, guard=None,
                                             promotion=None))
    second = card.read_text(encoding="utf-8")
    assert second.count(BEGIN) == 1 and second.count(END) == 1 and "Run `r2`" in second and "r1" not in second
    assert with_section("", BEGIN + END).strip() == BEGIN + END


def test_chart_is_a_png_with_one_panel_per_dataset():
    from PIL import Image
    import io

    one = Image.open(io.BytesIO(metrics_chart_png({"validation set": VAL})))
    two = Image.open(io.BytesIO(metrics_chart_png({"validation set": VAL, "guard set": GUARD})))
    assert one.format == two.format == "PNG"
    assert two.size[0] > one.size[0] * 1.5  # a second panel beside the first
    assert metrics_chart_png({"v": VAL}) == metrics_chart_png({"v": VAL})  # no timestamp inside
    with pytest.raises(ValueError):
        metrics_chart_png({"v": {}})


def test_report_has_both_tables_deltas_champion_column_and_decision():
    promo = {"promote": False, "reason": "validation ndcg@10 -1.0 pts vs the champion (run r1)", "run_id": "r2",
             "champion": "r1", "incumbent": "champion (run r1)", "guard_margin_pts": 0.5, "min_gain_pts": 0.0}
    report = render_report(VAL, {}, {}, guard=GUARD, promotion=promo, chart="metrics.png")
    lines = report.splitlines()
    header = "| metric | base | champion | finetuned | change (pts) | vs champion (pts) |"
    assert lines.count(header) == 2  # validation and guard
    assert "| ndcg@10 | 0.8000 | 0.8300 | 0.8200 | +2.0 | -1.0 |" in lines
    assert "| ndcg@10 | 0.9000 | 0.8970 | 0.8930 | -0.7 | -0.4 |" in lines
    assert "![main metrics: base, fine-tuned, champion](metrics.png)" in lines
    assert any("**not promoted**" in line and "r2" in line for line in lines)
    assert any("champion now: run `r1`" in line for line in lines)


# --- what search serves after a run: one record (current.json) ------------------------------------


def _grid(best: str, dense: float, n: int = 12) -> dict[str, dict]:
    """Validation metrics of every candidate retriever: ``best`` clearly ahead, ``dense`` for the model alone."""
    from tasks.core.settings import Settings
    from tasks.retrieval.metrics import PER_QUESTION
    from tasks.retrieval.retriever import candidates

    grid = {}
    for spec in candidates(Settings().fusion_weights, expansion="(expanded)" in best):
        v = 0.9 if spec.label == best else dense if spec.label == "dense" else 0.5
        grid[spec.label] = {"ndcg@10": v, "mrr@10": v, PER_QUESTION: [v] * n}
    return grid


@pytest.fixture
def served_case(tmp_path, tiny):
    """A champion (run r1) that search serves with BM25 alone, as its own run chose; on this
    run's questions a fusion would now win for it."""
    from tasks.registry.release import contenders
    from tasks.core.qa_dataset import QADataset

    out = tmp_path / "out"
    register_run(out, "r1", tiny, "fp-r1", files={}, record={"created_at": "t"})
    set_champion(out, "r1", {"retriever": {"kind": "bm25", "tokenizer": "char", "label": "bm25"},
                             "index_settings": {"chunk_size": 120}})
    val = tmp_path / "val_dataset.json"
    QADataset(queries={"q": "?"}, corpus={"c": "x"}, relevant_docs={"q": ["c"]}).save(val)
    c = contenders(out, tiny, tiny, read_champion(out))
    return out, c, val


def _decide(c, val, grids):
    from tasks.core.settings import Settings
    from tasks.registry.release import decide

    return decide(c, grids, {}, {"n_pairs": 1, "epochs": 1}, val, Settings(chunk_size=200, chunk_overlap=20))


def test_not_promoted_the_report_ships_what_search_keeps_serving(served_case):
    """The report's shipped row is the champion's served retriever (BM25), not one chosen again
    for it on this run's questions (the fusion w=0.7 that now wins)."""
    from tasks.registry.release import report_rows, serving_line, shipped

    out, c, val = served_case
    grids = {"base": _grid("dense", 0.6), "champion": _grid("hybrid w=0.7", 0.5), "finetuned": _grid("rrf", 0.5)}
    release = _decide(c, val, grids)
    assert release.promotion["promote"] is False
    assert release.serving == json.loads((out / POINTER).read_text())  # left as it is
    served = shipped(release.serving, c)
    assert (served["label"], served["model"], served["run_id"]) == ("bm25", "champion", "r1")
    metrics = report_rows(grids, {}, served)
    assert metrics["shipped"] == {"ndcg@10": 0.5, "mrr@10": 0.5}  # the champion's BM25 row
    assert serving_line(served, False) == "not promoted: search keeps serving run r1: BM25 alone (char tokens)"
    assert "not promoted: search keeps serving run r1" in release.card
    assert release.record["retriever"]["label"] == "rrf"  # this run's own choice, for run.json and its card
    assert release.record["index_settings"]["chunk_size"] == 200


def test_promoted_the_run_writes_what_search_serves_and_reads_it_back(served_case, tiny):
    from tasks.registry.release import shipped
    from tasks.registry.runs import read_serving

    out, c, val = served_case
    grids = {"base": _grid("dense", 0.6), "champion": _grid("hybrid w=0.7", 0.5), "finetuned": _grid("rrf", 0.8)}
    release = _decide(c, val, grids)
    assert release.promotion["promote"] is True
    register_run(out, c.run_id, tiny, c.fingerprint, files={}, record=release.record)
    set_champion(out, c.run_id, release.serving)  # what the promotion stage does
    assert read_serving(out).record == release.serving
    served = shipped(read_serving(out).record, c)
    assert (served["label"], served["model"], served["run_id"]) == ("rrf", "finetuned", c.run_id)
    assert read_serving(out).index_settings["chunk_size"] == 200


def test_before_any_promotion_search_serves_the_base_model_from_current_json(served_case, tiny, tmp_path):
    from tasks.registry.release import contenders, shipped
    from tasks.registry.runs import read_serving, serve_base_model

    _, _, val = served_case
    out = tmp_path / "fresh"
    c = contenders(out, tiny, tiny, None)
    grids = {"base": _grid("hybrid w=0.3", 0.6), "finetuned": _grid("rrf", 0.5)}
    release = _decide(c, val, grids)
    assert release.promotion["promote"] is False and release.serving["run_id"] is None
    serve_base_model(out, release.serving)
    assert read_champion(out) is None  # no champion: the base model is served, not promoted
    serving = read_serving(out)
    assert serving.model_path == Path(tiny).resolve() and serving.spec.label == "hybrid w=0.3"
    assert shipped(serving.record, c)["model"] == "base"


def test_the_served_retriever_is_evaluated_even_when_no_candidate_is_it(tmp_path, tiny):
    """A champion served with a fusion weight this run's grid lacks still gets its row, with its tokenizer."""
    from tasks.core.settings import Settings
    from tasks.registry.release import contenders

    out = tmp_path / "out"
    register_run(out, "r1", tiny, "fp-r1", files={})
    set_champion(out, "r1", {"retriever": {"kind": "hybrid", "w_dense": 0.35, "tokenizer": "jieba"}})
    c = contenders(out, tiny, tiny, read_champion(out))
    specs = c.retrievers("champion", Settings(fusion_weights=[0.5]))
    assert [s.label for s in specs] == ["bm25", "hybrid w=0.5", "dense", "rrf", "hybrid w=0.35"]
    assert {s.tokenizer for s in specs} == {"jieba"}  # one BM25 tokenizer per evaluation
    assert "hybrid w=0.35" not in [s.label for s in c.retrievers("base", Settings(fusion_weights=[0.5]))]


def test_each_model_expands_bm25_with_the_questions_of_the_run_that_made_it(tmp_path, tiny):
    """This run's questions for the base and its model, the champion run's own for the
    champion; a base model served with an expanded retriever records where its questions are."""
    from tasks.core.qa_dataset import QADataset
    from tasks.core.settings import Settings
    from tasks.registry.release import contenders, decide
    from tasks.registry.runs import EXPANSION_FILE, read_serving, serve_base_model

    out = tmp_path / "out"
    register_run(out, "r1", tiny, "fp-r1", files={EXPANSION_FILE: "{}"})
    set_champion(out, "r1", {"retriever": {"kind": "bm25", "tokenizer": "char", "expanded": True}})
    assert read_serving(out).expansion_path == out / "runs" / "r1" / EXPANSION_FILE
    mine = tmp_path / "expansion.json"
    mine.write_text("{}", encoding="utf-8")
    c = contenders(out, tiny, tiny, read_champion(out), expansion=mine)
    assert c.expansions == {"base": mine, "finetuned": mine, "champion": out / "runs" / "r1" / EXPANSION_FILE}
    on = Settings(fusion_weights=[0.5], bm25_expansion=True)
    assert [s.label for s in c.retrievers("champion", on)][-2:] == ["bm25 (expanded)", "hybrid w=0.5 (expanded)"]
    assert [s.label for s in c.retrievers("base", on)][-2:] == ["bm25 (expanded)", "hybrid w=0.5 (expanded)"]
    # Off (the default), the base has no expanded candidate; what the champion serves is still evaluated.
    off = Settings(fusion_weights=[0.5])
    assert "bm25 (expanded)" not in [s.label for s in c.retrievers("base", off)]
    assert [s.label for s in c.retrievers("champion", off)][-1] == "bm25 (expanded)"
    # Without this run's questions (--no-bm25-expansion) the base has no expanded candidate.
    assert not contenders(out, tiny, tiny, read_champion(out)).expansions.keys() - {"champion"}

    # Before any promotion, the base model's expanded choice is served with this run's file.
    fresh = tmp_path / "fresh"
    c = contenders(fresh, tiny, tiny, None, expansion=mine)
    val = tmp_path / "val_dataset.json"
    QADataset(queries={"q": "?"}, corpus={"c": "x"}, relevant_docs={"q": ["c"]}).save(val)
    grids = {"base": _grid("bm25 (expanded)", 0.6), "finetuned": _grid("rrf", 0.5)}
    release = decide(c, grids, {}, {"n_pairs": 1, "epochs": 1}, val, Settings(retriever_margin=0, bm25_expansion=True))
    assert release.serving["retriever"]["expanded"] is True
    serve_base_model(fresh, release.serving)
    assert read_serving(fresh).expansion_path == mine.resolve()
