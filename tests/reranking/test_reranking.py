"""The reranker: how its scores become a ranking, its training pairs, where it starts from,
and a real training run (the tiny real model's encoder with a new head)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.core.errors import BaseModelError
from tasks.core.qa_dataset import QADataset
from tasks.core.settings import Settings
from tasks.reranking.pairs import first_stage_rows
from tasks.retrieval.rerank import CrossEncoderReranker, rerank
from tasks.retrieval.retriever import RetrieverSpec, candidates, choose

IDS = ["c0", "c1", "c2", "c3", "c4"]


def _scorer(table: dict[int, float]):
    calls = []

    def score_pairs(pairs):
        calls.append(list(pairs))
        return np.array([table[j] for _, j in pairs])

    return score_pairs, calls


def _order(scores: np.ndarray) -> list[str]:
    row = scores[0]
    return [IDS[i] for i in sorted(range(len(row)), key=lambda i: (-row[i], IDS[i]))]


def test_the_top_k_are_ordered_by_the_reranker_and_the_rest_keep_the_first_stage_order():
    first = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
    score_pairs, calls = _scorer({0: 0.1, 1: 0.2, 2: 0.9, 3: 99.0, 4: 98.0})
    out = rerank(first, 3, score_pairs, IDS)
    assert _order(out) == ["c2", "c1", "c0", "c3", "c4"]  # c3 and c4 were never shown to the reranker
    assert calls == [[(0, 0), (0, 1), (0, 2)]]
    assert out[0, 2] == pytest.approx(0.9)  # the reranker's own score for the reranked chunks


def test_ties_go_to_the_lower_chunk_id_in_both_stages():
    first = np.array([[1.0, 3.0, 3.0, 3.0, 0.0]])  # c1, c2, c3 tie: the top 2 are c1 and c2
    score_pairs, calls = _scorer({1: 0.5, 2: 0.5, 3: 9.0})
    out = rerank(first, 2, score_pairs, IDS)
    assert calls == [[(0, 1), (0, 2)]]
    assert _order(out) == ["c1", "c2", "c3", "c0", "c4"]


def test_a_depth_past_the_corpus_reranks_everything():
    first = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    score_pairs, _ = _scorer({0: 5.0, 1: 4.0, 2: 3.0, 3: 2.0, 4: 1.0})
    assert _order(rerank(first, 50, score_pairs, IDS)) == IDS


def test_the_pair_scorer_reads_each_pair_once():
    class Counting:
        def __init__(self):
            self.seen = []

        def predict(self, pairs, **_):
            self.seen += pairs
            return np.arange(len(pairs), dtype=np.float32)

    model = Counting()
    reranker = CrossEncoderReranker("unused", model=model)
    reranker.predict = lambda pairs, show_progress_bar=False: model.predict(pairs)  # noqa: E731
    scorer = reranker.scorer(["q"], ["a", "b", "c"])
    scorer([(0, 0), (0, 1)])
    scorer([(0, 1), (0, 2), (0, 0)])
    assert model.seen == [("q", "a"), ("q", "b"), ("q", "c")]


def test_negatives_are_the_first_stages_best_wrong_chunks_as_many_for_every_row():
    ds = QADataset(queries={"q1": "问一", "q2": "问二"}, corpus={c: f"文{c}" for c in IDS},
                   relevant_docs={"q1": ["c0"], "q2": ["c3", "c4"]})
    first = np.array([[0.0, 0.5, 0.9, 0.1, 0.2], [0.0, 0.1, 0.2, 0.9, 0.8]])
    rows = first_stage_rows(ds, first, ["q1", "q2"], IDS, n_negatives=2, depth=4)
    assert rows == [
        {"query": "问一", "positive": "文c0", "negative_1": "文c2", "negative_2": "文c1"},
        {"query": "问二", "positive": "文c3", "negative_1": "文c2", "negative_2": "文c1"},
        {"query": "问二", "positive": "文c4", "negative_1": "文c2", "negative_2": "文c1"},
    ]
    # q2's top 3 holds one wrong chunk: every row gets one negative (the loss needs equal rows).
    assert [len(r) for r in first_stage_rows(ds, first, ["q1", "q2"], IDS, n_negatives=2, depth=3)] == [3, 3, 3]


def test_reranked_candidates_are_the_even_fusion_at_each_depth_and_must_beat_it_clearly():
    specs = candidates([0.3, 0.5], rerank_depths=[50, 20])
    assert [s.label for s in specs][-2:] == ["hybrid w=0.5 + rerank@20", "hybrid w=0.5 + rerank@50"]
    assert RetrieverSpec.from_dict(specs[-1].to_dict()) == specs[-1] and specs[-1].first_stage == specs[2]
    # A reranker one question better on validation stays unshipped under a 2-SE margin ...
    grid = {s.label: {"ndcg@10": 0.5, "mrr@10": 0.5, "ndcg@10_by_question": [0.5] * 10} for s in specs}
    grid["hybrid w=0.5 + rerank@20"] = {"ndcg@10": 0.55, "mrr@10": 0.55,
                                        "ndcg@10_by_question": [1.0] + [0.5] * 9}
    assert choose(grid, specs, margin_se=2.0).label == "hybrid w=0.5"
    # ... and ships when it is better on every question.
    grid["hybrid w=0.5 + rerank@20"]["ndcg@10_by_question"] = [0.55] * 10
    assert choose(grid, specs, margin_se=2.0).label == "hybrid w=0.5 + rerank@20"


def test_reranker_start_is_the_base_model_a_local_folder_or_a_named_error(tmp_path, monkeypatch):
    import tasks.models.base as base_model
    from tasks.models.reranker import prepare_reranker_start

    base = tmp_path / "base"
    assert prepare_reranker_start("base", base, Settings()) == base
    (tmp_path / "ce").mkdir()
    with pytest.raises(BaseModelError, match="no config.json"):
        prepare_reranker_start(str(tmp_path / "ce"), base, Settings())
    (tmp_path / "ce" / "config.json").write_text("{}")
    assert prepare_reranker_start(str(tmp_path / "ce"), base, Settings()) == (tmp_path / "ce").resolve()
    with pytest.raises(BaseModelError, match="is not a folder"):
        prepare_reranker_start(str(tmp_path / "missing" / "ce"), base, Settings())

    def offline(model_id, hub, cache_dir):
        raise ConnectionError("no network")

    monkeypatch.setattr(base_model, "download_snapshot", offline)
    with pytest.raises(BaseModelError) as e:
        prepare_reranker_start("maidalun/bce-reranker-base_v1", base, Settings(models_dir=tmp_path / "models"))
    assert "reranker model 'maidalun/bce-reranker-base_v1' from modelscope" in str(e.value)
    assert "--reranker-model base" in str(e.value)
    assert Settings(profile="gpu").resolved_reranker_model() == "maidalun/bce-reranker-base_v1"
    assert Settings().resolved_reranker_model() == "base"
    # On by default where a reranker checkpoint and the compute for it are at hand.
    assert Settings(profile="gpu").resolved_rerank() and not Settings().resolved_rerank()


def test_a_new_scoring_head_learns_faster_than_a_reranker_is_tuned_unless_told(tmp_path):
    """A head grown on an embedding model's encoder starts from nothing and needs a larger
    step than a reranker that is only adapted; the setting overrides both. Which start is
    which is read from the checkpoint's architecture."""
    import json

    from tasks.reranking.training import has_scoring_head

    assert Settings().resolved_reranker_learning_rate(new_head=True) == 3e-4
    assert Settings().resolved_reranker_learning_rate(new_head=False) == 5e-5
    assert Settings(reranker_learning_rate=1e-5).resolved_reranker_learning_rate(new_head=True) == 1e-5
    for name, architecture in (("encoder", "BertModel"), ("reranker", "XLMRobertaForSequenceClassification")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": [architecture]}))
    assert not has_scoring_head(str(tmp_path / "encoder"), Settings())
    assert has_scoring_head(str(tmp_path / "reranker"), Settings())
    assert Settings(rerank=True).resolved_rerank() and not Settings(profile="gpu", rerank=False).resolved_rerank()


@pytest.mark.slow
def test_a_reranker_is_trained_from_the_bundled_e5_and_saved_whole(tmp_path):
    """Real training, as the CPU profile does it: the bundled e5's encoder with a new head,
    negatives from its own fused first stage, saved atomically; the saved cross-encoder
    loads and scores otherwise than the untrained start. (What the training is worth is
    measured on court judgments, in bench.retrievers: a handful of pairs teaches it nothing.)"""
    import torch
    from safetensors.torch import load_file

    from tasks.models.base import prepare_base_model
    from tasks.reranking.training import has_scoring_head, train_reranker

    texts = ["原告张某请求判令被告归还借款五万元及利息。", "被告人李某于二〇一八年三月盗窃电动车一辆，价值两千元。",
             "本院认为，双方签订的买卖合同合法有效，双方均应当履行。", "公司未按约定期限支付货款，应承担违约责任。",
             "被告人王某以高息为诱饵向社会公众吸收存款三百万元。", "原被告于二〇一五年登记结婚，婚后育有一子。"]
    questions = ["张某要求被告归还多少钱？", "李某偷了什么东西？", "法院如何认定买卖合同的效力？", "公司为什么要承担违约责任？",
                 "王某吸收了多少存款？", "原被告是哪一年结婚的？"]
    ds = QADataset(queries={f"q{i}": q for i, q in enumerate(questions)},
                   corpus={f"c{i}": t for i, t in enumerate(texts)},
                   relevant_docs={f"q{i}": [f"c{i}"] for i in range(len(texts))})
    ds.save(tmp_path / "train.json")
    e5 = prepare_base_model(Settings()).path  # the bundled model, converted once into models/
    settings = Settings(reranker_epochs=2, reranker_batch_size=3, reranker_negatives=2, eval_batch_size=8)
    result = train_reranker(e5, e5, tmp_path / "train.json", tmp_path / "reranker", settings)
    assert result.n_questions == 6 and result.n_pairs == 6 * 3 and result.steps == 2 * 2
    assert not list((tmp_path / "reranker").glob(".trainer*"))
    untrained = train_reranker(e5, e5, tmp_path / "train.json", tmp_path / "untrained",
                               settings.model_copy(update={"reranker_epochs": 0}))
    assert untrained.steps == 0
    assert has_scoring_head(str(tmp_path / "reranker"), settings) and not has_scoring_head(e5, settings)
    trained, start = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("reranker", "untrained"))
    moved = [k for k in trained if not torch.equal(trained[k], start[k])]
    assert any("classifier" in k for k in moved) and any("encoder.layer.11" in k for k in moved)
    assert not any("word_embeddings" in k for k in moved)  # frozen: most of the weights, little to learn
    pairs = [(q, t) for q in questions for t in texts]
    assert not np.allclose(CrossEncoderReranker(tmp_path / "reranker").predict(pairs),
                           CrossEncoderReranker(tmp_path / "untrained").predict(pairs))


