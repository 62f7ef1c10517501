"""Fine-tune an embedding model on question/chunk pairs.

Each question is an *anchor* and its chunk the *positive*; the other chunks of the
batch are the negatives (:class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss`),
so larger batches give harder training. On top of that recipe (see
``bench/training_recipes.py`` for what each step is worth on human questions):

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
``output_dir`` atomically (:func:`save_model_atomic`).

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

import errno
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import DiskFullError, NotEnoughPairsError, TrainingSettingsError
from tasks.models.base import default_loss_scale
from tasks.core.fileio import replace_folder, sha256_file, stable_hash
from tasks.core.memory import release_freed_memory
from tasks.core.qa_dataset import QADataset
from tasks.core.settings import Settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

VAL_NAME = "val"


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


def attention_dropout_config(p: float | None) -> dict[str, float]:
    """Config overrides that set the attention dropout of the model being trained to ``p``
    (None: none), under the names BERT-like (``attention_probs_dropout_prob``) and most other
    transformers configs (``attention_dropout``) give it; a config ignores the name it lacks.

    With dropout on the attention weights PyTorch's attention falls back to its plain form,
    which keeps every head's attention matrix for the backward pass.

    >>> attention_dropout_config(0.0)
    {'attention_probs_dropout_prob': 0.0, 'attention_dropout': 0.0}
    >>> attention_dropout_config(None)
    {}
    """
    return {} if p is None else {"attention_probs_dropout_prob": p, "attention_dropout": p}


def _restore_config(model: Any, base_model_path: Path, overrides: dict[str, Any]) -> None:
    """Put the base model's values of the training-only ``overrides`` back into the config
    that is saved, so whoever trains the saved model further gets the model's own dropout."""
    config_file = base_model_path / "config.json"
    if not overrides or not config_file.is_file():
        return
    base = json.loads(config_file.read_text(encoding="utf-8"))
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            for key in overrides:
                if key in base:
                    setattr(config, key, base[key])
                elif hasattr(config, key):
                    delattr(config, key)


def freeze_token_embeddings(model: Any) -> int:
    """Stop training the token embedding matrix of every transformer module of ``model``;
    returns how many weights that leaves as they are.

    In a multilingual model this matrix is most of the weights (96 M of e5-small's 118 M,
    a 250 k-token vocabulary), and a few hundred training pairs touch a few thousand of its
    rows. Training it anyway costs a dense gradient and two AdamW moments of its size every
    step (about 2 GB and a quarter of the step time on the default CPU run) for a loss that
    moves in the sixth decimal.

    >>> from transformers import BertConfig, BertModel
    >>> bert = BertModel(BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1,
    ...                             num_attention_heads=2, intermediate_size=16))
    >>> freeze_token_embeddings(bert), bert.get_input_embeddings().weight.requires_grad
    (800, False)
    >>> bert.encoder.layer[0].attention.self.query.weight.requires_grad
    True
    """
    frozen = 0
    for module in model.modules():
        get = getattr(module, "get_input_embeddings", None)
        try:
            embeddings = get() if callable(get) else None
        except NotImplementedError:  # a model class that has no token embeddings to give
            embeddings = None
        if embeddings is not None and embeddings.weight.requires_grad:
            embeddings.weight.requires_grad_(False)
            frozen += embeddings.weight.numel()
    return frozen


def default_learning_rate(hidden_size: int) -> float:
    """Learning rate by model width.

    Small models (hidden 384, e5-small) move little per step at 1e-5 on a few hundred
    pairs; 5e-5 over-fitted e5-small (−1.2 NDCG@10 on human questions, docs/measurements/training-recipes.md).
    Base models (768: BCE, bge-base) are usually tuned at 1e-5 (FlagEmbedding's
    examples), large ones lower still.

    >>> default_learning_rate(384), default_learning_rate(768), default_learning_rate(1024)
    (2e-05, 1e-05, 5e-06)
    """
    if hidden_size <= 384:
        return 2e-5
    if hidden_size <= 768:
        return 1e-5
    return 5e-6


def precision_flags(mode: str, cuda: bool, bf16_supported: bool) -> dict[str, bool]:
    """``bf16`` / ``fp16`` training arguments for ``mixed_precision`` on this machine.

    >>> precision_flags("auto", cuda=True, bf16_supported=True)
    {'bf16': True, 'fp16': False}
    >>> precision_flags("auto", cuda=False, bf16_supported=False)
    {'bf16': False, 'fp16': False}
    """
    if mode == "auto":
        mode = ("bf16" if bf16_supported else "fp16") if cuda else "no"
    if mode == "fp16" and not cuda:
        raise TrainingSettingsError("mixed_precision fp16 needs a CUDA GPU: use --mixed-precision bf16 or no")
    if mode == "bf16" and cuda and not bf16_supported:
        raise TrainingSettingsError("this GPU has no bf16: use --mixed-precision fp16")
    return {"bf16": mode == "bf16", "fp16": mode == "fp16"}


