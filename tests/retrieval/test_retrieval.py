"""BM25, fusion and the retriever choice: real tokenizers, a real BM25 index over the
sample PDFs' chunks and the questions people wrote about them, and a real (tiny) model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.evaluation.evaluate import evaluate_model, evaluate_retrievers
from tasks.reporting.tables import metric_value
from tasks.retrieval.fusion import ranks, rrf_fusion, standardize, zscore_fusion
from tasks.retrieval.lexical import BM25Index, tokenize
from tasks.retrieval.metrics import PER_QUESTION, metrics_from_scores
from tasks.retrieval.retriever import RetrieverSpec, candidates, choose, combine, even_mix, paired_gain, score_grid
from tests.evaluation.test_evaluation import qa_dataset
from tests.tiny_model import make_tiny_st_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sample_human_dataset():
    """The sample PDFs' chunks (the pipeline's own reading and chunking) and the questions
    people wrote about them, matched to their chunks."""
    from tasks.chunks.chunking import chunk_documents
    from tasks.documents.reading import load_documents
    from tasks.evaluation.human_questions import load_human_questions, resolve_questions

    docs = load_documents(REPO / "data" / "pdf").documents
    chunks = chunk_documents(docs, 300, 30)
    resolved = resolve_questions(load_human_questions(REPO / "data" / "pdf" / "human_questions.json"), chunks)
    assert resolved.n_resolved > 100
    return resolved.dataset


# --- tokenizers ---------------------------------------------------------------------------


def test_char_tokens_are_characters_bigrams_and_latin_words():
    assert tokenize("合同A1，到期！") == ["合", "同", "合同", "a1", "到", "期", "到期"]
    assert tokenize("，。！？  ") == []


def test_jieba_tokens_are_words_without_punctuation():
    tokens = tokenize("原告于2019年向法院起诉。", "jieba")
    assert "原告" in tokens and "法院" in tokens and "起诉" in tokens
    assert all(t.strip("，。") for t in tokens)


def test_unknown_tokenizer_names_the_choices():
    with pytest.raises(ValueError, match="char, jieba"):
        tokenize("文本", "whitespace")


# --- BM25 over real chunks -----------------------------------------------------------------------


def test_bm25_on_the_sample_pdfs_finds_what_people_asked(sample_human_dataset):
    ds = sample_human_dataset
    qids = [q for q in ds.queries if ds.relevant_docs.get(q)]
    index = BM25Index.build(list(ds.corpus), list(ds.corpus.values()))
    m = metrics_from_scores(ds, index.score_matrix([ds.queries[q] for q in qids]), "bm25")
    # A keyword index is a strong baseline on questions that reuse the text's words; a
    # broken tokenizer or a misaligned score matrix falls far below this.
    assert m["bm25_ndcg@10"] > 0.8
    assert m["bm25_accuracy@10"] > 0.9


def test_bm25_index_round_trips_and_scores_unknown_words_as_zero(tmp_path, sample_human_dataset):
    ds = sample_human_dataset
    index = BM25Index.build(list(ds.corpus), list(ds.corpus.values()))
    index.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    question = next(iter(ds.queries.values()))
    assert loaded.chunk_ids == index.chunk_ids
    np.testing.assert_array_equal(loaded.scores(question), index.scores(question))
    assert not index.scores("？！").any() and not index.scores("xyzzy").any()


def test_bm25_refuses_an_empty_corpus():
    with pytest.raises(ValueError, match="no chunks"):
        BM25Index.build([], [])


# --- fusion ------------------------------------------------------------------------------------


def test_fusion_extremes_rank_like_each_side():
    rng = np.random.default_rng(0)
    dense, lexical = rng.random((5, 20)), rng.random((5, 20)) * 30
    np.testing.assert_array_equal(ranks(zscore_fusion(dense, lexical, 1.0)), ranks(dense))
    np.testing.assert_array_equal(ranks(zscore_fusion(dense, lexical, 0.0)), ranks(lexical))
    mixed = zscore_fusion(dense, lexical, 0.5)
    assert not np.array_equal(ranks(mixed), ranks(dense)) and not np.array_equal(ranks(mixed), ranks(lexical))


def test_a_row_of_ties_standardizes_to_zero_and_rrf_rewards_agreement():
    assert not standardize(np.array([[3.0, 3.0, 3.0]])).any()
    fused = rrf_fusion(np.array([[0.9, 0.5, 0.1]]), np.array([[2.0, 9.0, 0.0]]))
    assert fused[0].argmin() == 2  # last in both rankings


# --- the retriever grid and its choice --------------------------------------------------------


def test_every_row_counts_like_the_dense_evaluator(tmp_path):
    """The dense row of the grid is the evaluate stage's old number, key by key."""
    tiny = make_tiny_st_model(tmp_path / "tiny")
    ds = qa_dataset()
    grid = evaluate_retrievers(str(tiny), ds, candidates([0.5]), batch_size=4)
    assert list(grid) == ["bm25", "hybrid w=0.5", "dense", "rrf"]
    reference = evaluate_model(str(tiny), ds, batch_size=4)
    assert grid["dense"].keys() - {PER_QUESTION} == reference.keys()
    for key, value in reference.items():
        assert grid["dense"][key] == pytest.approx(value, abs=1e-9), key
    # BM25 counts the same way: the hand-made dataset's questions reuse their chunk's words.
    assert metric_value(grid["bm25"], "accuracy@1") >= 4 / 6


