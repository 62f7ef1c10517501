"""Train the reranker: a cross-encoder on the run's question/chunk pairs.

The start is either a cross-encoder (``bce-reranker-base_v1`` on the GPU profile, or any
local folder) or the base embedding model's encoder, to which sentence-transformers'
:class:`~sentence_transformers.cross_encoder.CrossEncoder` adds a one-logit scoring head on
the first token (the CPU path: no reranker checkpoint comes inside a PyPI package). A head on
e5's mean-pooled states instead, as e5 was trained to pool, measured the same on court
judgments (docs/measurements/2026-12-07-reranker.md), so the library's default stays. A new
head needs a pooler that passes a gradient (:func:`initialise_blank_pooler`) and a larger
step than a reranker being adapted (``Settings.resolved_reranker_learning_rate``). Each training question
comes with its own chunk and the first stage's best-ranked wrong chunks (:mod:`.pairs`);
the loss is listwise, sentence-transformers' cross-encoder ``MultipleNegativesRankingLoss``:
the question's own chunk must score above its hard negatives and above chunks of other
questions in the batch. On court judgments that loss gave a reranker 7–19 NDCG@10 points
better than binary cross-entropy on the same pairs (docs/measurements/2026-12-07-reranker.md).

Example::

    result = train_reranker("models/base/multilingual-e5-small", "models/base/multilingual-e5-small",
                            Path("outputs/finetune_bce/train_dataset.json"), Path("/tmp/reranker"), Settings())
    CrossEncoder(str(result.path)).rank("谁起诉了？", ["原告张某起诉。", "今天天气很好。"])
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.core.fileio import replace_folder
from tasks.core.qa_dataset import QADataset
from tasks.core.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankerResult:
    path: Path
    start: str  # what training started from
    n_questions: int
    n_pairs: int  # question/chunk pairs it was shown each epoch, besides the in-batch ones
    steps: int
    train_seconds: float


def training_rows(first_stage_model: str, dataset: QADataset, settings: Settings) -> list[dict]:
    """The reranker's training rows for ``dataset``: negatives from the run's default first
    stage (the even fusion of BM25 and ``first_stage_model``) over the dataset's chunks."""
    from tasks.reranking.pairs import first_stage_rows
    from tasks.retrieval.first_stage import first_stage_scores
    from tasks.retrieval.retriever import candidates, combine, even_mix

    evaluator, dense, lexical = first_stage_scores(first_stage_model, dataset, settings.bm25_tokenizer,
                                                   settings.eval_batch_size, "reranker-pairs",
                                                   trust_remote_code=settings.trust_remote_code)
    first = even_mix(candidates(tokenizer=settings.bm25_tokenizer))
    depth = max(settings.rerank_depths)
    return first_stage_rows(dataset, combine(first, dense, lexical), evaluator.queries_ids, evaluator.corpus_ids,
                            settings.reranker_negatives, depth)


def max_length(start: str, settings: Settings) -> int:
    """``reranker_max_length``, or fewer where the model has fewer positions (a longer input
    would index past its position embeddings)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(start, trust_remote_code=settings.trust_remote_code)
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        return settings.reranker_max_length
    # RoBERTa-style models (XLM-R, bce-reranker-base_v1) start their positions at padding_idx + 1.
    offset = (getattr(config, "pad_token_id", 0) or 0) + 1 if "roberta" in config.model_type else 0
    return min(settings.reranker_max_length, positions - offset)


def initialise_blank_pooler(model) -> bool:
    """Give ``model`` (a :class:`CrossEncoder`) a freshly initialised pooler if the one it
    loaded is all zeros; True if it did.

    BERT-style sequence classifiers score ``tanh(W · h[CLS] + b)``. An embedding model that
    pools otherwise may carry that pooler as zeros (the bundled e5's converter writes them),
    and a zero ``W`` passes no gradient to the encoder: training then moves the encoder only
    by the optimiser's normalised noise, and the reranker ranks about as chance does, or not,
    by luck (docs/measurements/2026-12-07-reranker-pooler.md). The model's own initialiser
    (normal, ``initializer_range``) is what transformers gives a pooler a checkpoint lacks.
    """
    import torch

    dense = getattr(getattr(model.model.base_model, "pooler", None), "dense", None)
    if dense is None or torch.count_nonzero(dense.weight) > 0:
        return False
    with torch.no_grad():
        dense.weight.normal_(0.0, getattr(model.model.config, "initializer_range", 0.02))
        dense.bias.zero_()
    return True


def has_scoring_head(start: str, settings: Settings) -> bool:
    """Whether ``start`` is a cross-encoder already (its checkpoint carries a scoring head),
    rather than an encoder to which training adds one."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(start, trust_remote_code=settings.trust_remote_code)
    return any(a.endswith("ForSequenceClassification") for a in config.architectures or ())


def train_reranker(start: str, first_stage_model: str, train_dataset: Path, out_dir: Path,
                   settings: Settings) -> RerankerResult:
    """Train a cross-encoder from ``start`` on ``train_dataset`` and save it to ``out_dir``
    (atomically: a crash leaves the previous reranker, or none)."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

    dataset = QADataset.load(Path(train_dataset))
    rows = training_rows(first_stage_model, dataset, settings)
    torch.manual_seed(settings.seed)
    model = CrossEncoder(start, num_labels=1, max_length=max_length(start, settings),
                         trust_remote_code=settings.trust_remote_code)
    if initialise_blank_pooler(model):
        logger.info("the reranker's pooler was all zeros in %s: initialised afresh", start)
    # Most of a multilingual encoder's weights are its token embeddings; a few hundred pairs
    # touch a few thousand rows of them, and their gradient and optimizer state would cost
    # more memory and time than the rest of the model.
    model.model.get_input_embeddings().weight.requires_grad_(False)
    learning_rate = settings.resolved_reranker_learning_rate(new_head=not has_scoring_head(start, settings))
    steps, started = 0, time.monotonic()
    with replace_folder(Path(out_dir)) as tmp:
        if settings.reranker_epochs > 0 and rows:
            logger.info("training the reranker from %s on %d questions with %d hard negatives each "
                        "(%d epoch(s), learning rate %g)", start, len(rows), len(rows[0]) - 2,
                        settings.reranker_epochs, learning_rate)
            args = CrossEncoderTrainingArguments(
                output_dir=str(tmp / ".trainer"), num_train_epochs=settings.reranker_epochs,
                per_device_train_batch_size=settings.reranker_batch_size,
                learning_rate=learning_rate, warmup_steps=0.1, save_strategy="no",
                logging_steps=10, report_to="none", seed=settings.seed, data_seed=settings.seed,
                # Two rows of the same question or chunk in a batch would each be the other's false negative.
                batch_sampler="no_duplicates",
                # Each question is read with 9 chunks a step (its own, 4 hard, 4 in-batch): without
                # recomputing activations, a batch of 8 held 10 GB on the default run.
                activation_checkpointing=True,
                use_cpu=not torch.cuda.is_available(),
            )
            loss = MultipleNegativesRankingLoss(model, num_negatives=settings.reranker_negatives)
            trainer = CrossEncoderTrainer(model=model, args=args, loss=loss,
                                          train_dataset=Dataset.from_list(rows).shuffle(seed=settings.seed))
            steps = trainer.train().global_step
            import shutil

            shutil.rmtree(tmp / ".trainer", ignore_errors=True)
        model.save_pretrained(str(tmp))
    return RerankerResult(Path(out_dir), start, len(dataset.queries), sum(len(r) - 1 for r in rows), steps,
                          round(time.monotonic() - started, 1))
