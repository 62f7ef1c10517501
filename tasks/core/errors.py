"""Every exception the project raises on purpose, in one place.

:class:`PipelineError` is the base of the errors a user can fix by changing an input,
a setting or the machine: the command line prints such an error's message, which says
what happened, naming the file or setting, and what to do, without a traceback; any
other exception is a bug and keeps its traceback. Each subclass also derives from the
builtin exception its callers caught before it existed (``ValueError``, ``OSError``, …).
The few that are not a :class:`PipelineError` mean a bug and keep their traceback.

A :class:`TransientError` is a :class:`PipelineError` that a second try may not meet: a
server or network that was away (the LLM server restarting, a download cut off). The
stages that retry (:func:`tasks.core.stage.retry_unless_user_error`) retry those, and
never another :class:`PipelineError`, which would only fail the same way again.

Example::

    >>> from tasks.core.errors import PipelineError, PreflightError
    >>> try:
    ...     raise PreflightError("--pdf-dir: data/none is not a folder")
    ... except PipelineError as e:
    ...     print(f"error: {e}")
    error: --pdf-dir: data/none is not a folder
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class PipelineError(Exception):
    """Raised for bad input, a bad setting or a missing model: the message says what to do."""


class TransientError(PipelineError):
    """Raised when a server or the network was away: trying again later may succeed.

    The message still says what to do when it does not (start the server, check the network).
    """


# --- settings and command lines -----------------------------------------------------


class SettingsError(PipelineError, ValueError):
    """Raised when a flag, a ``BCE_*`` variable or a ``--config`` file holds an invalid or unknown setting."""


class UsageError(PipelineError, ValueError):
    """Raised by the small command lines (query, evaluate) for a bad argument; printed as one line, exit status 2."""


class PreflightError(PipelineError, ValueError):
    """Raised before any stage runs when a folder, model or package the settings name is not usable."""


class OutputFolderBusyError(PipelineError, RuntimeError):
    """Raised when another live run holds the output folder's lock."""


class UndeclaredSettingError(RuntimeError):
    """Raised when a stage reads a setting outside the groups it declares: a bug in the stage, not the user's."""


class DiskFullError(PipelineError, OSError):
    """Raised when the disk fills up while an output is written; the previous output is untouched."""


# --- documents and data ------------------------------------------------------------


class PdfReadError(PipelineError, ValueError):
    """Raised for one PDF that cannot be used (empty, damaged, encrypted, scanned, garbled).

    ``reason`` is short and meant for a person, ``hint`` says what to do, ``source`` names
    the file once :func:`tasks.documents.reading.read_pdf` knows it; the message joins them.
    """

    def __init__(self, reason: str, hint: str = "", source: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint
        self.source = source

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.reason}" + (f" — {self.hint}" if self.hint else "")


class NoUsableDocumentsError(PipelineError, RuntimeError):
    """Raised when the PDF folder gives no document to work with; the message lists why and what to do."""

    def __init__(self, message: str, *, pdf_dir: Path, n_files: int, skipped: list[Any]) -> None:
        super().__init__(message)
        self.pdf_dir = pdf_dir
        self.n_files = n_files
        self.skipped = skipped


class UnusableDataError(PipelineError, ValueError):
    """Raised when the documents or the questions kept give too little data to train or validate on."""


class DatasetFormatError(PipelineError, ValueError):
    """Raised for a dataset file that is not in the EmbeddingQAFinetuneDataset format."""


class HumanQuestionsError(PipelineError, ValueError):
    """Raised for a human-questions file that cannot be read or is not in the expected JSON shape."""


# --- models -------------------------------------------------------------------------


class BaseModelError(PipelineError, RuntimeError):
    """Raised when the base model cannot be found, downloaded or converted."""


class BaseModelDownloadError(BaseModelError, TransientError):
    """Raised when downloading a model failed on the network (no connection, a timeout, a cut-off transfer)."""


class LLMError(PipelineError, RuntimeError):
    """Raised when the LLM cannot write an answer: not installed, not reachable, or it refused the request."""


class LLMUnreachableError(LLMError, TransientError):
    """Raised when the LLM server took no connection for as long as the backend waits for it."""


class BundledModelError(PipelineError, RuntimeError):
    """Raised when the bundled GGUF cannot be assembled: parts missing, or the result is not the pinned file."""


class GenerationFailedError(PipelineError, RuntimeError):
    """Raised when the LLM failed too many chunks (or went away); the message lists some of them."""


class NotEnoughPairsError(PipelineError, ValueError):
    """Raised when there are fewer training pairs than one batch: in-batch negatives need a full batch."""


class TrainingSettingsError(PipelineError, ValueError):
    """Raised for a training setting this machine cannot honour (fp16 without CUDA, bf16 without support)."""