def training_arguments(
    settings: Settings,
    *,
    work_dir: Path,
    learning_rate: float,
    prompts: dict[str, str] | None,
    cuda: bool,
    bf16_supported: bool,
    best_metric: str | None,
) -> dict[str, Any]:
    """Keyword arguments of ``SentenceTransformerTrainingArguments`` (pure; no GPU needed to test).

    Args:
        best_metric: The evaluator metric to keep the best epoch by, e.g.
            ``"val_cosine_ndcg@10"``; None: no evaluation during training.
    """
    precision = precision_flags(settings.mixed_precision, cuda, bf16_supported)
    args: dict[str, Any] = dict(
        output_dir=str(work_dir),
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=learning_rate,
        warmup_steps=settings.warmup_steps,
        seed=settings.seed,
        data_seed=settings.seed,
        batch_sampler="no_duplicates" if settings.no_duplicate_batches else "batch_sampler",
        prompts=prompts,
        **precision,
        # transformers refuses bf16 without a GPU unless told the CPU is meant (it then autocasts there).
        **({"use_cpu": True} if precision["bf16"] and not cuda else {}),
        activation_checkpointing=settings.gradient_checkpointing,
        # Fused AdamW runs the update in one kernel on CUDA; the CPU build gains nothing.
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        # One loss line per epoch: readable next to the progress bar, and the last one is
        # the loss we report.
        logging_strategy="epoch",
        # A checkpoint every epoch: what an interrupted run resumes from.
        save_strategy="epoch",
        save_total_limit=2,
        eval_strategy="epoch" if best_metric else "no",
        report_to="none",
        disable_tqdm=False,
        dataloader_pin_memory=cuda,
    )
    if best_metric:
        args.update(
            load_best_model_at_end=True, metric_for_best_model=f"eval_{best_metric}{TIEBREAK}", greater_is_better=True
        )
    return args


TIEBREAK = "_later_on_ties"


class PreferLaterEpochOnTies:
    """Adds ``<metric>_later_on_ties`` = metric + 1e-12·step to the evaluation metrics.

    The trainer keeps a checkpoint only when it is strictly better, so on a tie the
    earliest epoch wins. A small validation set often scores every epoch the same (12
    questions on CMRC: 0.9385 after epochs 1, 2 and 3); then no epoch is known to be
    better, and the most trained one is kept, as without validation. 1e-12 per step is
    far below one question moving one rank in any real validation set.
    """

    def __init__(self, metric: str) -> None:
        self.metric = metric

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and self.metric in metrics:
            metrics[self.metric + TIEBREAK] = metrics[self.metric] + 1e-12 * state.global_step
        return control


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


