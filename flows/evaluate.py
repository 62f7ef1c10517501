"""Compare embedding models on a question/chunk dataset.

    python -m flows.evaluate --model models/base/e5 --model outputs/finetune_bce/model \\
        --dataset outputs/finetune_bce/val_dataset.json
    python -m flows.evaluate --help

Each model (a folder, or an id sentence-transformers can load from its cache) ranks
every chunk of the dataset for every question, and so does BM25 over the same chunks
(the keyword index a user would otherwise deploy; ``--no-bm25`` leaves it out). The
last model is compared with the first and with BM25. The metrics are written as
``{model: {metric: value}}`` JSON (BM25 under ``bm25``), by default beside the dataset
as ``<dataset stem>_metrics.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tasks.core.errors import PipelineError, UsageError
from tasks.core.settings import Settings


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
        "--batch-size", type=int, default=Settings.model_fields["eval_batch_size"].default, metavar="N",
        help="texts per encoding batch (default: %(default)s)",
    )
    parser.add_argument("--bm25", action=argparse.BooleanOptionalAction, default=True,
                        help="also rank with BM25 over the same chunks (default: %(default)s)")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from tasks.evaluation.evaluate import evaluate_model
    from tasks.core.fileio import write_json_atomic
    from tasks.core.qa_dataset import QADataset
    from tasks.reporting.tables import console_table

    try:
        if args.batch_size <= 0:
            raise UsageError(f"--batch-size must be positive, not {args.batch_size}")
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
    results: dict[str, dict[str, float]] = {}
    if args.bm25:
        from tasks.retrieval.lexical import BM25Index
        from tasks.retrieval.metrics import metrics_from_scores, question_order

        index = BM25Index.build(list(dataset.corpus), list(dataset.corpus.values()))
        results["bm25"] = metrics_from_scores(
            dataset, index.score_matrix([dataset.queries[q] for q in question_order(dataset)]), "bm25")
    for model in args.model:
        print(f"evaluating {model} …", file=sys.stderr)
        try:
            results[model] = evaluate_model(model, dataset, batch_size=args.batch_size, name=args.dataset.stem)
        except Exception as e:  # a model that cannot load: say which one, not a traceback
            print(f"error: could not evaluate model {model}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1

    write_json_atomic(output, results)
    print()
    first, last = args.model[0], args.model[-1]
    changes = [(last, first)] if last != first else []
    print(console_table(results, changes=[*changes, (last, "bm25")] if args.bm25 else None))
    print(f"\nMetrics written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
