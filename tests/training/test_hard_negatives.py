"""Hard-negative selection (tasks/training/hard_negatives.py): pure selection and mining with a tiny real model."""

from __future__ import annotations

from pathlib import Path

from sentence_transformers import SentenceTransformer

from tasks.training.hard_negatives import mine_negatives, select_negatives
from tests.tiny_model import make_tiny_st_model


def test_top_ranks_are_skipped_and_the_margin_applies() -> None:
    scores = [0.90, 0.89, 0.80, 0.70, 0.60, 0.10]  # 0 is the positive
    # Rank order of the others: 1, 2, 3, 4, 5. Skip 1 (a near-duplicate at 0.89).
    assert select_negatives(scores, {0}, 2, skip_top=1, margin=0.0) == ([2, 3], 0)
    # Margin 0.15: only texts at or below 0.75 qualify.
    assert select_negatives(scores, {0}, 2, skip_top=0, margin=0.15) == ([3, 4], 0)
    assert select_negatives(scores, {0}, 3, skip_top=0, margin=0.0) == ([1, 2, 3], 0)


def test_every_positive_is_excluded_and_the_weakest_positive_sets_the_ceiling() -> None:
    scores = [0.9, 0.5, 0.85, 0.45, 0.2]  # positives 0 and 1
    chosen, filled = select_negatives(scores, {0, 1}, 2, skip_top=0, margin=0.02)
    assert chosen == [3, 4] and filled == 0  # 2 scores above the weaker positive (0.5)


def test_too_few_candidates_are_filled_in_so_every_row_has_n_negatives() -> None:
    scores = [0.9, 0.89, 0.88, 0.5]
    chosen, filled = select_negatives(scores, {0}, 2, skip_top=1, margin=0.3)
    assert chosen[0] == 3 and filled == 1 and len(chosen) == 2
    assert 0 not in chosen
    # The skipped top rank is used only as the last resort.
    assert select_negatives(scores, {0}, 3, skip_top=1, margin=0.3)[0] == [3, 2, 1]


def test_mining_with_a_real_model_returns_chunks_that_are_not_the_positive(tmp_path: Path) -> None:
    corpus = [f"{a}住在{p}边。" for a, p in zip("猫狗马牛羊鸡", "山河湖海林田")]
    queries = ["猫住在哪里？", "马住在哪里？"]
    positives = [{corpus[0]}, {corpus[2]}]
    model = SentenceTransformer(str(make_tiny_st_model(tmp_path / "tiny", texts=corpus + queries)))
    negatives, stats = mine_negatives(model, queries, positives, corpus, n_negatives=2, skip_top=1, margin=0.0)
    assert (stats.rows, stats.negatives_per_row) == (2, 2)
    for negs, pos in zip(negatives, positives):
        assert len(negs) == 2 and len(set(negs)) == 2
        assert not set(negs) & pos
        assert set(negs) <= set(corpus)
    # The same model, questions and corpus give the same negatives.
    assert mine_negatives(model, queries, positives, corpus, 2, 1, 0.0)[0] == negatives


def test_bm25_mining_picks_chunks_that_share_the_questions_words() -> None:
    corpus = ["原告张某诉请被告支付货款五万元。", "原告张某与被告李某系朋友关系。", "被告李某辩称已经付清货款。",
              "今天天气晴朗，适合出游。", "熊猫主要吃竹子。", "合同约定的违约金为一万元。"]
    queries = ["原告张某请求被告支付多少货款？"]
    negatives, stats = mine_negatives(None, queries, [{corpus[0]}], corpus, n_negatives=2, skip_top=0,
                                      margin=0.5, miner="bm25")
    # The words shared with the question decide, not the margin (a cosine distance): the
    # two chunks about the same parties and goods, never the positive or the unrelated ones.
    assert set(negatives[0]) == {corpus[1], corpus[2]}
    assert stats.negatives_per_row == 2 and stats.filled == 0


def test_an_unknown_miner_names_the_choices() -> None:
    import pytest

    with pytest.raises(ValueError, match="dense or bm25"):
        mine_negatives(None, ["问题？"], [{"甲"}], ["甲", "乙", "丙"], 1, 0, 0.0, miner="random")
