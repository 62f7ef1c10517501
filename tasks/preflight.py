"""Checks that run before any stage: fail in a second, not after an hour of generation.

Each check raises :class:`PreflightError` naming the setting, the path and the fix.

Example::

    >>> check_settings(Settings(base_model="/no/such/model"))
    Traceback (most recent call last):
    PreflightError: --base-model: the path /no/such/model does not exist ...
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from tasks.base_model import looks_like_path
from tasks.errors import PipelineError
from tasks.human_questions import load_human_questions, questions_file
from tasks.settings import BUNDLED_E5, BUNDLED_QWEN, Settings


class PreflightError(PipelineError, ValueError):
    """A setting that cannot work, found before the run starts."""


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
