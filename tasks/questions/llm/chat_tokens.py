"""Chat prompts as llama.cpp tokens, split into the part every prompt shares and the rest.

Every question-writing prompt is the same chat (the GGUF's own chat template, its
default system message, the instructions and the one-shot example) up to the
chunk text. :class:`ChatTokenizer` renders a prompt exactly as
``llama_cpp.Llama.create_chat_completion`` does (same Jinja template, same
special tokens, same tokenizer call), and :func:`shared_prefix_text` finds the
longest piece of that rendering which is identical for every chunk *and* ends
where the tokenizer must start a new token (right after a newline that is
followed by the chunk). The prefix is then evaluated once and its KV cache reused.

Whether ``tokens(prefix) + tokens(rest) == tokens(whole prompt)`` is not assumed:
:func:`split_after_prefix` checks it per prompt, and a prompt for which it fails
is simply run whole.

Example::

    >>> from pathlib import Path
    >>> from tasks.core.settings import DEFAULT_PROMPT_TEMPLATE
    >>> from tasks.questions.prompts import build_prompt
    >>> tok = ChatTokenizer.load(Path("models/llm/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"))
    >>> prefix = tok.tokenize(shared_prefix_text(tok.render, DEFAULT_PROMPT_TEMPLATE, 1))
    >>> whole = tok.tokenize(tok.render(build_prompt(DEFAULT_PROMPT_TEMPLATE, "冰在零度融化。", 1)))
    >>> rest = split_after_prefix(whole, prefix)  # the tokens after the prefix
    >>> prefix + rest == whole, 0 < len(rest) < len(whole)
    (True, True)
    >>> tok.close()
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tasks.core.errors import LLMError
from tasks.questions.prompts import build_prompt

__all__ = ["ChatTokenizer", "shared_prefix_text", "split_after_prefix", "quiet_llama_logs"]

# Stands in for the chunk while the template is rendered; no template contains it.
_SENTINEL = "\u0000CHUNK\u0000"


def quiet_llama_logs() -> None:
    """Silence llama.cpp's hundreds of loader lines (errors still print), as ``Llama(verbose=False)`` does."""
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)


def shared_prefix_text(render: Callable[[str], str], template: str, n_questions: int) -> str:
    """The longest start of every rendered prompt that ends right after a newline.

    ``render`` turns a user message into the full chat text. The cut is placed
    after the last newline before the chunk: Qwen's and Llama's BPE pre-tokenizers
    end a pre-token at a newline followed by a non-space character, so no token
    can straddle the cut (a chunk that itself starts with whitespace is the one
    case where it can, which :func:`split_after_prefix` catches). ``""`` when the
    chunk is not preceded by a newline.

    Example::

        >>> shared_prefix_text(lambda m: f"<user>\\n{m}</user>", "资料：\\n{context_str}\\n出{num_questions_per_chunk}题", 1)
        '<user>\\n资料：\\n'
    """
    rendered = render(build_prompt(template, _SENTINEL, n_questions))
    at = rendered.find(_SENTINEL)
    if at < 0:
        return ""  # the chat template transformed the message; share nothing
    cut = rendered.rfind("\n", 0, at)
    return rendered[: cut + 1] if cut >= 0 else ""


def split_after_prefix(tokens: Sequence[int], prefix: Sequence[int]) -> list[int] | None:
    """The tokens after ``prefix`` if ``tokens`` starts with it, else ``None`` (run the prompt whole).

    Example::

        >>> split_after_prefix([1, 2, 3, 4], [1, 2])
        [3, 4]
        >>> split_after_prefix([1, 5, 3], [1, 2]) is None
        True
    """
    n = len(prefix)
    if n == 0 or len(tokens) <= n or list(tokens[:n]) != list(prefix):
        return None
    return list(tokens[n:])


class ChatTokenizer:
    """A GGUF's chat template and tokenizer, without llama-cpp-python's ``Llama`` class.

    Wraps a loaded ``llama_model`` pointer (it does not own it, unless made by
    :meth:`load`, which loads only the vocabulary: a fraction of a second).
    """

    def __init__(self, model: Any, *, owns_model: bool = False, source: str = "") -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama_cpp = llama_cpp
        self._model = model
        self._owns_model = owns_model
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        template = self.metadata("tokenizer.chat_template")
        if not template:
            raise LLMError(
                f"{source or 'the GGUF'} has no chat template (tokenizer.chat_template); "
                "use an instruct/chat GGUF, which stores its template"
            )
        self.chat_template = template
        eos, bos = llama_cpp.llama_vocab_eos(self.vocab), llama_cpp.llama_vocab_bos(self.vocab)
        # The same formatter, tokens and flags that Llama.__init__ builds from the GGUF metadata.
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self.token_text(eos) if eos != -1 else "",
            bos_token=self.token_text(bos) if bos != -1 else "",
        )

    @classmethod
    def load(cls, gguf: Path) -> "ChatTokenizer":
        """Load only the vocabulary and metadata of ``gguf`` (fast; no weights)."""
        import llama_cpp

        quiet_llama_logs()
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), params)
        if not model:
            raise LLMError(f"llama.cpp could not read the vocabulary of {gguf}")
        return cls(model, owns_model=True, source=str(gguf))

    def metadata(self, key: str) -> str | None:
        size = 1 << 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    def token_text(self, token: int) -> str:
        return self._llama_cpp.llama_vocab_get_text(self.vocab, token).decode("utf-8", errors="replace")

    def render(self, user_message: str) -> str:
        """The chat text of one user message plus the assistant header, as create_chat_completion renders it."""
        return self._formatter(messages=[{"role": "user", "content": user_message}]).prompt

    def tokenize(self, text: str) -> list[int]:
        """Tokens of rendered chat text: special tokens parsed, no BOS added (the template has its own)."""
        data = text.encode("utf-8")
        capacity = len(data) + 16
        buf = (self._llama_cpp.llama_token * capacity)()
        n = self._llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, capacity, False, True)
        if n < 0:  # cannot happen with one token per byte at most, but the API allows it
            capacity = -n
            buf = (self._llama_cpp.llama_token * capacity)()
            n = self._llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, capacity, False, True)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes of one generated token (special tokens as empty bytes, as in create_chat_completion)."""
        buf = ctypes.create_string_buffer(64)
        n = self._llama_cpp.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._llama_cpp.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    def is_end(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        model, self._model = self._model, None
        if model is not None and self._owns_model:
            self._llama_cpp.llama_model_free(model)
