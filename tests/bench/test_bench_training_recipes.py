"""The training-recipe benchmark's table (bench.training_recipes), without training."""

from __future__ import annotations

from bench import training_recipes as bench


def _m(ndcg: float, acc: float, guard: float) -> dict:
    return {"heldout": {"cosine_ndcg@10": ndcg, "cosine_accuracy@1": acc}, "guard": {"cosine_ndcg@10": guard}}


def test_rows_carry_changes_in_points_against_base_and_plain() -> None:
    results = {"base": _m(0.90, 0.77, 0.91), "plain": _m(0.89, 0.75, 0.90), "ours": _m(0.93, 0.82, 0.908)}
    rows = {r["row"]: r for r in bench.table_rows(results)}
    assert "vs_base" not in rows["base"] and "vs_plain" not in rows["plain"]
    assert rows["ours"]["vs_base"] == {"heldout_ndcg": 3.0, "heldout_acc1": 5.0, "guard_ndcg": -0.2}
    assert rows["ours"]["vs_plain"]["heldout_ndcg"] == 4.0
    lines = bench.result_table(bench.table_rows(results)).splitlines()
    assert lines[2].startswith("| base | 0.9000 | 0.7700 | 0.9100 | — |")
    assert lines[4].endswith("| +3.0 | +5.0 | -0.2 | +4.0 | +0.8 |")


def test_unknown_rows_are_refused_before_any_work(capsys) -> None:
    assert bench.main(["--rows", "base,nonsense"]) == 2
    assert "unknown rows" in capsys.readouterr().err


def test_the_bench_never_starts_an_llm() -> None:
    import pytest

    with pytest.raises(bench.NotCachedError, match="not in the generation cache"):
        bench.no_llm(bench.Settings())


def test_heldout_questions_are_about_trained_or_unseen_passages_as_asked(cmrc_json) -> None:
    import pytest

    from tasks.chunks.chunking import chunk_documents
    from tasks.evaluation.squad import build_documents, load_squad

    passages = load_squad(cmrc_json)[:8]
    chunks = chunk_documents(build_documents(passages), 200, 20)
    fit, unseen = passages[:4], passages[4:]
    fit_ids, unseen_ids = {p.doc_id for p in fit}, {p.doc_id for p in unseen}
    fit_chunks = [c for c in chunks if c.doc_id in fit_ids]
    unseen_chunks = [c for c in chunks if c.doc_id in unseen_ids]
    human = {q.qid for p in fit for q in p.questions}

    trained = bench.heldout_benchmark("trained-passages", fit, fit_chunks, unseen, unseen_chunks)
    other = bench.heldout_benchmark("unseen-passages", fit, fit_chunks, unseen, unseen_chunks)

    assert trained.dataset.queries and set(trained.dataset.queries) <= human
    assert set(trained.dataset.corpus) == {c.chunk_id for c in fit_chunks}
    assert not set(other.dataset.queries) & human
    assert set(other.dataset.corpus) == {c.chunk_id for c in unseen_chunks}
    with pytest.raises(ValueError, match="eval_on"):
        bench.heldout_benchmark("everything", fit, fit_chunks, unseen, unseen_chunks)
