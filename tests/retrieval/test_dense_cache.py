"""Dense scores computed once per (weights, texts): the α grid's are the evaluate stage's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from tasks.evaluation.evaluate import evaluate_retrievers
from tasks.retrieval import metrics
from tasks.retrieval.dense_cache import DenseScoreCache, weights_digest
from tasks.retrieval.retriever import candidates
from tasks.training.interpolation import interpolate_with_base
from tests.evaluation.test_evaluation import qa_dataset
from tests.tiny_model import make_tiny_st_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_st_model(tmp_path_factory.mktemp("dense-cache") / "tiny")


def _refuse_to_embed(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("embedded again although the cache holds these scores")

    monkeypatch.setattr(metrics, "dense_scores", refuse)


def test_the_second_ask_is_read_back_and_other_weights_are_not_served(tiny, tmp_path, monkeypatch) -> None:
    ds = qa_dataset()
    cache = DenseScoreCache(tmp_path / "scores")
    model = SentenceTransformer(str(tiny))
    first = cache.scores(model, ds)
    assert (cache.hits, cache.misses) == (0, 1) and first.shape == (6, 12)
    assert len(list((tmp_path / "scores").glob("*.npy"))) == 1

    _refuse_to_embed(monkeypatch)
    again = DenseScoreCache(tmp_path / "scores").scores(SentenceTransformer(str(tiny)), ds)  # a reload, a new cache
    np.testing.assert_array_equal(first, again)

    with torch.no_grad():
        next(model.parameters())[0, 0] += 1e-3
    with pytest.raises(AssertionError, match="embedded again"):
        cache.scores(model, ds)  # one weight moved: not the same model


def test_other_texts_or_prompts_are_other_keys(tiny, tmp_path) -> None:
    ds = qa_dataset()
    cache = DenseScoreCache(tmp_path)
    model = SentenceTransformer(str(tiny))
    cache.scores(model, ds)
    ds.corpus["d0"] = "长江是亚洲最长的河流。"
    cache.scores(model, ds)
    model.prompts["query"] = "问题："
    cache.scores(model, ds)
    assert (cache.hits, cache.misses) == (0, 3) and len(list(tmp_path.glob("*.npy"))) == 3


def test_a_damaged_file_is_computed_again(tiny, tmp_path) -> None:
    ds = qa_dataset()
    cache = DenseScoreCache(tmp_path)
    model = SentenceTransformer(str(tiny))
    first = cache.scores(model, ds)
    (path,) = tmp_path.glob("*.npy")
    path.write_bytes(b"not numpy")
    np.testing.assert_array_equal(cache.scores(model, ds), first)
    assert cache.misses == 2 and np.load(path).shape == first.shape  # and written back whole


def test_no_folder_keeps_nothing(tiny, tmp_path) -> None:
    cache = DenseScoreCache(None)
    cache.scores(SentenceTransformer(str(tiny)), qa_dataset())
    assert cache.misses == 1 and not list(tmp_path.iterdir())


def test_the_alpha_grid_leaves_what_the_evaluate_stage_of_the_saved_and_the_base_model_needs(
        tiny, tmp_path, monkeypatch) -> None:
    """The in-memory α = 0 model and the α the grid saves give the digests of the folders
    the evaluations later load, so those evaluations embed nothing and score the same."""
    ds = qa_dataset()
    model = SentenceTransformer(str(tiny))
    with torch.no_grad():  # a base model with negative zeros (4-bit weights made float have them)
        next(model.parameters())[:, :3] = -0.0
    model.save(str(tmp_path / "base"))
    tiny = tmp_path / "base"
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    with torch.no_grad():  # "training": every weight moves a little
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path / "scores"
    chosen, rows = interpolate_with_base(model, base_state, ds, ds, [0.5], margin=100,
                                         scores=DenseScoreCache(folder))
    assert [r.alpha for r in rows] == [0.0, 0.5, 1.0]
    saved = tmp_path / "model"
    model.save(str(saved))

    specs = candidates([0.5])
    expected = {side: evaluate_retrievers(str(path), ds, specs) for side, path in (("base", tiny), ("tuned", saved))}
    _refuse_to_embed(monkeypatch)
    for side, path in (("base", tiny), ("tuned", saved)):
        assert evaluate_retrievers(str(path), ds, specs, score_cache=folder) == expected[side]
    # And the NDCG the grid chose by is the evaluate stage's number for that model.
    assert rows[[r.alpha for r in rows].index(chosen.alpha)].val_ndcg == expected["tuned"]["dense"]["cosine_ndcg@10"]
    assert rows[0].val_ndcg == expected["base"]["dense"]["cosine_ndcg@10"]


def test_weights_digest_reads_every_tensor_kind() -> None:
    a = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))  # float weights, an int64 buffer
    b = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    b.load_state_dict(a.state_dict())
    assert weights_digest(a) == weights_digest(b)
    b[1].num_batches_tracked += 1
    assert weights_digest(a) != weights_digest(b)
    assert weights_digest(a.to(torch.bfloat16)) != weights_digest(b.to(torch.float32))


def test_the_same_weights_truncating_otherwise_are_another_key(tiny, tmp_path) -> None:
    ds = qa_dataset()
    cache = DenseScoreCache(tmp_path)
    model = SentenceTransformer(str(tiny))
    cache.scores(model, ds)
    model.max_seq_length = 4  # training may truncate; the folder the evaluation loads does not
    cache.scores(model, ds)
    assert cache.misses == 2
