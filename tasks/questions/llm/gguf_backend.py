"""Question writer on the CPU: a GGUF model run in-process by llama-cpp-python.

The model is loaded once per writer, on the first prompt, and the chat template
stored in the GGUF is used, so any instruct GGUF works without a prompt format.
Prompts run through :class:`tasks.questions.llm.batched_llama.BatchedLlama`: several
sequences per decode, the prompt template's fixed start evaluated once, answers
stopped after the questions asked for (see ``bench/generation.py`` for what each
buys). Each prompt is sampled with the same seed, so a chunk's question does not
depend on which chunks came before it or beside it (the per-chunk cache relies on that).
Unless ``llm_threads`` is set, the thread count is chosen at load from the cores other
programs leave free and looked at again every few seconds while it generates, and idle
threads sleep rather than spin (:mod:`tasks.questions.llm.cpu_threads`).

Example, with the bundled GGUF (the question it writes, e.g. ``'水在标准大气压下的沸点是多少？'``,
depends on the machine)::

    >>> writer = GGUFWriter(Path("models/llm/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"), sampling=Sampling(max_tokens=32))
    >>> answers = writer.complete(["请为“水在100摄氏度沸腾”出一个问题。"])
    >>> len(answers), type(answers[0]), writer.requests_sent
    (1, <class 'str'>, 1)
    >>> writer.close()
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import LLMError
from tasks.questions.llm.base import AnswerCallback, BaseWriter, ProgressCallback, Sampling
from tasks.questions.llm.cpu_threads import (
    RECHECK_S, ThreadChoice, ThreadTuner, describe, import_llama_cpp, pick_threads,
)

if TYPE_CHECKING:
    from tasks.core.settings import Settings

__all__ = ["GGUFWriter", "resolve_gguf_path", "LLAMA_CPP_BUILD_HINT"]

logger = logging.getLogger(__name__)

# The default wheel build targets the build machine's CPU (GGML_NATIVE) and can die
# with "Illegal instruction" elsewhere; these flags target any AVX2 CPU instead.
LLAMA_CPP_BUILD_HINT = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
    "pip install --no-binary llama-cpp-python 'llama-cpp-python==0.3.36'"
)


def resolve_gguf_path(settings: "Settings") -> Path:
    """The GGUF file that ``settings`` asks for: the bundled Qwen, or ``llm_model`` as a path."""
    from tasks.core.settings import BUNDLED_QWEN

    model = settings.resolved_llm_model()
    if model == BUNDLED_QWEN:
        from tasks.questions.llm.bundled import bundled_gguf_path

        return bundled_gguf_path(settings.models_dir)
    path = Path(model).expanduser()
    if not path.is_file():
        raise LLMError(
            f"llm_model {model!r} is not a GGUF file (the gguf backend needs a path to a .gguf file, "
            f"or {BUNDLED_QWEN!r} for the bundled model)"
        )
    return path


class GGUFWriter(BaseWriter):
    """Prompts in batches of ``n_parallel`` sequences through one llama.cpp context."""

    name = "gguf"

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        sampling: Sampling = Sampling(),
        n_parallel: int = 8,
        n_batch: int = 512,
        prefix_template: str | None = None,
        questions_per_chunk: int = 1,
        stop_early: bool = True,
        use_mmap: bool = False,
        passive_wait: bool = True,
        recheck_threads_s: float | None = RECHECK_S,
    ) -> None:
        """``prefix_template``: the prompt template whose fixed start is evaluated once (None: no prefix cache).

        ``n_threads`` None: chosen at load from the cores other processes leave free, and
        chosen again every ``recheck_threads_s`` while generating (None: kept as chosen at
        load); ``passive_wait`` lets idle threads sleep (see :mod:`tasks.questions.llm.cpu_threads`).
        """
        super().__init__()
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.passive_wait = passive_wait
        # What load() chose, for the log and benchmarks (None before the load).
        self.thread_choice: ThreadChoice | None = None
        self.wait_policy: str | None = None
        self.recheck_threads_s = recheck_threads_s
        # Changes the thread count while generating; None when it is fixed (llm_threads set, or no recheck).
        self.thread_tuner: ThreadTuner | None = None
        self.sampling = sampling
        self.n_parallel = n_parallel
        self.n_batch = n_batch
        self.prefix_template = prefix_template
        self.questions_per_chunk = questions_per_chunk
        self.stop_early = stop_early
        self.use_mmap = use_mmap
        self._engine: Any = None

    @classmethod
    def from_settings(cls, settings: "Settings") -> "GGUFWriter":
        return cls(
            resolve_gguf_path(settings),
            n_ctx=settings.llm_context,
            n_threads=settings.llm_threads,
            sampling=Sampling.from_settings(settings),
            n_parallel=settings.llm_parallel,
            n_batch=settings.llm_batch_tokens,
            prefix_template=settings.prompt_template if settings.llm_prefix_cache else None,
            questions_per_chunk=settings.questions_per_chunk,
            stop_early=settings.llm_stop_early,
            passive_wait=settings.llm_passive_wait,
        )

    @property
    def engine_stats(self) -> Any:
        """Token counts of the loaded engine (None before the first prompt)."""
        return None if self._engine is None else self._engine.stats

    def load(self) -> Any:
        """Load the model and evaluate the shared prefix now (``complete`` does it on first use)."""
        if self._engine is not None:
            return self._engine
        try:
            _, self.wait_policy = import_llama_cpp(self.passive_wait)
        except ImportError as e:
            raise LLMError(
                "the gguf backend needs llama-cpp-python, which is not installed (or does not load: "
                f"{e}). Build it for this CPU with: {LLAMA_CPP_BUILD_HINT}"
            ) from e
        from tasks.questions.llm.batched_llama import BatchedLlama
        from tasks.questions.llm.chat_tokens import shared_prefix_text

        if not self.model_path.is_file():
            raise LLMError(f"GGUF model {self.model_path} does not exist: set --llm-model to a .gguf file")
        self.thread_choice = pick_threads(self.n_threads)
        logger.info("%s", describe(self.thread_choice, self.wait_policy))
        engine = BatchedLlama(
            self.model_path,
            n_ctx_per_seq=self.n_ctx,
            n_parallel=self.n_parallel,
            n_threads=self.thread_choice.threads,
            n_batch=self.n_batch,
            use_mmap=self.use_mmap,
        )
        try:
            if self.prefix_template is not None:
                text = shared_prefix_text(engine.tokenizer.render, self.prefix_template, self.questions_per_chunk)
                n = engine.set_shared_prefix(text)
                logger.info("Shared prompt prefix: %d tokens, evaluated once", n)
        except BaseException:
            engine.close()
            raise
        if self.n_threads is None and self.recheck_threads_s is not None:
            self.thread_tuner = ThreadTuner.for_this_machine(
                self.thread_choice.threads, engine.set_threads, every_s=self.recheck_threads_s)
        self._engine = engine
        return engine

    def complete(
        self,
        prompts: Sequence[str],
        on_progress: ProgressCallback | None = None,
        on_answer: AnswerCallback | None = None,
    ) -> list[str]:
        if not prompts:
            return []
        engine = self.load()
        from tasks.questions.llm.batched_llama import QuestionStop

        chats = [engine.tokenizer.render(p) for p in prompts]
        self.requests_sent += len(prompts)
        stop = QuestionStop(self.questions_per_chunk) if self.stop_early else None
        tick = self.thread_tuner.tick if self.thread_tuner is not None else None
        return engine.generate(chats, self.sampling, stop=stop, on_done=on_progress, on_answer=on_answer,
                               between_steps=tick)

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            st = engine.stats
            # What the generation time is made of: prompt tokens evaluated and tokens written.
            logger.info(
                "llm: %d prompts in %.0f s: %d prompt tokens evaluated (%.0f a prompt; the %d-token shared "
                "prefix once), %d tokens written in %d decode calls",
                st.prompts, st.seconds, st.prompt_tokens, st.prompt_tokens / max(st.prompts, 1), st.prefix_tokens,
                st.output_tokens, st.decode_calls,
            )
            # Frees the model's memory now rather than whenever the GC gets to it.
            engine.close()