def _training_rows(
    model: SentenceTransformer, dataset: QADataset, settings: Settings
) -> tuple[dict[str, list[str]], int]:
    """Columns anchor, positive[, negative_1 …] and the number of negative columns."""
    pairs = dataset.pairs()
    columns: dict[str, list[str]] = {"anchor": [q for q, _ in pairs], "positive": [c for _, c in pairs]}
    if settings.hard_negatives <= 0:
        return columns, 0
    from tasks.training.hard_negatives import mine_negatives

    by_query: dict[str, set[str]] = {}
    for q, c in pairs:
        by_query.setdefault(q, set()).add(c)
    negatives, stats = mine_negatives(
        model,
        columns["anchor"],
        [by_query[q] for q in columns["anchor"]],
        list(dataset.corpus.values()),
        settings.hard_negatives,
        settings.hard_negative_skip_top,
        settings.hard_negative_margin,
        batch_size=settings.eval_batch_size,
        miner=settings.hard_negative_miner,
        tokenizer=settings.bm25_tokenizer,
    )
    for j in range(stats.negatives_per_row):
        columns[f"negative_{j + 1}"] = [row[j] for row in negatives]
    return columns, stats.negatives_per_row


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
    # Imported here: datasets/accelerate/transformers take seconds to import, and only
    # this stage needs them.
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerModelCardData,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )
    from transformers.trainer_utils import get_last_checkpoint

    started = time.monotonic()
    dataset = QADataset.load(train_dataset)
    dataset_name = train_dataset.stem
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
    interpolate = val_dataset is not None and bool(set(settings.interpolation_alphas) - {1.0})
    if interpolate:
        # The interpolation after training needs the weights training starts from; on disk
        # they do not take a model's worth of memory through training.
        _save_state(model, run_dir / BASE_STATE)

    cuda = torch.cuda.is_available()
    lr = settings.learning_rate or default_learning_rate(_hidden_size(model))
    loss_scale = settings.loss_scale or default_loss_scale(Path(base_model_path).name)
    columns, n_negatives = _training_rows(model, dataset, settings)
    data = Dataset.from_dict(columns)
    if settings.cached_loss:
        loss = CachedMultipleNegativesRankingLoss(model, scale=loss_scale, mini_batch_size=settings.mini_batch_size)
    else:
        loss = MultipleNegativesRankingLoss(model, scale=loss_scale)

    val = QADataset.load(Path(val_dataset)) if val_dataset else None
    evaluator = None
    if val is not None and settings.keep_best_checkpoint:
        evaluator = _ir_evaluator(model, val, settings.eval_batch_size)
    prompts = column_prompts(model.prompts)
    if prompts and n_negatives:
        for j in range(n_negatives):
            if "positive" in prompts:
                prompts[f"negative_{j + 1}"] = prompts["positive"]
    args = SentenceTransformerTrainingArguments(
        **training_arguments(
            settings,
            work_dir=run_dir,
            learning_rate=lr,
            prompts=prompts,
            cuda=cuda,
            bf16_supported=cuda and torch.cuda.is_bf16_supported(),
            best_metric=f"{VAL_NAME}_cosine_ndcg@10" if evaluator is not None else None,
        )
    )
    if evaluator is not None:
        callbacks = [*callbacks, _tiebreak_callback(f"eval_{VAL_NAME}_cosine_ndcg@10")]
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=data, loss=loss, evaluator=evaluator, callbacks=callbacks
    )
    resume = get_last_checkpoint(str(run_dir)) if settings.resume_training else None
    logger.info(
        "training on %d pairs: %d epochs, batch size %d%s, lr %g, loss scale %g, %d hard negatives%s",
        data.num_rows, settings.epochs, settings.batch_size,
        f" (cached, mini-batch {settings.mini_batch_size})" if settings.cached_loss else "",
        lr, loss_scale, n_negatives, f"; resuming from {resume}" if resume else "",
    )
    start_step = _checkpoint_step(resume)
    output = trainer.train(resume_from_checkpoint=resume)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    final_loss = float(losses[-1]) if losses else float(output.training_loss)
    best_ckpt = trainer.state.best_model_checkpoint
    best_val = _logged_metric(trainer.state.log_history, f"eval_{VAL_NAME}_cosine_ndcg@10", best_ckpt)
    if best_ckpt:
        logger.info("kept %s (validation NDCG@10 %.4f)", Path(best_ckpt).name, best_val)
    # The optimizer state (twice the model's size for AdamW) and the gradients: the α grid and
    # the save need neither, and the trainer would keep them alive until this function returns.
    trainer.accelerator.free_memory()
    del trainer
    model.zero_grad(set_to_none=True)
    release_freed_memory()  # else the α grid's copies come on top of the steps' freed heap

    alpha, alpha_rows = None, []
    if interpolate:
        from tasks.retrieval.dense_cache import DenseScoreCache
        from tasks.training.interpolation import interpolate_with_base

        guard = QADataset.load(Path(guard_dataset)) if isinstance(guard_dataset, (str, Path)) else guard_dataset
        base_state = torch.load(run_dir / BASE_STATE, map_location="cpu", weights_only=True, mmap=True)
        chosen, alpha_results = interpolate_with_base(
            model, base_state, val, guard, settings.interpolation_alphas, settings.alpha_guard_margin,
            batch_size=settings.eval_batch_size, scores=DenseScoreCache(score_cache),
        )
        del base_state
        alpha, alpha_rows = chosen.alpha, [asdict(r) for r in alpha_results]

    _restore_config(model, Path(base_model_path), attention_dropout_config(settings.attention_dropout))
    save_model_atomic(model, output_dir)
    seconds = time.monotonic() - started
    logger.info("saved fine-tuned model to %s (%d steps, loss %.4f, %.0fs)", output_dir, output.global_step, final_loss, seconds)
    return TrainResult(
        steps=int(output.global_step),
        epochs=settings.epochs,
        n_pairs=len(dataset.pairs()),
        seconds=seconds,
        model_path=str(output_dir),
        loss=final_loss,
        steps_run=int(output.global_step) - start_step,
        resumed_from=resume,
        learning_rate=lr,
        hard_negatives=n_negatives,
        best_checkpoint=Path(best_ckpt).name if best_ckpt else None,
        best_val_ndcg=float(best_val) if best_val is not None else None,
        alpha=alpha,
        alpha_results=alpha_rows,
    )


