"""Fine-tuning a tiny real BERT with the sentence-transformers trainer (no mocks)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from tasks.evaluation.evaluate import evaluate_model
from tasks.core.qa_dataset import QADataset
from tasks.core.settings import Settings
from tasks.core.errors import NotEnoughPairsError
from tasks.training.recipe import column_prompts
from tasks.training.saving import save_model_atomic
from tasks.training.trainer import train_model
from tests.tiny_model import DEFAULT_PROMPTS, make_tiny_st_model

SUBJECTS = "猫狗马牛羊鸡鸭鹅鱼虾蟹龟蛇鹿熊狼虎豹狐兔鼠猴象鹰"
PLACES = "山河湖海林田园城村岛"

# Enough steps and a large enough learning rate for a random 2-layer BERT to learn
# 24 pairs; the library defaults (2e-5, 3 epochs) would barely move it. The plain in-batch
# recipe (no hard negatives; those are tested in test_training_recipe.py): at this learning
# rate the random model does not learn the 24 look-alike pairs with a mined negative added.
# Its token embeddings are random too, so they are trained (a real base model's are kept).
LEARN = dict(epochs=10, batch_size=8, learning_rate=5e-3, warmup_steps=0, seed=42, max_seq_length=48, hard_negatives=0,
             freeze_embeddings=False)


def animal_dataset(n: int = 24) -> QADataset:
    """n distinct question/chunk pairs: 'where does the cat live?' → 'the cat lives by the hill…'."""
    queries, corpus, relevant = {}, {}, {}
    for i, animal in enumerate(SUBJECTS[:n]):
        corpus[f"c{i}"] = f"{animal}住在{PLACES[i % len(PLACES)]}边，每天吃{i + 1}顿饭。"
        queries[f"q{i}"] = f"{animal}住在哪里？"
        relevant[f"q{i}"] = [f"c{i}"]
    return QADataset(queries=queries, corpus=corpus, relevant_docs=relevant)


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("training")
    ds = animal_dataset()
    ds.save(root / "train_dataset.json")
    texts = [*ds.queries.values(), *ds.corpus.values()]
    base = make_tiny_st_model(root / "base", texts=texts)
    return {"root": root, "dataset": ds, "train": root / "train_dataset.json", "base": base}


@pytest.fixture(scope="module")
def trained(setup) -> dict:
    """One real training run, shared by the tests that inspect its result."""
    out = setup["root"] / "model"
    # A stale model is already there: the new one must replace it entirely.
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    seen_prompts: set[str | None] = set()
    original = SentenceTransformer.preprocess

    def recording_preprocess(self, inputs, prompt=None, **kwargs):
        seen_prompts.add(prompt)
        return original(self, inputs, prompt=prompt, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SentenceTransformer, "preprocess", recording_preprocess)
        result = train_model(str(setup["base"]), setup["train"], out, Settings(**LEARN))
    return {"result": result, "out": out, "prompts": seen_prompts}


@pytest.mark.slow
def test_result_counts_steps_pairs_and_loss(trained):
    r = trained["result"]
    # 24 distinct pairs: NO_DUPLICATES never has to split a batch, so ceil(24/8) per epoch.
    assert r.steps == 3 * LEARN["epochs"] == 30
    assert (r.n_pairs, r.epochs) == (24, LEARN["epochs"])
    assert r.model_path == str(trained["out"])
    assert r.seconds > 0
    # MNRL over a batch of 8 starts near ln(8) ≈ 2.08; after learning it is far lower.
    assert math.isfinite(r.loss) and r.loss < 1.0


@pytest.mark.slow
def test_saved_model_loads_with_prompts_card_and_safetensors(trained):
    out = trained["out"]
    model = SentenceTransformer(str(out))
    assert model.prompts == DEFAULT_PROMPTS
    config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == DEFAULT_PROMPTS
    assert model.max_seq_length == LEARN["max_seq_length"]
    assert (out / "model.safetensors").is_file()
    assert not list(out.rglob("*.bin"))
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "language:\n- zh" in card
    assert "MultipleNegativesRankingLoss" in card
    assert "train_dataset" in card  # the dataset name
    # Replaced wholesale, and nothing left beside it.
    assert not (out / "stale.txt").exists()
    assert leftovers(out.parent, out.name) == []


@pytest.mark.slow
def test_prompts_are_applied_to_the_columns(trained):
    # The trainer prepends the model's own query/document prompts to anchor/positive.
    assert {"query: ", "passage: "} <= trained["prompts"]


@pytest.mark.slow
def test_weights_changed(setup, trained):
    before = load_file(str(setup["base"] / "model.safetensors"))
    after = load_file(str(trained["out"] / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = [k for k in before if not (before[k] == after[k]).all()]
    assert len(changed) > len(before) // 2


@pytest.mark.slow
def test_frozen_token_embeddings_stay_the_base_models_and_the_rest_trains(setup, tmp_path):
    out = tmp_path / "model"
    r = train_model(str(setup["base"]), setup["train"], out, Settings(**{**LEARN, "epochs": 2, "freeze_embeddings": True}))
    before = load_file(str(setup["base"] / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    changed = {k for k in before if not (before[k] == after[k]).all()}
    assert "embeddings.word_embeddings.weight" not in changed
    assert {k for k in before if "encoder.layer" in k} <= changed  # every layer above it moved
    assert r.steps == 3 * 2 and math.isfinite(r.loss)


@pytest.mark.slow
def test_attention_dropout_is_off_while_training_and_the_saved_config_keeps_the_models(setup, tmp_path):
    seen = []

    def record(args, state, control, model=None, **kwargs):
        seen.append({m.p for name, m in model.named_modules() if name.endswith("attention.self.dropout")})

    from transformers import TrainerCallback

    callback = type("Record", (TrainerCallback,), {"on_step_begin": lambda self, *a, **k: record(*a, **k)})()
    out = tmp_path / "model"
    train_model(str(setup["base"]), setup["train"], out, Settings(**{**LEARN, "epochs": 1}), callbacks=[callback])
    assert seen and all(ps == {0.0} for ps in seen)  # every attention layer, every step
    base = json.loads((setup["base"] / "config.json").read_text())
    saved = json.loads((out / "config.json").read_text())
    assert saved["attention_probs_dropout_prob"] == base["attention_probs_dropout_prob"] == 0.1
    assert "attention_dropout" not in saved


@pytest.mark.slow
def test_training_improves_retrieval_on_its_pairs(setup, trained):
    base = evaluate_model(str(setup["base"]), setup["dataset"])
    tuned = evaluate_model(str(trained["out"]), setup["dataset"])
    # The random base model ranks 24 chunks almost by chance (accuracy@1 ≈ 1/24..1/8).
    assert base["cosine_accuracy@1"] < 0.5
    assert tuned["cosine_accuracy@1"] >= base["cosine_accuracy@1"] + 0.4
    assert tuned["cosine_ndcg@10"] >= base["cosine_ndcg@10"] + 0.3


@pytest.mark.slow
def test_same_seed_same_loss_and_other_seed_differs(setup, tmp_path):
    def loss(seed: int, name: str) -> float:
        s = Settings(**{**LEARN, "epochs": 1, "seed": seed})
        return train_model(str(setup["base"]), setup["train"], tmp_path / name, s).loss

    first, again, other = loss(7, "a"), loss(7, "b"), loss(8, "c")
    assert first == again
    assert other != first
    assert tree_digest(tmp_path / "a")["model.safetensors"] == tree_digest(tmp_path / "b")["model.safetensors"]


@pytest.mark.slow
def test_model_without_prompts_cls_pooling_like_bce(tmp_path, setup):
    base = make_tiny_st_model(tmp_path / "bce-like", pooling="cls", prompts=None)
    assert column_prompts(SentenceTransformer(str(base)).prompts) is None
    r = train_model(str(base), setup["train"], tmp_path / "out", Settings(epochs=1, batch_size=8))
    assert r.steps == 3
    model = SentenceTransformer(str(tmp_path / "out"))
    assert not any(model.prompts.values())
    assert model[1].pooling_mode == "cls"


def test_too_few_pairs_is_a_clear_error_before_training(tmp_path, setup):
    animal_dataset(5).save(tmp_path / "small.json")
    with pytest.raises(NotEnoughPairsError, match=r"5 training pairs, fewer than batch size 8: add PDFs or lower --batch-size"):
        train_model(str(setup["base"]), tmp_path / "small.json", tmp_path / "out", Settings(batch_size=8))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_crash_while_saving_keeps_the_previous_model(tmp_path, setup, monkeypatch):
    out = tmp_path / "model"
    shutil.copytree(setup["base"], out)
    before = tree_digest(out)
    original = SentenceTransformer.save

    def save_then_crash(self, path, *args, **kwargs):
        original(self, path, *args, **kwargs)  # a (nearly) complete model is on disk…
        raise OSError("No space left on device")  # …when the process dies

    monkeypatch.setattr(SentenceTransformer, "save", save_then_crash)
    with pytest.raises(OSError, match="No space left"):
        train_model(str(setup["base"]), setup["train"], out, Settings(epochs=1, batch_size=8))
    assert tree_digest(out) == before
    assert leftovers(tmp_path, "model") == []


def test_leftovers_of_an_interrupted_save_are_cleaned_up(tmp_path, setup):
    model = SentenceTransformer(str(setup["base"]))
    out = tmp_path / "model"
    out.mkdir()
    (tmp_path / ".model.tmp-dead").mkdir()  # killed while writing
    (tmp_path / ".model.old-dead").mkdir()  # killed after the swap, before the delete
    save_model_atomic(model, out)
    assert leftovers(tmp_path, "model") == []
    assert SentenceTransformer(str(out)).prompts == DEFAULT_PROMPTS


def test_previous_model_is_restored_after_a_crash_between_the_renames(tmp_path, setup, monkeypatch):
    # Killed after renaming the old model away and before renaming the new one in:
    # the old model is only under .model.old-*. The next save puts it back first, so
    # even if that save fails too, the previous model is at its place.
    shutil.copytree(setup["base"], tmp_path / ".model.old-1234")
    before = tree_digest(tmp_path / ".model.old-1234")
    model = SentenceTransformer(str(setup["base"]))

    def crash(self, *args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(SentenceTransformer, "save", crash)
    with pytest.raises(OSError):
        save_model_atomic(model, tmp_path / "model")
    assert tree_digest(tmp_path / "model") == before
    assert leftovers(tmp_path, "model") == []


def test_column_prompts():
    assert column_prompts({"query": "query: ", "document": "passage: "}) == {
        "anchor": "query: ",
        "positive": "passage: ",
    }
    assert column_prompts({"query": "为这个句子生成表示以用于检索相关文章：", "document": ""}) == {
        "anchor": "为这个句子生成表示以用于检索相关文章："
    }
    assert column_prompts({"query": "", "document": ""}) is None
    assert column_prompts({}) is None


def test_tiny_model_is_reproducible(tmp_path):
    # Tests compare against hand computations and fixed thresholds: the helper must
    # give the same bytes every time.
    a = make_tiny_st_model(tmp_path / "a")
    b = make_tiny_st_model(tmp_path / "b")
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(make_tiny_st_model(tmp_path / "c", seed=1)) != tree_digest(a)


def test_loss_scale_follows_the_base_models_training_temperature():
    from tasks.models.base import default_loss_scale

    assert default_loss_scale("multilingual-e5-small") == 100.0  # e5: temperature 0.01
    assert default_loss_scale("bce-embedding-base_v1") == 20.0  # the loss's own default
    assert default_loss_scale("my-model-e50") == 20.0
