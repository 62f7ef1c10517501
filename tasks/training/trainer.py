"""Fine-tune an embedding model on question/chunk pairs.

Each question is an *anchor* and its chunk the *positive*; the other chunks of the
batch are the negatives (:class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss`),
so larger batches give harder training. On top of that recipe (:mod:`tasks.training.recipe`;
see ``bench/training_recipes.py`` for what each step is worth on human questions):

* batches never hold the same text twice (``no_duplicate_batches``): a chunk with two
  questions would otherwise be its own false negative;
* optional hard negatives mined with the base model (:mod:`tasks.training.hard_negatives`);
* optional ``CachedMultipleNegativesRankingLoss``: ``batch_size`` negatives with the
  memory of ``mini_batch_size`` texts per forward pass;
* on a GPU: bf16 (fp16 where bf16 is missing), gradient checkpointing, fused AdamW;
* with a validation set: evaluated every epoch, the epoch with the best NDCG@10 is kept;
* checkpoints every epoch in a work folder named by the settings and data, so a rerun
  after an interruption continues from the last one;
* with a validation set: the weights are mixed with the base weights,
  ``α·tuned + (1−α)·base`` (:mod:`tasks.training.interpolation`), α chosen on the validation set
  under a guard-set margin.

The model's own ``query`` / ``document`` prompts are prepended the way
sentence-transformers does at inference time. The finished model is written to
``output_dir`` atomically (:func:`tasks.training.saving.save_model_atomic`). This module
runs the training: load the model, fit, mix with the base, save.

Example::

    >>> import tempfile
    >>> from tasks.models.base import prepare_base_model
    >>> base = prepare_base_model(Settings(base_model="bundled:multilingual-e5-small")).path
    >>> out = Path(tempfile.mkdtemp())
    >>> QADataset(queries={"q1": "袋鼠住在哪里？", "q2": "泡泡战士由哪家公司开发？", "q3": "水在多少度沸腾？", "q4": "冰在几度融化？"},
    ...           corpus={"a": "尤金袋鼠分布在澳洲南部。", "b": "泡泡战士由韩国Nexon开发。", "c": "水在一百摄氏度时沸腾。", "d": "冰在零度融化。"},
    ...           relevant_docs={"q1": ["a"], "q2": ["b"], "q3": ["c"], "q4": ["d"]}).save(out / "train_dataset.json")
    >>> result = train_model(base, out / "train_dataset.json", out / "model", Settings(epochs=1, batch_size=2))
    {'loss': ..., 'epoch': '1'}
    {'train_runtime': ..., 'train_loss': ..., 'epoch': '1'}
    >>> result.steps, result.n_pairs, result.alpha  # no validation set: no α to choose
    (2, 4, None)
    >>> (out / "model" / "modules.json").is_file()
    True
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import NotEnoughPairsError
from tasks.core.fileio import sha256_file, stable_hash
from tasks.core.memory import release_freed_memory
from tasks.core.qa_dataset import QADataset
from tasks.core.settings import Settings
from tasks.training.callbacks import tiebreak_callback
from tasks.training.recipe import (attention_dropout_config, column_prompts, freeze_token_embeddings, learning_rate,
                                   loss_scale, make_loss, restore_base_config, training_arguments, training_columns)
from tasks.training.saving import BASE_STATE, save_model_atomic, save_trainable_state

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

VAL_NAME = "val"
BEST_METRIC = f"{VAL_NAME}_cosine_ndcg@10"  # the evaluator's name for validation NDCG@10


@dataclass(frozen=True)
class TrainResult:
    steps: int
    epochs: int
    n_pairs: int
    seconds: float
    model_path: str
    loss: float
    """Mean training loss over the last epoch."""
    steps_run: int = 0
    """Optimizer steps run by this call (fewer than ``steps`` when it resumed)."""
    resumed_from: str | None = None
    learning_rate: float = 0.0
    hard_negatives: int = 0
    best_checkpoint: str | None = None
    best_val_ndcg: float | None = None
    alpha: float | None = None
    """The chosen interpolation weight (None: no interpolation was done)."""
    alpha_results: list[dict[str, Any]] = field(default_factory=list)


def run_fingerprint(
    base_model_path: str, train_dataset: Path, val_dataset: Path | None, settings: Settings
) -> str:
    """Name of the checkpoint folder: the same settings and data give the same name."""
    return stable_hash(
        {
            "base": str(Path(base_model_path).resolve()),
            "train": sha256_file(Path(train_dataset)),
            "val": sha256_file(Path(val_dataset)) if val_dataset else None,
            # What training reads, as its stage's cache key does; whether to resume is not the run's identity.
            "settings": {k: v for k, v in settings.groups_dump(["training"]).items() if k != "resume_training"},
        }
    )[:16]


def train_model(
    base_model_path: str,
    train_dataset: Path,
    output_dir: Path,
    settings: Settings,
    work_dir: Path | None = None,
    *,
    val_dataset: Path | None = None,
    guard_dataset: Path | QADataset | None = None,
    license: str | None = None,
    model_name: str | None = None,
    callbacks: list[Any] | None = None,
    score_cache: Path | None = None,
) -> TrainResult:
    """Fine-tune ``base_model_path`` on the pairs of ``train_dataset`` and save it to ``output_dir``.

    Args:
        base_model_path: A sentence-transformers model folder (or an id it can load).
        train_dataset: An EmbeddingQAFinetuneDataset JSON file (see :mod:`tasks.core.qa_dataset`).
        output_dir: Final model folder; replaced atomically if it exists.
        settings: The training block of :class:`Settings`.
        work_dir: Where checkpoints and the base weights for the interpolation go
            (default: ``work/`` beside ``output_dir``); a subfolder named by
            :func:`run_fingerprint` is resumed from and removed after success.
        val_dataset: Validation questions: the best epoch by NDCG@10 is kept
            (``keep_best_checkpoint``) and α is chosen on it.
        guard_dataset: General questions that α may not lose more than
            ``alpha_guard_margin`` NDCG@10 points on (default: no guard).
        license: License for the model card (default: the base model card's license, if any).
        model_name: Pretty name for the model card.
        callbacks: Extra ``transformers.TrainerCallback`` objects.
        score_cache: Where the α grid keeps its dense scores for the evaluate stages
            (a :class:`~tasks.retrieval.dense_cache.DenseScoreCache` folder; None: nowhere).

    Raises:
        NotEnoughPairsError: fewer pairs than ``settings.batch_size``.
    """
    pairs = QADataset.load(train_dataset).pairs()
    if len(pairs) < settings.batch_size:
        raise NotEnoughPairsError(
            f"{len(pairs)} training pairs, fewer than batch size {settings.batch_size}: "
            "add PDFs or lower --batch-size"
        )
    output_dir = Path(output_dir)
    root = Path(work_dir) if work_dir is not None else output_dir.parent / "work"
    run_dir = root / f"train-{output_dir.name}-{run_fingerprint(base_model_path, train_dataset, val_dataset, settings)}"
    if run_dir.exists() and not settings.resume_training:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    result = _train(
        base_model_path, Path(train_dataset), output_dir, settings, run_dir, val_dataset, guard_dataset,
        license, model_name, callbacks or [], score_cache,
    )
    # Checkpoints are a model and its optimizer state each (the optimizer state is what makes
    # a resumed run end with the same weights as an uninterrupted one): gone once the model is saved.
    shutil.rmtree(run_dir, ignore_errors=True)
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    return result


@dataclass(frozen=True)
class _Fit:
    """What :func:`_fit` reports of one training run."""

    steps: int
    steps_run: int
    resumed_from: str | None
    learning_rate: float
    hard_negatives: int
    loss: float
    best_checkpoint: str | None
    best_val_ndcg: float | None


def _train(
    base_model_path: str,
    train_dataset: Path,
    output_dir: Path,
    settings: Settings,
    run_dir: Path,
    val_dataset: Path | None,
    guard_dataset: Path | QADataset | None,
    license: str | None,
    model_name: str | None,
    callbacks: list[Any],
    score_cache: Path | None = None,
) -> TrainResult:
    started = time.monotonic()
    dataset = QADataset.load(train_dataset)
    model = _load_model(base_model_path, train_dataset.stem, settings, license, model_name)
    interpolate = val_dataset is not None and bool(set(settings.interpolation_alphas) - {1.0})
    if interpolate:
        # The interpolation after training needs the weights training starts from; on disk
        # they do not take a model's worth of memory through training.
        save_trainable_state(model, run_dir / BASE_STATE)

    val = QADataset.load(Path(val_dataset)) if val_dataset else None
    fit = _fit(model, dataset, val, base_model_path, settings, run_dir, callbacks)
    alpha, alpha_rows = None, []
    if interpolate:
        alpha, alpha_rows = _interpolate(model, run_dir / BASE_STATE, val, guard_dataset, settings, score_cache)

    restore_base_config(model, Path(base_model_path), attention_dropout_config(settings.attention_dropout))
    save_model_atomic(model, output_dir)
    seconds = time.monotonic() - started
    logger.info("saved fine-tuned model to %s (%d steps, loss %.4f, %.0fs)", output_dir, fit.steps, fit.loss, seconds)
    return TrainResult(
        steps=fit.steps,
        epochs=settings.epochs,
        n_pairs=len(dataset.pairs()),
        seconds=seconds,
        model_path=str(output_dir),
        loss=fit.loss,
        steps_run=fit.steps_run,
        resumed_from=fit.resumed_from,
        learning_rate=fit.learning_rate,
        hard_negatives=fit.hard_negatives,
        best_checkpoint=fit.best_checkpoint,
        best_val_ndcg=fit.best_val_ndcg,
        alpha=alpha,
        alpha_results=alpha_rows,
    )


def _load_model(base_model_path: str, dataset_name: str, settings: Settings, license: str | None,
                model_name: str | None) -> SentenceTransformer:
    """The base model as training starts from it: its card data, the training-only config
    (attention dropout), the sequence length and the frozen token embeddings."""
    # Imported here: sentence-transformers and transformers take seconds to import, and only
    # this stage needs them.
    from sentence_transformers import SentenceTransformer, SentenceTransformerModelCardData

    card = SentenceTransformerModelCardData(
        language="zh",
        license=license or _base_license(base_model_path),
        model_name=model_name or f"{Path(base_model_path).name} fine-tuned on {dataset_name}",
        train_datasets=[{"name": dataset_name}],
        # Offline tool: never ask the Hub about the base model or the datasets.
        local_files_only=True,
    )
    model = SentenceTransformer(
        base_model_path, model_card_data=card, trust_remote_code=settings.trust_remote_code,
        config_kwargs=attention_dropout_config(settings.attention_dropout),
    )
    if settings.max_seq_length is not None:
        model.max_seq_length = settings.max_seq_length
    if settings.freeze_embeddings:
        freeze_token_embeddings(model)
    return model


def _fit(model: SentenceTransformer, dataset: QADataset, val: QADataset | None, base_model_path: str,
         settings: Settings, run_dir: Path, callbacks: list[Any]) -> _Fit:
    """Train ``model`` in place (resuming from the last checkpoint in ``run_dir``), keep the
    best epoch on ``val``, and give back the memory only training needed."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    cuda = torch.cuda.is_available()
    lr = learning_rate(settings, model)
    scale = loss_scale(settings, base_model_path)
    columns, n_negatives = training_columns(model, dataset, settings)
    data = Dataset.from_dict(columns)
    loss = make_loss(model, settings, scale)

    evaluator = None
    if val is not None and settings.keep_best_checkpoint:
        evaluator = _ir_evaluator(model, val, settings.eval_batch_size)
    args = SentenceTransformerTrainingArguments(
        **training_arguments(
            settings,
            work_dir=run_dir,
            learning_rate=lr,
            prompts=column_prompts(model.prompts, n_negatives),
            cuda=cuda,
            bf16_supported=cuda and torch.cuda.is_bf16_supported(),
            best_metric=BEST_METRIC if evaluator is not None else None,
        )
    )
    if evaluator is not None:
        callbacks = [*callbacks, tiebreak_callback(f"eval_{BEST_METRIC}")]
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=data, loss=loss, evaluator=evaluator, callbacks=callbacks
    )
    resume = get_last_checkpoint(str(run_dir)) if settings.resume_training else None
    logger.info(
        "training on %d pairs: %d epochs, batch size %d%s, lr %g, loss scale %g, %d hard negatives%s",
        data.num_rows, settings.epochs, settings.batch_size,
        f" (cached, mini-batch {settings.mini_batch_size})" if settings.cached_loss else "",
        lr, scale, n_negatives, f"; resuming from {resume}" if resume else "",
    )
    start_step = _checkpoint_step(resume)
    output = trainer.train(resume_from_checkpoint=resume)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    final_loss = float(losses[-1]) if losses else float(output.training_loss)
    best_ckpt = trainer.state.best_model_checkpoint
    best_val = _logged_metric(trainer.state.log_history, f"eval_{BEST_METRIC}", best_ckpt)
    if best_ckpt:
        logger.info("kept %s (validation NDCG@10 %.4f)", Path(best_ckpt).name, best_val)
    # The optimizer state (twice the model's size for AdamW) and the gradients: the α grid and
    # the save need neither, and the trainer would keep them alive until this function returns.
    trainer.accelerator.free_memory()
    del trainer
    model.zero_grad(set_to_none=True)
    release_freed_memory()  # else the α grid's copies come on top of the steps' freed heap
    return _Fit(
        steps=int(output.global_step),
        steps_run=int(output.global_step) - start_step,
        resumed_from=resume,
        learning_rate=lr,
        hard_negatives=n_negatives,
        loss=final_loss,
        best_checkpoint=Path(best_ckpt).name if best_ckpt else None,
        best_val_ndcg=float(best_val) if best_val is not None else None,
    )


