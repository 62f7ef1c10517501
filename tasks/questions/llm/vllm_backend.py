"""Question writer on a GPU: vLLM in-process, many prompts per ``generate`` call.

vLLM is fast only when it sees many prompts at once (continuous batching), so
prompts are sent in ``LLM.generate`` calls of up to ``vllm_batch_size`` prompts,
never one call per prompt. vLLM is an optional extra (``pip install -e '.[vllm]'``,
Linux with an NVIDIA GPU); it is imported on the first prompt, so this module
imports fine without it.

Each prompt is wrapped in the model's own chat template with
``enable_thinking=False``: Qwen3 then answers without reasoning, and templates
that do not know the flag ignore it.

Example (the ``complete`` line is not run by the tests: it needs vLLM, an NVIDIA GPU and
the model's download)::

    >>> writer = VLLMWriter("Qwen/Qwen2.5-7B-Instruct", batch_size=512)  # loads nothing yet
    >>> writer.batch_size, writer.generate_calls
    (512, 0)
    >>> raw = writer.complete(["请为“水在100摄氏度沸腾”出一个问题。"])  # doctest: +SKIP
    >>> writer.close()
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tasks.core.errors import LLMError
from tasks.questions.llm.base import AnswerCallback, BaseWriter, ProgressCallback, Sampling

if TYPE_CHECKING:
    from tasks.core.settings import Settings

__all__ = ["VLLMWriter", "batched"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items, covering ``items`` in order.

    Example::

        >>> [list(b) for b in batched([1, 2, 3, 4, 5], 2)]
        [[1, 2], [3, 4], [5]]
    """
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


class VLLMWriter(BaseWriter):
    """Batched offline generation with ``vllm.LLM``."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 512,
        sampling: Sampling = Sampling(),
        trust_remote_code: bool = False,
        llm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self.sampling = sampling
        self.trust_remote_code = trust_remote_code
        self.llm_kwargs = dict(llm_kwargs or {})
        self.generate_calls = 0
        self._llm: Any = None
        self._tokenizer: Any = None
        self._sampling: Any = None

    @classmethod
    def from_settings(cls, settings: "Settings", **overrides: Any) -> "VLLMWriter":
        kwargs: dict[str, Any] = dict(
            batch_size=settings.vllm_batch_size,
            sampling=Sampling.from_settings(settings),
            trust_remote_code=settings.trust_remote_code,
            llm_kwargs={"tensor_parallel_size": settings.vllm_tensor_parallel_size},
        )
        kwargs.update(overrides)
        return cls(settings.resolved_llm_model(), **kwargs)

    def _load(self) -> Any:
        if self._llm is not None:
            return self._llm
        try:
            import vllm
        except ImportError as e:
            raise LLMError(
                "the vllm backend needs vLLM, an optional extra for Linux with an NVIDIA GPU: "
                "`pip install -e '.[vllm]'`. Without a GPU use llm_backend='gguf' (CPU) or "
                f"llm_backend='openai' with a server elsewhere. ({e})"
            ) from e
        logger.info("Loading %s into vLLM", self.model)
        self._llm = vllm.LLM(
            model=self.model, seed=self.sampling.seed, trust_remote_code=self.trust_remote_code, **self.llm_kwargs
        )
        self._tokenizer = self._llm.get_tokenizer()
        # A per-request seed makes each prompt's sample independent of its batch-mates.
        self._sampling = vllm.SamplingParams(
            **self.sampling.as_kwargs()
        )
        return self._llm

    def _render(self, prompt: str) -> str:
        return self._tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=False,
        )

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        # The per-request seed lives in the SamplingParams built at load time.
        if self._sampling is not None:
            import vllm

            self._sampling = vllm.SamplingParams(**self.sampling.as_kwargs())

    def complete(
        self,
        prompts: Sequence[str],
        on_progress: ProgressCallback | None = None,
        on_answer: AnswerCallback | None = None,
    ) -> list[str]:
        if not prompts:
            return []
        llm = self._load()
        answers: list[str] = []
        for batch in batched(list(prompts), self.batch_size):
            first = len(answers)
            rendered = [self._render(p) for p in batch]
            self.requests_sent += len(batch)
            self.generate_calls += 1
            outputs = llm.generate(rendered, self._sampling, use_tqdm=False)
            if len(outputs) != len(batch):
                raise LLMError(f"vLLM returned {len(outputs)} outputs for {len(batch)} prompts")
            answers.extend(out.outputs[0].text if out.outputs else "" for out in outputs)
            if on_answer is not None:
                for i in range(first, len(answers)):
                    on_answer(i, answers[i])
            if on_progress is not None:
                on_progress(len(batch))
        return answers

    def close(self) -> None:
        llm, self._llm = self._llm, None
        self._tokenizer = self._sampling = None
        if llm is None:
            return
        del llm
        gc.collect()
        # Give the GPU memory back for the training stage that follows.
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