@pytest.mark.slow
def test_a_blank_pooler_is_initialised_so_the_encoder_learns_from_the_first_step():
    """The bundled e5 carries its unused pooler as zeros; a cross-encoder scores through it,
    so a zero pooler passes the encoder no gradient. Initialised afresh, it does, and a
    pooler that is not blank is left as it is."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from tasks.models.base import prepare_base_model
    from tasks.reranking.training import initialise_blank_pooler

    def encoder_gradient(ce) -> float:
        ce.model.zero_grad()
        features = ce.tokenizer(["张某要求被告归还多少钱？"], ["原告张某请求判令被告归还借款五万元及利息。"],
                                return_tensors="pt")
        ce.model(**features).logits.sum().backward()
        return float(ce.model.base_model.encoder.layer[11].output.dense.weight.grad.abs().sum())

    e5 = prepare_base_model(Settings()).path
    torch.manual_seed(0)
    ce = CrossEncoder(e5, num_labels=1)
    pooler = ce.model.base_model.pooler.dense
    assert torch.count_nonzero(pooler.weight) == 0 and encoder_gradient(ce) == 0.0
    assert initialise_blank_pooler(ce)
    assert 0.015 < float(pooler.weight.std()) < 0.025 and encoder_gradient(ce) > 0.0
    kept = pooler.weight.clone()
    assert not initialise_blank_pooler(ce) and torch.equal(pooler.weight, kept)
