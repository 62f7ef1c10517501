"""Question writer on the CPU: a GGUF model run in-process by llama-cpp-python.

The model is loaded once per writer, on the first prompt, and the chat template
stored in the GGUF is used, so any instruct GGUF works without a prompt format.
Each prompt is sampled with the same seed, so a chunk's question does not depend
on which chunks came before it (the per-chunk cache relies on that).

Example::

    >>> writer = GGUFWriter(Path("models/llm/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"), sampling=Sampling(max_tokens=64))
    >>> writer.complete(["请为“水在100摄氏度沸腾”出一个问题。"])
    ['水在标准大气压下的沸点是多少？']
    >>> writer.close()
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.llm.base import BaseWriter, LLMError, ProgressCallback, Sampling

if TYPE_CHECKING:
    from tasks.settings import Settings

__all__ = ["GGUFWriter", "resolve_gguf_path", "LLAMA_CPP_BUILD_HINT"]

logger = logging.getLogger(__name__)

# The default wheel build targets the build machine's CPU (GGML_NATIVE) and can die
# with "Illegal instruction" elsewhere; these flags target any AVX2 CPU instead.
LLAMA_CPP_BUILD_HINT = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
    "pip install --no-binary llama-cpp-python 'llama-cpp-python==0.3.36'"
)


def _default_threads() -> int:
    # llama-cpp-python's own default is half the cores; generation here is the
    # only work running, so use all of the cores this process may run on.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def resolve_gguf_path(settings: "Settings") -> Path:
    """The GGUF file that ``settings`` asks for: the bundled Qwen, or ``llm_model`` as a path."""
    from tasks.settings import BUNDLED_QWEN

    model = settings.resolved_llm_model()
    if model == BUNDLED_QWEN:
        from tasks.bundled_llm import bundled_gguf_path

        return bundled_gguf_path(settings.models_dir)
    path = Path(model).expanduser()
    if not path.is_file():
        raise LLMError(
            f"llm_model {model!r} is not a GGUF file (the gguf backend needs a path to a .gguf file, "
            f"or {BUNDLED_QWEN!r} for the bundled model)"
        )
    return path


class GGUFWriter(BaseWriter):
    """One prompt at a time through ``llama_cpp.Llama.create_chat_completion``."""

    name = "gguf"

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        sampling: Sampling = Sampling(),
    ) -> None:
        super().__init__()
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or _default_threads()
        self.sampling = sampling
        self._llm: Any = None

    @classmethod
    def from_settings(cls, settings: "Settings") -> "GGUFWriter":
        return cls(
            resolve_gguf_path(settings),
            n_ctx=settings.llm_context,
            n_threads=settings.llm_threads,
            sampling=Sampling.from_settings(settings),
        )

    def _load(self) -> Any:
        if self._llm is not None:
            return self._llm
        try:
            import llama_cpp
        except ImportError as e:
            raise LLMError(
                "the gguf backend needs llama-cpp-python, which is not installed (or does not load: "
                f"{e}). Build it for this CPU with: {LLAMA_CPP_BUILD_HINT}"
            ) from e
        if not self.model_path.is_file():
            raise LLMError(f"GGUF model {self.model_path} does not exist")
        started = time.monotonic()
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                seed=self.sampling.seed if self.sampling.seed is not None else -1,
                verbose=False,  # llama.cpp otherwise prints hundreds of loader lines per load
            )
        except (ValueError, RuntimeError) as e:
            raise LLMError(f"llama.cpp could not load {self.model_path}: {e}") from e
        logger.info(
            "Loaded %s in %.1f s (%d threads, context %d)",
            self.model_path.name, time.monotonic() - started, self.n_threads, self.n_ctx,
        )
        return self._llm

    def complete(self, prompts: Sequence[str], on_progress: ProgressCallback | None = None) -> list[str]:
        if not prompts:
            return []
        llm = self._load()
        answers = []
        for i, prompt in enumerate(prompts):
            self.requests_sent += 1
            try:
                result = llm.create_chat_completion(
                    messages=[{"role": "user", "content": prompt}],
                    **self.sampling.as_kwargs(),
                )
            except ValueError as e:
                # llama-cpp-python raises ValueError when the prompt does not fit the context.
                raise LLMError(
                    f"prompt {i} ({len(prompt)} characters) could not be run with a context of "
                    f"{self.n_ctx} tokens: {e}. Raise llm_context or lower chunk_size."
                ) from e
            answers.append(result["choices"][0]["message"].get("content") or "")
            if on_progress is not None:
                on_progress(1)
        return answers

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            # Frees the model's memory now rather than whenever the GC gets to it.
            llm.close()
