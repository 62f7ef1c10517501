"""The training recipe's additions: argument building, best epoch, resume,
hard negatives with the cached loss, interpolation — with a tiny real BERT, no mocks."""

from __future__ import annotations

import weakref
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback

from tasks.evaluation.evaluate import evaluate_model
from tasks.core.settings import Settings
from tasks.core.errors import TrainingSettingsError
from tasks.training.recipe import default_learning_rate, precision_flags, training_arguments
from tasks.training.trainer import run_fingerprint, train_model
from tests.training.test_training import animal_dataset
from tests.tiny_model import make_tiny_st_model

# A random tiny model: its token embeddings must be learned too.
LEARN = dict(epochs=3, batch_size=8, learning_rate=5e-3, warmup_steps=0, seed=42, max_seq_length=48,
             freeze_embeddings=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("recipe")
    ds = animal_dataset()
    ds.save(root / "train.json")
    # Validation: the same animals asked another way (what did it eat?) — so it can move.
    val = animal_dataset(12)
    val.queries = {q: t.replace("住在哪里", "在哪边生活") for q, t in val.queries.items()}
    val.save(root / "val.json")
    base = make_tiny_st_model(root / "base", texts=[*ds.queries.values(), *ds.corpus.values(), *val.queries.values()])
    return {"root": root, "train": root / "train.json", "val": root / "val.json", "base": base}


# --- arguments, without a GPU ------------------------------------------------------------


def _args(cuda: bool, bf16: bool = True, **overrides) -> dict:
    s = Settings(**{**LEARN, **overrides})
    return training_arguments(
        s, work_dir=Path("w"), learning_rate=2e-5, prompts=None, cuda=cuda, bf16_supported=bf16,
        best_metric="val_cosine_ndcg@10",
    )


def test_gpu_gets_bf16_checkpointing_and_fused_adamw() -> None:
    a = _args(cuda=True)
    assert (a["bf16"], a["fp16"], a["activation_checkpointing"], a["optim"]) == (True, False, True, "adamw_torch_fused")
    assert (a["dataloader_pin_memory"], a["batch_sampler"]) == (True, "no_duplicates")
    old_gpu = _args(cuda=True, bf16=False)
    assert (old_gpu["bf16"], old_gpu["fp16"]) == (False, True)
    assert _args(cuda=True, gradient_checkpointing=False)["activation_checkpointing"] is False


def test_cpu_gets_plain_fp32_adamw_and_checkpointing() -> None:
    a = _args(cuda=False, bf16=False)
    assert (a["bf16"], a["fp16"], a["activation_checkpointing"], a["optim"]) == (False, False, True, "adamw_torch")
    assert _args(cuda=False, gradient_checkpointing=False)["activation_checkpointing"] is False
    assert a["dataloader_pin_memory"] is False
    assert _args(cuda=False, no_duplicate_batches=False)["batch_sampler"] == "batch_sampler"


def test_bf16_on_the_cpu_is_arguments_transformers_accepts() -> None:
    from sentence_transformers import SentenceTransformerTrainingArguments

    a = _args(cuda=False, mixed_precision="bf16")
    assert (a["bf16"], a["use_cpu"]) == (True, True)
    assert "use_cpu" not in _args(cuda=False) and "use_cpu" not in _args(cuda=True, mixed_precision="bf16")
    args = SentenceTransformerTrainingArguments(**{**a, "output_dir": "unused"})  # raised before use_cpu
    assert args.bf16 and args.use_cpu


def test_best_epoch_by_validation_ndcg_and_a_checkpoint_every_epoch() -> None:
    a = _args(cuda=False)
    assert (a["eval_strategy"], a["save_strategy"], a["load_best_model_at_end"]) == ("epoch", "epoch", True)
    assert (a["metric_for_best_model"], a["greater_is_better"]) == ("eval_val_cosine_ndcg@10_later_on_ties", True)
    s = Settings(**LEARN)
    none = training_arguments(s, work_dir=Path("w"), learning_rate=1e-5, prompts=None, cuda=False,
                              bf16_supported=False, best_metric=None)
    assert none["eval_strategy"] == "no" and "load_best_model_at_end" not in none
    assert none["save_strategy"] == "epoch"  # still resumable


def test_impossible_precision_is_a_clear_error() -> None:
    with pytest.raises(TrainingSettingsError, match="fp16 needs a CUDA GPU"):
        precision_flags("fp16", cuda=False, bf16_supported=False)
    with pytest.raises(TrainingSettingsError, match="no bf16"):
        precision_flags("bf16", cuda=True, bf16_supported=False)
    assert precision_flags("no", cuda=True, bf16_supported=True) == {"bf16": False, "fp16": False}


def test_learning_rate_default_follows_model_width() -> None:
    assert default_learning_rate(384) == 2e-5  # e5-small
    assert default_learning_rate(768) == 1e-5  # bce-embedding-base_v1
    assert default_learning_rate(1024) == 5e-6
    assert Settings().learning_rate is None and Settings(learning_rate=3e-5).learning_rate == 3e-5


def test_checkpoint_folder_depends_on_settings_and_data(setup) -> None:
    s = Settings(**LEARN)
    fp = run_fingerprint(str(setup["base"]), setup["train"], setup["val"], s)
    assert fp == run_fingerprint(str(setup["base"]), setup["train"], setup["val"], Settings(**LEARN))
    assert fp != run_fingerprint(str(setup["base"]), setup["train"], setup["val"], Settings(**{**LEARN, "seed": 1}))
    assert fp != run_fingerprint(str(setup["base"]), setup["train"], None, s)
    assert fp != run_fingerprint(str(setup["base"]), setup["val"], setup["val"], s)


# --- real training -------------------------------------------------------------------------


class Interrupt(TrainerCallback):
    """Dies after optimizer step ``k``, like a killed process."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.k:
            raise KeyboardInterrupt(f"interrupted after step {self.k}")


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_last_checkpoint(setup, tmp_path) -> None:
    s = Settings(**LEARN, interpolation_alphas=[])
    out = tmp_path / "model"
    # 24 pairs, batch 8: 3 steps an epoch; a checkpoint after steps 3 and 6.
    with pytest.raises(KeyboardInterrupt):
        train_model(str(setup["base"]), setup["train"], out, s, callbacks=[Interrupt(7)])
    assert not out.exists()
    work = tmp_path / "work"
    [run_dir] = list(work.iterdir())
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]

    again = train_model(str(setup["base"]), setup["train"], out, s)
    assert again.resumed_from is not None and Path(again.resumed_from).name == "checkpoint-6"
    assert (again.steps, again.steps_run) == (9, 3)
    assert SentenceTransformer(str(out)).prompts  # a whole model
    assert not work.exists()  # checkpoints removed after success

    # Exactly the weights of a run never interrupted: the checkpoints' optimizer state (AdamW's
    # moments) is what makes it so; without optimizer.pt the resumed steps start from zero moments.
    never = train_model(str(setup["base"]), setup["train"], tmp_path / "never" / "model", s)
    assert (never.steps_run, never.loss) == (9, again.loss)
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "never" / "model" / "model.safetensors").read_bytes()

    # Other settings never continue that run: a fresh start.
    fresh = train_model(str(setup["base"]), setup["train"], tmp_path / "m2", Settings(**{**LEARN, "seed": 3}))
    assert (fresh.resumed_from, fresh.steps_run) == (None, 9)


@pytest.mark.slow
def test_resume_can_be_turned_off(setup, tmp_path) -> None:
    s = Settings(**LEARN, interpolation_alphas=[], resume_training=False)
    with pytest.raises(KeyboardInterrupt):
        train_model(str(setup["base"]), setup["train"], tmp_path / "model", s, callbacks=[Interrupt(4)])
    r = train_model(str(setup["base"]), setup["train"], tmp_path / "model", s)
    assert (r.resumed_from, r.steps_run) == (None, 9)


@pytest.mark.slow
def test_the_best_epoch_by_validation_ndcg_is_kept(setup, tmp_path) -> None:
    s = Settings(**{**LEARN, "epochs": 4}, interpolation_alphas=[])
    r = train_model(str(setup["base"]), setup["train"], tmp_path / "model", s, val_dataset=setup["val"])
    assert r.best_checkpoint in {f"checkpoint-{3 * e}" for e in range(1, 5)}
    # The saved model is that checkpoint: it scores the best validation NDCG@10 seen.
    saved = evaluate_model(str(tmp_path / "model"), setup["val"])["cosine_ndcg@10"]
    assert saved == pytest.approx(r.best_val_ndcg, abs=1e-6)


@pytest.mark.slow
def test_hard_negatives_with_the_cached_loss_train_and_interpolate(setup, tmp_path) -> None:
    s = Settings(
        **{**LEARN, "batch_size": 12}, hard_negatives=2, hard_negative_skip_top=1, hard_negative_margin=0.0,
        cached_loss=True, mini_batch_size=4, interpolation_alphas=[0.5], alpha_guard_margin=100,
    )
    out = tmp_path / "model"
    r = train_model(str(setup["base"]), setup["train"], out, s, val_dataset=setup["val"], guard_dataset=setup["val"])
    # 24 pairs, batch 12: 2 batches an epoch, more when a negative is another row's positive
    # (no-duplicate batches keep the two apart).
    assert r.hard_negatives == 2 and r.steps >= 3 * 2
    assert [a["alpha"] for a in r.alpha_results] == [0.0, 0.5, 1.0]
    best = max(r.alpha_results, key=lambda a: (a["val_ndcg"], a["alpha"]))
    assert r.alpha == best["alpha"]  # margin 100: only validation counts
    # The saved weights are the chosen mix of the trained and the base weights.
    saved = evaluate_model(str(out), setup["val"])["cosine_ndcg@10"]
    assert saved == pytest.approx(best["val_ndcg"], abs=1e-6)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "CachedMultipleNegativesRankingLoss" in card


class KeepRefs(TrainerCallback):
    """Weak references to the optimizer and its state tensors at the end of training."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []

    def on_train_end(self, args, state, control, optimizer=None, **kwargs):
        self.refs.append(weakref.ref(optimizer))
        self.refs += [weakref.ref(v) for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)]


