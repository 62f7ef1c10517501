"""The training recipe: what the model is trained with, apart from running it.

The loss (:class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss`,
or its cached form for large batches in little memory), its scale, the learning rate by
model width, the training arguments (precision, checkpointing, the sampler that keeps a
text out of its own batch), the columns (anchor, positive and the mined hard negatives)
with the prompts each gets, and what is changed on the model for training only (frozen
token embeddings, no attention dropout). :mod:`tasks.training.trainer` runs it.

Example::

    >>> default_learning_rate(384), precision_flags("auto", cuda=False, bf16_supported=False)
    (2e-05, {'bf16': False, 'fp16': False})
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import TrainingSettingsError
from tasks.core.qa_dataset import QADataset
from tasks.core.settings import Settings
from tasks.models.base import default_loss_scale
from tasks.training.callbacks import TIEBREAK

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


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


def restore_base_config(model: Any, base_model_path: Path, overrides: dict[str, Any]) -> None:
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


def learning_rate(settings: Settings, model: SentenceTransformer) -> float:
    """``--learning-rate``, else :func:`default_learning_rate` for the model's width."""
    return settings.learning_rate or default_learning_rate(_hidden_size(model))


def loss_scale(settings: Settings, base_model_path: str) -> float:
    """``--loss-scale``, else the temperature the base model was trained with, where known."""
    return settings.loss_scale or default_loss_scale(Path(base_model_path).name)


def make_loss(model: SentenceTransformer, settings: Settings, scale: float) -> Any:
    """MultipleNegativesRankingLoss at ``scale``; cached (``--cached-loss``): the same
    negatives in the memory of ``mini_batch_size`` texts per forward pass."""
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    if settings.cached_loss:
        return CachedMultipleNegativesRankingLoss(model, scale=scale, mini_batch_size=settings.mini_batch_size)
    return MultipleNegativesRankingLoss(model, scale=scale)


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


def training_columns(
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


def column_prompts(model_prompts: dict[str, str], negatives: int = 0) -> dict[str, str] | None:
    """Training-argument prompts for the anchor/positive columns (and the ``negatives``
    hard-negative columns, which are chunks too) from a model's prompts.

    >>> column_prompts({"query": "query: ", "document": "passage: "})
    {'anchor': 'query: ', 'positive': 'passage: '}
    >>> column_prompts({"document": "passage: "}, negatives=1)
    {'positive': 'passage: ', 'negative_1': 'passage: '}
    >>> column_prompts({}) is None
    True
    """
    prompts = {}
    if model_prompts.get("query"):
        prompts["anchor"] = model_prompts["query"]
    if model_prompts.get("document"):
        prompts["positive"] = model_prompts["document"]
        for j in range(negatives):
            prompts[f"negative_{j + 1}"] = prompts["positive"]
    return prompts or None


def _hidden_size(model: SentenceTransformer) -> int:
    try:
        return int(model[0].auto_model.config.hidden_size)
    except (AttributeError, TypeError):
        return int(model.get_sentence_embedding_dimension() or 768)
