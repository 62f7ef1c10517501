"""Checks that run before any stage: fail in a second, not after an hour of generation.

Each check raises :class:`PreflightError` naming the setting, the path and the fix.

Example::

    >>> check_settings(Settings(base_model="/no/such/model"))
    Traceback (most recent call last):
    tasks.core.errors.PreflightError: --base-model: the path /no/such/model does not exist; pass ...
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from tasks.models.base import looks_like_path
from tasks.core.errors import PreflightError, UnusableDataError
from tasks.evaluation.human_questions import load_human_questions, questions_file
from tasks.core.settings import BUNDLED_E5, BUNDLED_QWEN, Settings


def check_settings(settings: Settings) -> None:
    """Raise on the first setting that would make a stage fail later."""
    pdf_dir = Path(settings.pdf_dir)
    if not pdf_dir.is_dir():
        raise PreflightError(f"--pdf-dir: {pdf_dir} is not a folder (absolute: {pdf_dir.resolve()})")

    for flag, folder in (("--output-dir", settings.output_dir), ("--models-dir", settings.models_dir),
                         ("--cache-dir", settings.cache_dir)):
        _check_writable(flag, Path(folder))

    guard = settings.guard_dataset
    if guard is not None and not Path(guard).is_file():
        raise PreflightError(
            f"--guard-dataset: {guard} does not exist (absolute: {Path(guard).absolute()}); run from the "
            "repository root, pass the path of data/guard/guard_dataset.json, or --guard-dataset none to run without one"
        )

    human = questions_file(settings.human_questions, pdf_dir)
    if human is not None:
        load_human_questions(human)  # a bad file fails now, naming itself and the fix, not after training

    base = settings.resolved_base_model()
    if base != BUNDLED_E5 and looks_like_path(base) and not Path(base).expanduser().exists():
        raise PreflightError(
            f"--base-model: the path {base} does not exist; pass an existing model folder, a model id, "
            f"or {BUNDLED_E5} to use the bundled offline model"
        )

    backend = settings.resolved_llm_backend()
    model = settings.resolved_llm_model()
    if backend == "gguf":
        if model == BUNDLED_QWEN:
            _require_module("llama_cpp", "the gguf backend", "bash scripts/setup.sh  (builds llama-cpp-python for this CPU)")
        elif not Path(model).expanduser().is_file():
            raise PreflightError(f"--llm-model: {model} is not a .gguf file (the gguf backend needs a path to one)")
    elif backend == "vllm":
        _require_module("vllm", "the vllm backend", "pip install -e '.[vllm]' on a CUDA machine, "
                        "or serve the model with `vllm serve` and use --llm-backend openai")


def _check_writable(flag: str, folder: Path) -> None:
    existing = folder
    while not existing.exists():  # the folder will be created under its nearest existing parent
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise PreflightError(f"{flag}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PreflightError(f"{flag}: cannot write to {existing}; choose a folder you can write to")


def _require_module(module: str, what: str, fix: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise PreflightError(f"{what} needs the Python package {module!r}, which is not installed: {fix}")


def check_usable(n_train_chunks: int, n_val_chunks: int, settings: Settings) -> None:
    """Fail before the expensive stages when the chunks cannot train or validate a model."""
    if n_val_chunks == 0:
        raise UnusableDataError("the validation split has no chunks: add PDFs or raise --val-ratio")
    pairs = n_train_chunks * settings.questions_per_chunk
    if pairs < settings.batch_size:
        raise UnusableDataError(
            f"{n_train_chunks} training chunks give at most {pairs} pairs, fewer than "
            f"--batch-size {settings.batch_size}: add PDFs, lower --chunk-size or lower --batch-size"
        )


def check_datasets(n_train_queries: int, n_val_queries: int, settings: Settings) -> None:
    """Fail before training when the questions kept cannot train or validate a model."""
    if n_val_queries == 0:
        raise UnusableDataError(
            "no validation question was kept (the filters dropped them all; the questions stage's log "
            "line counts the reasons): add PDFs, raise --val-ratio, or relax the question filters"
        )
    if n_train_queries < settings.batch_size:
        raise UnusableDataError(
            f"{n_train_queries} training questions were kept, fewer than --batch-size {settings.batch_size}: "
            "add PDFs, lower --batch-size, or relax the question filters"
        )