@pytest.mark.slow
def test_the_alpha_grid_holds_no_optimizer_state_and_reads_the_base_weights_from_disk(setup, tmp_path, monkeypatch):
    import tasks.training.interpolation as interpolation

    seen = {}
    grid = interpolation.interpolate_with_base

    def watching(model, base_state, *args, **kwargs):
        seen["optimizer alive"] = sum(r() is not None for r in keep.refs)
        seen["gradients"] = sum(p.grad is not None for p in model.parameters())
        [seen["base file"]] = [p.name for p in (tmp_path / "work").glob("*/base_state.pt")]
        base = SentenceTransformer(str(setup["base"])).state_dict()
        seen["base exact"] = base.keys() == base_state.keys() and all(torch.equal(base[k], base_state[k]) for k in base)
        return grid(model, base_state, *args, **kwargs)

    monkeypatch.setattr(interpolation, "interpolate_with_base", watching)
    keep = KeepRefs()
    s = Settings(**{**LEARN, "epochs": 1}, interpolation_alphas=[0.5])
    r = train_model(str(setup["base"]), setup["train"], tmp_path / "model", s, val_dataset=setup["val"],
                    callbacks=[keep])
    assert len(keep.refs) > 1 and r.alpha is not None
    assert seen == {"optimizer alive": 0, "gradients": 0, "base file": "base_state.pt", "base exact": True}
    assert not (tmp_path / "work").exists()  # removed with the checkpoints