def _interpolate(model: SentenceTransformer, base_state_path: Path, val: QADataset,
                 guard_dataset: Path | QADataset | None, settings: Settings,
                 score_cache: Path | None) -> tuple[float, list[dict[str, Any]]]:
    """Mix ``model`` with the weights training started from at the α chosen on ``val``
    under the guard-set margin; the chosen α and every α's scores."""
    import torch

    from tasks.retrieval.dense_cache import DenseScoreCache
    from tasks.training.interpolation import interpolate_with_base

    guard = QADataset.load(Path(guard_dataset)) if isinstance(guard_dataset, (str, Path)) else guard_dataset
    base_state = torch.load(base_state_path, map_location="cpu", weights_only=True, mmap=True)
    chosen, alpha_results = interpolate_with_base(
        model, base_state, val, guard, settings.interpolation_alphas, settings.alpha_guard_margin,
        batch_size=settings.eval_batch_size, scores=DenseScoreCache(score_cache),
    )
    del base_state
    return chosen.alpha, [asdict(r) for r in alpha_results]


def _ir_evaluator(model: SentenceTransformer, dataset: QADataset, batch_size: int):
    # The evaluator and prompts of the evaluate stage, so "best epoch" means best by the
    # metric the report shows.
    from tasks.retrieval.metrics import model_evaluator

    return model_evaluator(model, dataset, batch_size, VAL_NAME, show_progress_bar=False,
                           main_score_function="cosine")


def _logged_metric(history: list[dict[str, Any]], key: str, checkpoint: str | None) -> float | None:
    """The value of ``key`` logged at the step of ``checkpoint`` (``…/checkpoint-<step>``)."""
    if not checkpoint:
        return None
    step = int(Path(checkpoint).name.rsplit("-", 1)[-1])
    values = [e[key] for e in history if e.get("step") == step and key in e]
    return float(values[-1]) if values else None


def _checkpoint_step(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0
    state = Path(checkpoint) / "trainer_state.json"
    return int(json.loads(state.read_text(encoding="utf-8")).get("global_step", 0)) if state.is_file() else 0


def _base_license(base_model_path: str) -> str | None:
    # A converted or downloaded base model keeps its model card; its license carries over.
    readme = Path(base_model_path) / "README.md"
    if not readme.is_file():
        return None
    try:
        from huggingface_hub import ModelCard

        return ModelCard.load(readme).data.license
    except Exception:  # a malformed card must not stop training
        logger.debug("could not read the license from %s", readme, exc_info=True)
        return None