BASE_STATE = "base_state.pt"


def _save_state(model: SentenceTransformer, path: Path) -> None:
    """The weights training will change, as they are now, exactly (also weights the base
    folder lacks and transformers initialised at random), for :func:`torch.load` with
    ``mmap=True``. Frozen weights (the token embeddings, most of a multilingual model) stay
    out: they are the base's at the end too, so the interpolation leaves them alone."""
    import torch

    trained = {name for name, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    # Written again on every start: a run killed while writing it leaves a torn file, and a
    # resumed run interpolates with the weights it loaded itself, as an uninterrupted one does.
    torch.save({k: v for k, v in model.state_dict().items() if k in trained}, path)


def _ir_evaluator(model: SentenceTransformer, dataset: QADataset, batch_size: int):
    # The evaluator and prompts of the evaluate stage, so "best epoch" means best by the
    # metric the report shows.
    from tasks.retrieval.metrics import model_evaluator

    return model_evaluator(model, dataset, batch_size, VAL_NAME, show_progress_bar=False,
                           main_score_function="cosine")


def _tiebreak_callback(metric: str) -> Any:
    # A TrainerCallback made on first use: transformers is imported lazily.
    from transformers import TrainerCallback

    class _PreferLaterEpochOnTies(PreferLaterEpochOnTies, TrainerCallback):
        pass

    return _PreferLaterEpochOnTies(metric)


def _logged_metric(history: list[dict[str, Any]], key: str, checkpoint: str | None) -> float | None:
    """The value of ``key`` logged at the step of ``checkpoint`` (``…/checkpoint-<step>``)."""
    if not checkpoint:
        return None
    step = int(Path(checkpoint).name.rsplit("-", 1)[-1])
    values = [e[key] for e in history if e.get("step") == step and key in e]
    return float(values[-1]) if values else None


def _hidden_size(model: SentenceTransformer) -> int:
    try:
        return int(model[0].auto_model.config.hidden_size)
    except (AttributeError, TypeError):
        return int(model.get_sentence_embedding_dimension() or 768)


def _checkpoint_step(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0
    state = Path(checkpoint) / "trainer_state.json"
    return int(json.loads(state.read_text(encoding="utf-8")).get("global_step", 0)) if state.is_file() else 0


def column_prompts(model_prompts: dict[str, str]) -> dict[str, str] | None:
    """Training-argument prompts for the anchor/positive columns from a model's prompts.

    >>> column_prompts({"query": "query: ", "document": "passage: "})
    {'anchor': 'query: ', 'positive': 'passage: '}
    >>> column_prompts({}) is None
    True
    """
    prompts = {}
    if model_prompts.get("query"):
        prompts["anchor"] = model_prompts["query"]
    if model_prompts.get("document"):
        prompts["positive"] = model_prompts["document"]
    return prompts or None


def save_model_atomic(model: SentenceTransformer, output_dir: Path) -> None:
    """Save ``model`` (safetensors + model card) to ``output_dir``, replacing it in one step.

    Written with :func:`~tasks.core.fileio.replace_folder`: if saving fails, ``output_dir``
    is untouched; a kill between its two renames leaves the old model under
    ``.<name>.old-*``, which the next save puts back first (the run lock keeps other
    writers out, so their leftovers are safe to delete).
    """
    output_dir = Path(output_dir)
    try:
        with replace_folder(output_dir, recover=True) as tmp:
            model.save_pretrained(str(tmp), create_model_card=True, safe_serialization=True)
    except BaseException as exc:
        if _is_disk_full(exc):
            kept = f"the previous model in {output_dir} is untouched" if output_dir.exists() else "nothing was written"
            raise DiskFullError(
                f"no space left on the disk while saving the model to {output_dir}: {kept}. Free some space "
                f"on that disk (the model needs about {_size_mb(model):.0f} MB) or choose another --output-dir, "
                "then run again; finished stages are not repeated."
            ) from exc
        raise


def _is_disk_full(exc: BaseException) -> bool:
    # safetensors reports a full disk as SafetensorError("... No space left on device (os
    # error 28)"), not as an OSError, so the message is checked as well as the errno.
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "os error 28" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _size_mb(model: SentenceTransformer) -> float:
    try:
        return sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    except Exception:  # the estimate only sharpens the message
        return 0.0


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