@pytest.mark.slow
def test_frozen_embeddings_stay_out_of_the_alpha_grid_and_equal_the_base(setup, tmp_path, monkeypatch):
    """Frozen weights are the base's at the end of training: they are neither written to the
    base-state file nor copied and mixed per α, and the saved model keeps them bit for bit."""
    import tasks.training.interpolation as interpolation

    seen = {}
    grid = interpolation.interpolate_with_base

    def watching(model, base_state, *args, **kwargs):
        seen["keys"] = set(base_state)
        seen["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
        return grid(model, base_state, *args, **kwargs)

    monkeypatch.setattr(interpolation, "interpolate_with_base", watching)
    s = Settings(**{**LEARN, "epochs": 1, "freeze_embeddings": True}, interpolation_alphas=[0.5, 0.75])
    r = train_model(str(setup["base"]), setup["train"], tmp_path / "model", s, val_dataset=setup["val"])
    assert seen["keys"] == seen["trainable"] and r.alpha_results
    embedding = next(k for k in SentenceTransformer(str(setup["base"])).state_dict() if "word_embeddings" in k)
    assert embedding not in seen["keys"]
    base, saved = (SentenceTransformer(str(p)).state_dict() for p in (setup["base"], tmp_path / "model"))
    assert torch.equal(saved[embedding], base[embedding])
    if r.alpha:  # the rest was trained (and mixed in)
        assert any(not torch.equal(saved[k], base[k]) for k in seen["keys"])


def test_alphas_come_as_a_list_from_text_env_and_flags(monkeypatch) -> None:
    from flows.settings_cli import build_parser, settings_from_args

    assert Settings(interpolation_alphas="0.5, 0.75").interpolation_alphas == [0.5, 0.75]
    assert Settings(interpolation_alphas="").interpolation_alphas == []
    monkeypatch.setenv("BCE_INTERPOLATION_ALPHAS", "0.3,0.6")
    assert Settings().interpolation_alphas == [0.3, 0.6]
    monkeypatch.delenv("BCE_INTERPOLATION_ALPHAS")
    argv = ["--interpolation-alphas", "0.2,0.4", "--hard-negatives", "2", "--cached-loss"]
    s = settings_from_args(build_parser("python -m flows.finetune_bce", "").parse_args(argv))
    assert (s.interpolation_alphas, s.hard_negatives, s.cached_loss) == ([0.2, 0.4], 2, True)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Settings(interpolation_alphas="0.5,2")


def test_ties_between_epochs_go_to_the_later_epoch() -> None:
    from tasks.training.callbacks import tiebreak_callback as _tiebreak_callback

    class State:
        global_step = 0

    cb, key = _tiebreak_callback("eval_val_cosine_ndcg@10"), "eval_val_cosine_ndcg@10_later_on_ties"
    scores = []
    for step, ndcg in ((6, 0.9385), (12, 0.9385), (18, 0.9300)):
        State.global_step = step
        metrics = {"eval_val_cosine_ndcg@10": ndcg}
        cb.on_evaluate(None, State, None, metrics=metrics)
        scores.append(metrics[key])
    assert scores[1] > scores[0] > scores[2]  # the tie goes to step 12; a real loss still loses
