"""Fine-tune an embedding model on question/chunk pairs.

Each question is an *anchor* and its chunk the *positive*; the other chunks of the
batch are the negatives (:class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss`),
so larger batches give harder training. Batches never hold the same text twice
(``BatchSamplers.NO_DUPLICATES``): a chunk with two questions would otherwise be its
own false negative. The model's own ``query`` / ``document`` prompts are prepended the
way sentence-transformers does at inference time, so training and retrieval see the
same inputs.

The finished model is written to ``output_dir`` atomically: it is saved into a
temporary folder beside it and swapped in, so a crash leaves either the previous
model or the new one there, never half of one.

Example::

    >>> result = train_model("models/base/e5", Path("out/train_dataset.json"),
    ...                      Path("out/model"), Settings(epochs=1))
    >>> result.steps, round(result.loss, 3)
    (12, 0.532)
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.errors import PipelineError
from tasks.base_model import default_loss_scale
from tasks.fileio import fsync_dir, fsync_tree
from tasks.qa_dataset import QADataset
from tasks.settings import Settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)


class NotEnoughPairsError(PipelineError, ValueError):
    """Fewer training pairs than one batch: in-batch negatives need a full batch."""


@dataclass(frozen=True)
class TrainResult:
    steps: int
    epochs: int
    n_pairs: int
    seconds: float
    model_path: str
    loss: float
    """Mean training loss over the last epoch."""


def train_model(
    base_model_path: str,
    train_dataset: Path,
    output_dir: Path,
    settings: Settings,
    work_dir: Path | None = None,
    *,
    license: str | None = None,
    model_name: str | None = None,
) -> TrainResult:
    """Fine-tune ``base_model_path`` on the pairs of ``train_dataset`` and save it to ``output_dir``.

    Args:
        base_model_path: A sentence-transformers model folder (or an id it can load).
        train_dataset: An EmbeddingQAFinetuneDataset JSON file (see :mod:`tasks.qa_dataset`).
        output_dir: Final model folder; replaced atomically if it exists.
        settings: ``epochs``, ``batch_size``, ``learning_rate``, ``warmup_steps``, ``seed``
            and ``max_seq_length`` are used.
        work_dir: Scratch folder for the trainer (default: a temporary folder, removed after).
        license: License for the model card (default: the base model card's license, if any).
        model_name: Pretty name for the model card.

    Raises:
        NotEnoughPairsError: fewer pairs than ``settings.batch_size``.
    """
    pairs = QADataset.load(train_dataset).pairs()
    if len(pairs) < settings.batch_size:
        raise NotEnoughPairsError(
            f"{len(pairs)} training pairs, fewer than batch size {settings.batch_size}: "
            "add PDFs or lower --batch-size"
        )

    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        return _train(base_model_path, train_dataset, pairs, output_dir, settings, Path(work_dir), license, model_name)
    with tempfile.TemporaryDirectory(prefix="bce-train-") as tmp:
        return _train(base_model_path, train_dataset, pairs, output_dir, settings, Path(tmp), license, model_name)


def _train(
    base_model_path: str,
    train_dataset: Path,
    pairs: list[tuple[str, str]],
    output_dir: Path,
    settings: Settings,
    work_dir: Path,
    license: str | None,
    model_name: str | None,
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
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    started = time.monotonic()
    dataset_name = Path(train_dataset).stem
    card = SentenceTransformerModelCardData(
        language="zh",
        license=license or _base_license(base_model_path),
        model_name=model_name or f"{Path(base_model_path).name} fine-tuned on {dataset_name}",
        train_datasets=[{"name": dataset_name}],
        # Offline tool: never ask the Hub about the base model or the datasets.
        local_files_only=True,
    )
    model = SentenceTransformer(
        base_model_path, model_card_data=card, trust_remote_code=settings.trust_remote_code
    )
    if settings.max_seq_length is not None:
        model.max_seq_length = settings.max_seq_length

    loss_scale = settings.loss_scale or default_loss_scale(Path(base_model_path).name)
    data = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [c for _, c in pairs]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps,
        seed=settings.seed,
        data_seed=settings.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        prompts=column_prompts(model.prompts),
        # One loss line per epoch: readable next to the progress bar, and the last one is
        # the loss we report.
        logging_strategy="epoch",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=False,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=data,
        loss=MultipleNegativesRankingLoss(model, scale=loss_scale),
    )
    logger.info(
        "training on %d pairs: %d epochs, batch size %d, lr %g, loss scale %g",
        len(pairs), settings.epochs, settings.batch_size, settings.learning_rate, loss_scale,
    )
    output = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    loss = float(losses[-1]) if losses else float(output.training_loss)

    save_model_atomic(model, Path(output_dir))
    seconds = time.monotonic() - started
    logger.info("saved fine-tuned model to %s (%d steps, loss %.4f, %.0fs)", output_dir, output.global_step, loss, seconds)
    return TrainResult(
        steps=int(output.global_step),
        epochs=settings.epochs,
        n_pairs=len(pairs),
        seconds=seconds,
        model_path=str(output_dir),
        loss=loss,
    )


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


def expected_steps(n_pairs: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps for distinct pairs: the last, smaller batch of an epoch is kept."""
    return math.ceil(n_pairs / batch_size) * epochs


def save_model_atomic(model: SentenceTransformer, output_dir: Path) -> None:
    """Save ``model`` (safetensors + model card) to ``output_dir``, replacing it in one step.

    The model is written to a hidden folder beside ``output_dir`` and renamed in place.
    If saving fails, ``output_dir`` is untouched. An existing ``output_dir`` is first
    renamed away, so between the two renames (microseconds) the old model exists under
    ``.<name>.old-*`` rather than being half overwritten; the next save puts it back
    first if a crash struck right there.
    """
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(output_dir)
    tag = uuid.uuid4().hex[:8]
    tmp = output_dir.parent / f".{output_dir.name}.tmp-{tag}"
    old = output_dir.parent / f".{output_dir.name}.old-{tag}"
    try:
        model.save_pretrained(str(tmp), create_model_card=True, safe_serialization=True)
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if output_dir.exists():
        os.rename(output_dir, old)
    os.rename(tmp, output_dir)
    fsync_dir(output_dir.parent)
    shutil.rmtree(old, ignore_errors=True)


def _clean_leftovers(output_dir: Path) -> None:
    # A run killed mid-save leaves a temporary folder (a model's worth of disk) behind;
    # one killed between the two renames leaves the previous model only under .old-*.
    parent, name = output_dir.parent, output_dir.name
    olds = sorted(parent.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not output_dir.exists():
        logger.warning("restoring %s from %s, left by an interrupted save", output_dir, olds[-1].name)
        os.rename(olds.pop(), output_dir)
    for stale in [*olds, *parent.glob(f".{name}.tmp-*")]:
        logger.info("removing %s, left by an interrupted save", stale)
        shutil.rmtree(stale, ignore_errors=True)


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
