"""Compare embedding models on a question/chunk dataset.

    python -m flows.evaluate --model models/base/e5 --model outputs/finetune_bce/model \\
        --dataset outputs/finetune_bce/val_dataset.json
    python -m flows.evaluate --help

Each model (a folder, or an id sentence-transformers can load from its cache) is
evaluated as the pipeline's evaluate stage does it: every retriever a run compares
(:func:`tasks.retrieval.retriever.candidates`: BM25 over the same chunks, the fusions of
``fusion_weights``, the dense model alone, RRF), all ranked from one dense and one BM25
score matrix. BM25's tokenizer and the fusion weights are the run's settings, taken as the
run takes them: ``--bm25-tokenizer`` / ``--fusion-weights``, ``BCE_*`` variables, the
run's ``--config`` file, the defaults. ``--no-bm25`` keeps the dense model alone. The last
model is compared with the first and with BM25. The metrics are written as
``{model: {retriever: {metric: value}}}`` JSON, by default beside the dataset as
``<dataset stem>_metrics.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from flows.settings_cli import add_setting_flags, settings_from_args
from tasks.core.errors import PipelineError, UsageError
from tasks.core.settings import Settings

if TYPE_CHECKING:
    from tasks.core.qa_dataset import QADataset

# The run's settings that decide what is compared: flags, environment and config file as the run's.
RETRIEVER_SETTINGS = ("bm25_tokenizer", "fusion_weights", "trust_remote_code")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows.evaluate",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  python -m flows.evaluate --model BASE --model FINETUNED --dataset val_dataset.json",
    )
    parser.add_argument(
        "--model", action="append", required=True, metavar="MODEL",
        help="model folder or id; repeat to compare several (the first is the baseline)",
    )
    parser.add_argument(
        "--dataset", type=Path, required=True, metavar="FILE.json",
        help="EmbeddingQAFinetuneDataset JSON (e.g. val_dataset.json)",
    )
    parser.add_argument(
        "--output", type=Path, default=None, metavar="FILE.json",
        help="where to write the metrics (default: <dataset stem>_metrics.json beside the dataset)",
    )
    parser.add_argument(
        "--batch-size", type=int, dest="eval_batch_size", default=argparse.SUPPRESS, metavar="N",
        help=f"texts per encoding batch (default: {Settings.model_fields['eval_batch_size'].default}; "
        "env BCE_EVAL_BATCH_SIZE)",
    )
    parser.add_argument("--bm25", action=argparse.BooleanOptionalAction, default=True,
                        help="also rank with BM25 and its fusions with each model (default: %(default)s)")
    add_setting_flags(parser, RETRIEVER_SETTINGS)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what sentence-transformers does")
    return parser


def default_output(dataset: Path) -> Path:
    """``val_dataset.json`` → ``val_dataset_metrics.json`` in the same folder."""
    return dataset.with_name(f"{dataset.stem}_metrics.json")


def check_models(models: list[str]) -> None:
    """Fail before any evaluation on a repeated model or a folder that is not there."""
    seen = set()
    for model in models:
        if model in seen:
            raise UsageError(f"--model {model} is given twice: give each model once")
        seen.add(model)
        if not Path(model).exists() and _looks_like_path(model):
            raise UsageError(f"model folder {model} does not exist: give --model an existing folder or a model id")


def _looks_like_path(model: str) -> bool:
    # "org/name" is also how a model id is written; it is only taken for a path when
    # it cannot be an id, or when its parent folder exists here.
    if model.startswith(("/", "./", "../", "~", ".\\")) or model.endswith(("/", os.sep)):
        return True
    if model.count("/") > 1 or (os.sep != "/" and os.sep in model):
        return True
    parent = Path(model).parent
    return parent != Path(".") and parent.is_dir()


def evaluate_retrievers_of(model: str, dataset: QADataset, settings: Settings, *, bm25: bool = True,
                           name: str = "val") -> dict[str, dict[str, float]]:
    """``{retriever: metrics}`` of ``model`` on ``dataset``: the retrievers a run with
    ``settings`` compares (the dense model alone without ``bm25``), scored as its evaluate
    stage scores them."""
    from tasks.evaluation.evaluate import evaluate_retrievers
    from tasks.retrieval.metrics import PER_QUESTION
    from tasks.retrieval.retriever import RetrieverSpec, candidates

    specs = (candidates(settings.fusion_weights, settings.bm25_tokenizer) if bm25
             else [RetrieverSpec("dense", tokenizer=settings.bm25_tokenizer)])
    grid = evaluate_retrievers(model, dataset, specs, batch_size=settings.eval_batch_size, name=name,
                               trust_remote_code=settings.trust_remote_code)
    return {label: {k: v for k, v in m.items() if k != PER_QUESTION} for label, m in grid.items()}


def comparison(grids: dict[str, dict[str, dict[str, float]]], models: list[str]) -> str:
    """The console tables: BM25 and each model alone with the changes of the last model
    against the first and against BM25, then each retriever's NDCG@10 for each model."""
    from tasks.reporting.tables import console_table
    from tasks.retrieval.metrics import metric_value

    first, last = models[0], models[-1]
    main_rows = {**({"bm25": grids[first]["bm25"]} if "bm25" in grids[first] else {}),
                 **{model: grids[model]["dense"] for model in models}}
    changes = [(last, first)] if last != first else []
    if "bm25" in main_rows:
        changes.append((last, "bm25"))
    tables = [console_table(main_rows, changes=changes or None)]
    if len(grids[first]) > 1:
        labels = list(grids[first])
        by_model = {model: {label: metric_value(grids[model][label], "ndcg@10") for label in labels}
                    for model in models}
        tables += ["", "NDCG@10 of each retriever:", console_table(by_model, keys=labels)]
    return "\n".join(tables)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from tasks.core.fileio import write_json_atomic
    from tasks.core.qa_dataset import QADataset

    try:
        if getattr(args, "eval_batch_size", 1) <= 0:
            raise UsageError(f"--batch-size must be positive, not {args.eval_batch_size}")
        settings = settings_from_args(args)
        if not args.dataset.exists():
            raise UsageError(
                f"dataset file {args.dataset} does not exist: give --dataset a dataset the pipeline "
                "wrote, such as outputs/finetune_bce/val_dataset.json"
            )
        if not args.dataset.is_file():
            raise UsageError(f"dataset {args.dataset} is not a file: give --dataset the dataset's JSON file")
        dataset = QADataset.load(args.dataset)
        n_questions = sum(1 for cids in dataset.relevant_docs.values() if cids)
        if not n_questions:
            raise UsageError(
                f"{args.dataset} has no questions with relevant chunks: nothing to evaluate on; give another --dataset"
            )
        check_models(args.model)
    except PipelineError as e:  # a bad argument or dataset file: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2

    output = args.output or default_output(args.dataset)
    print(
        f"{n_questions} questions, {len(dataset.corpus)} chunks from {args.dataset}",
        file=sys.stderr,
    )
    grids: dict[str, dict[str, dict[str, float]]] = {}
    for model in args.model:
        print(f"evaluating {model} …", file=sys.stderr)
        try:
            grids[model] = evaluate_retrievers_of(model, dataset, settings, bm25=args.bm25, name=args.dataset.stem)
        except Exception as e:  # a model that cannot load: say which one, not a traceback
            print(f"error: could not evaluate model {model}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1

    write_json_atomic(output, grids)
    print()
    print(comparison(grids, args.model))
    print(f"\nMetrics written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