def test_combine_refuses_missing_scores():
    with pytest.raises(ValueError, match="BM25"):
        combine(RetrieverSpec.hybrid(0.5), np.zeros((1, 2)), None)
    with pytest.raises(ValueError, match="dense"):
        combine(RetrieverSpec("dense"), None, np.zeros((1, 2)))


def test_choice_takes_the_best_and_breaks_ties_toward_an_even_mix():
    specs = candidates([0.2, 0.5, 0.8])
    flat = {s.label: {"ndcg@10": 0.8, "mrr@10": 0.7} for s in specs}
    assert choose(flat, specs).label == "hybrid w=0.5"
    assert choose({**flat, "bm25": {"ndcg@10": 0.81, "mrr@10": 0.1}}, specs).label == "bm25"
    assert choose({**flat, "dense": {"ndcg@10": 0.8, "mrr@10": 0.71}}, specs).label == "dense"
    # Without per-question scores the margin cannot be applied: the plain best, as before.
    assert choose({**flat, "bm25": {"ndcg@10": 0.81, "mrr@10": 0.1}}, specs, margin_se=1.0).label == "bm25"


def _grid(per_question: dict[str, list[float]]) -> dict[str, dict]:
    return {label: {"ndcg@10": float(np.mean(v)), "mrr@10": float(np.mean(v)), PER_QUESTION: v}
            for label, v in per_question.items()}


def test_margin_keeps_the_even_fusion_unless_another_is_clearly_better():
    specs = candidates([0.3, 0.5, 0.7])
    even = [1.0, 0.5, 1.0, 0.63, 1.0, 0.5, 1.0, 1.0]
    same = {s.label: even for s in specs}
    # BM25 gains on one question and loses a little on another: higher on average, within one standard error.
    noisy = _grid({**same, "bm25": [1.0, 1.0, 1.0, 0.5, 1.0, 0.5, 1.0, 1.0]})
    assert choose(noisy, specs).label == "bm25"  # the plain argmax
    assert choose(noisy, specs, margin_se=1.0).label == "hybrid w=0.5"
    # The dense model gains on three questions and loses on none: beyond the margin.
    clear = _grid({**same, "bm25": noisy["bm25"][PER_QUESTION], "dense": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]})
    assert choose(clear, specs, margin_se=1.0).label == "dense"
    # Of several beyond the margin, the best on validation.
    both = _grid({**same, "dense": [1.0] * 8, "rrf": [1.0, 1.0, 1.0, 1.0, 1.0, 0.63, 1.0, 1.0]})
    assert choose(both, specs, margin_se=1.0).label == "dense"
    assert even_mix(specs).label == "hybrid w=0.5" and even_mix(candidates([0.2, 0.8])).label == "hybrid w=0.2"
    assert even_mix(candidates([])) is None


def test_paired_gain_is_the_paired_t_statistic():
    rng = np.random.default_rng(0)
    a, b = rng.random(30), rng.random(30)
    d = a - b
    assert paired_gain(a, b) == pytest.approx(d.mean() / (d.std(ddof=1) / np.sqrt(30)))
    assert paired_gain(a, b) == pytest.approx(-paired_gain(b, a))
    assert paired_gain([1.0, 1.0], [0.5, 0.5]) == np.inf
    with pytest.raises(ValueError, match="same questions"):
        paired_gain([1.0, 0.5], [1.0])


def test_per_question_ndcg_averages_to_the_evaluators(sample_human_dataset):
    ds = sample_human_dataset
    qids = [q for q in ds.queries if ds.relevant_docs.get(q)]
    lexical = BM25Index.build(list(ds.corpus), list(ds.corpus.values())).score_matrix([ds.queries[q] for q in qids])
    assert PER_QUESTION not in metrics_from_scores(ds, lexical, "bm25")
    m = metrics_from_scores(ds, lexical, "bm25", per_question=True)
    assert len(m[PER_QUESTION]) == len(qids)
    assert np.mean(m[PER_QUESTION]) == pytest.approx(m["bm25_ndcg@10"], abs=1e-6)
    assert 0 < min(m[PER_QUESTION]) < 1 == max(m[PER_QUESTION])  # some questions are missed, some found first


def test_grid_on_real_chunks_fuses_bm25_and_scores(sample_human_dataset):
    ds = sample_human_dataset
    qids = [q for q in ds.queries if ds.relevant_docs.get(q)]
    lexical = BM25Index.build(list(ds.corpus), list(ds.corpus.values())).score_matrix([ds.queries[q] for q in qids])
    noise = np.random.default_rng(1).random(lexical.shape)  # a dense model that knows nothing
    grid = score_grid(ds, noise, lexical, candidates([0.1, 0.9]))
    ndcg = {k: metric_value(v, "ndcg@10") for k, v in grid.items()}
    # The more weight on a dense model that knows nothing, the worse; BM25's share carries it.
    assert min(ndcg["bm25"], ndcg["hybrid w=0.1"]) > ndcg["hybrid w=0.9"] > ndcg["dense"]
    assert choose(grid, candidates([0.1, 0.9])).label in ("bm25", "hybrid w=0.1")


# --- BM25 over each chunk with its questions ------------------------------------------------


def test_no_question_meets_itself_beside_its_own_chunk(sample_human_dataset):
    """A question about a chunk that is also among that chunk's expansion is scored against
    an index where the chunk is expanded by its other questions only (and every chunk sets
    aside the question at the same place in its list, asked in the same round): the scores
    equal those of that index built by hand, and they are not those of the full index (the leak)."""
    from tasks.retrieval.expansion import expanded_index, expanded_scores, expanded_texts

    ds = sample_human_dataset
    ids, texts = list(ds.corpus), list(ds.corpus.values())
    qids = list(ds.queries)[:12]
    # Each chunk expanded by the people's questions about it and one written question more.
    expansion = {}
    for q in qids:
        for c in ds.relevant_docs[q]:
            expansion.setdefault(c, []).append(ds.queries[q])
    for c in list(expansion):
        expansion[c].append("这一段讲的是什么？")
    queries, relevant = [ds.queries[q] for q in qids], [ds.relevant_docs[q] for q in qids]

    held_out = expanded_scores(ids, texts, expansion, queries, relevant)
    leaky = expanded_index(ids, texts, expansion).score_matrix(queries)
    place = [expansion[own[0]].index(query) for query, own in zip(queries, relevant)]
    for row, (query, own) in enumerate(zip(queries, relevant)):
        same_round = {}
        for other, other_own, j in zip(queries, relevant, place):
            if j == place[row]:
                for c in other_own:
                    same_round.setdefault(c, set()).add(other)
        assert query in same_round[own[0]]
        by_hand = BM25Index.build(ids, expanded_texts(ids, texts, expansion, same_round))
        assert np.allclose(held_out[row], by_hand.scores(query), atol=1e-5)
        # The siblings still expand the chunk: the held-out index is not the plain one.
        assert not np.allclose(held_out[row], BM25Index.build(ids, texts).scores(query))
    own_columns = [[ids.index(c) for c in own] for own in relevant]
    assert all(leaky[r, cols].max() > held_out[r, cols].max() for r, cols in enumerate(own_columns))
    # Questions outside the expansion meet the full index: what search serves.
    others = list(ds.queries)[12:20]
    other = [ds.queries[q] for q in others]
    assert np.allclose(expanded_scores(ids, texts, expansion, other, [ds.relevant_docs[q] for q in others]),
                       expanded_index(ids, texts, expansion).score_matrix(other), atol=1e-6)


def test_expanded_candidates_are_labelled_and_round_trip():
    specs = candidates([0.5], expansion=True)
    assert [s.label for s in specs] == ["bm25", "hybrid w=0.5", "dense", "rrf", "bm25 (expanded)",
                                        "hybrid w=0.5 (expanded)"]
    assert all(RetrieverSpec.from_dict(s.to_dict()) == s for s in specs)
    assert "its questions" in RetrieverSpec("bm25", expanded=True).describe()
    assert RetrieverSpec("dense").with_expansion() == RetrieverSpec("dense")  # no BM25 to expand


@pytest.mark.slow
def test_evaluation_scores_expanded_bm25_without_the_questions_own_leak(tmp_path, sample_human_dataset):
    """evaluate_retrievers with an expansion file: the expanded rows exist, are left out
    without the file, and a question indexed beside its own chunk does not find it by itself."""
    from tasks.retrieval.expansion import save_expansion

    tiny = make_tiny_st_model(tmp_path / "tiny")
    ds = sample_human_dataset
    # The worst case: every question of the set is in its own chunk's expansion.
    leak = {}
    for q, text in ds.queries.items():
        for c in ds.relevant_docs[q]:
            leak.setdefault(c, []).append(text)
    save_expansion(leak, tmp_path / "expansion.json")
    specs = candidates([0.5], expansion=True)
    grid = evaluate_retrievers(str(tiny), ds, specs, expansion=tmp_path / "expansion.json")
    assert {"bm25 (expanded)", "hybrid w=0.5 (expanded)"} <= set(grid)
    assert "bm25 (expanded)" not in evaluate_retrievers(str(tiny), ds, specs)
    # Held out from their own chunks, people's questions gain nothing like the leak's near-perfect score.
    from tasks.retrieval.expansion import expanded_index

    from tasks.retrieval.metrics import question_order

    index = expanded_index(list(ds.corpus), list(ds.corpus.values()), leak)
    leaky = metrics_from_scores(ds, index.score_matrix([ds.queries[q] for q in question_order(ds)]), "bm25")
    assert metric_value(leaky, "ndcg@10") > metric_value(grid["bm25 (expanded)"], "ndcg@10") + 0.05
