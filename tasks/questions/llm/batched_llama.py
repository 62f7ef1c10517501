"""Many chat prompts through one llama.cpp context at once (continuous batching on the CPU).

What one prompt at a time (``Llama.create_chat_completion``) leaves on the table:

* **Shared prefix.** The chat header, instructions and example are the same for
  every chunk; they are evaluated once into their own sequence and copied into
  each new sequence (``llama_memory_seq_cp`` only tags cache cells in a unified
  KV cache: no copy, no compute).
* **Several sequences per decode.** Up to ``n_parallel`` prompts are in flight:
  each ``llama_decode`` carries the next token of every sequence that is
  writing plus the prompt tokens of sequences that are starting, so the weights
  are read once for all of them. A finished sequence's slot is refilled at once.
* **Stopping early.** With ``stop_after_questions=n`` a sequence ends at the
  first newline after its n-th line with a question mark, instead of running to
  the end-of-turn token or ``max_tokens``.

Each prompt has its own sampler seeded with the same seed (the sampling chain of
``create_chat_completion``: top-k 40, typical 1, top-p, min-p 0.05, temperature,
then a seeded draw), so a chunk's answer does not depend on its neighbours.

Example, with the bundled GGUF (what it writes depends on the machine, so only the counts
are shown)::

    >>> from tasks.core.settings import DEFAULT_PROMPT_TEMPLATE
    >>> from tasks.questions.llm.chat_tokens import shared_prefix_text
    >>> from tasks.questions.prompts import build_prompt
    >>> engine = BatchedLlama(Path("models/llm/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"), n_parallel=2, n_threads=2)
    >>> engine.set_shared_prefix(shared_prefix_text(engine.tokenizer.render, DEFAULT_PROMPT_TEMPLATE, 1)) > 50
    True
    >>> chats = [engine.tokenizer.render(build_prompt(DEFAULT_PROMPT_TEMPLATE, text, 1))
    ...          for text in ("水在一百摄氏度时沸腾。", "冰在零度融化。")]
    >>> answers = engine.generate(chats, Sampling(max_tokens=24), stop=QuestionStop(1))
    >>> len(answers), engine.stats.prefix_hits
    (2, 2)
    >>> engine.close()
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.errors import LLMError
from tasks.questions.llm.base import Sampling
from tasks.questions.llm.chat_tokens import ChatTokenizer, quiet_llama_logs, split_after_prefix

__all__ = ["BatchedLlama", "EngineStats", "QuestionStop", "plan_batch"]

logger = logging.getLogger(__name__)

# Sampling defaults of Llama.create_chat_completion that Settings does not set.
_TOP_K = 40
_MIN_P = 0.05
_TYPICAL_P = 1.0
_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp: draw a random seed


@dataclass
class EngineStats:
    """Counts for benchmarks and logs: what was evaluated and what was written."""

    prompts: int = 0
    prompt_tokens: int = 0  # evaluated, i.e. without the shared prefix's reused tokens
    prefix_hits: int = 0
    prefix_tokens: int = 0  # of the shared prefix, evaluated once per load
    output_tokens: int = 0
    stopped_early: int = 0
    decode_calls: int = 0
    prefix_seconds: float = 0.0  # evaluating the shared prefix (once per load)
    prefix_cpu_seconds: float = 0.0  # the same, in CPU time of this process
    seconds: float = 0.0  # inside generate()


class QuestionStop:
    """Ends an answer at the first newline after ``n`` lines that contain a question mark.

    The question parser keeps at most ``n`` questions per chunk, so whatever the
    model writes after them is thrown away anyway.

    >>> stop = QuestionStop(1)
    >>> stop("以下是问题：\\n"), stop("植物靠什么生长？"), stop("植物靠什么生长？\\n")
    (False, False, True)
    """

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, text: str) -> bool:
        if self.n <= 0 or "\n" not in text:
            return False
        complete_lines = text.rsplit("\n", 1)[0].splitlines()
        return sum(1 for line in complete_lines if "？" in line or "?" in line) >= self.n


@dataclass
class _Slot:
    """One sequence of the context: the prompt it is working on and what it wrote so far."""

    seq_id: int
    index: int = -1  # position of its prompt in the generate() call; -1 when free
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet evaluated
    pos: int = 0  # position of the next token in this sequence
    sampler: Any = None
    output: bytearray = field(default_factory=bytearray)
    n_out: int = 0
    batch_row: int = -1  # row of this slot's last token in the current batch, -1 if no logits


def plan_batch(writing: Sequence[int], pending: Sequence[int], n_batch: int) -> tuple[list[int], list[int]]:
    """How many tokens each sequence puts into the next decode.

    ``writing[i]`` is 1 if sequence i needs its last sampled token evaluated,
    ``pending[i]`` the number of its prompt tokens still to evaluate. Writing
    sequences go first (one token each, so no sequence waits behind a long
    prompt), then prompts fill what is left of ``n_batch`` in slot order.

    >>> plan_batch([1, 0, 1], [0, 700, 0], 512)
    ([1, 0, 1], [0, 510, 0])
    """
    budget = n_batch - sum(writing)
    if budget < 0:
        raise ValueError(f"n_batch {n_batch} is smaller than the {sum(writing)} sequences writing")
    take = []
    for p in pending:
        k = min(p, budget)
        take.append(k)
        budget -= k
    return list(writing), take


class BatchedLlama:
    """A GGUF model and one llama.cpp context with ``n_parallel`` sequences plus one for the shared prefix."""

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx_per_seq: int = 2048,
        n_parallel: int = 8,
        n_threads: int = 1,
        n_batch: int = 512,
        use_mmap: bool = False,
    ) -> None:
        """``use_mmap=True`` keeps the weights as stored (llama-cpp-python's default); see :meth:`_load`."""
        if n_parallel < 1:
            raise ValueError("n_parallel must be at least 1")
        self.model_path = Path(model_path)
        self.n_ctx_per_seq = n_ctx_per_seq
        self.n_parallel = n_parallel
        self.n_threads = n_threads
        self.n_batch = max(n_batch, n_parallel)
        self.use_mmap = use_mmap
        self.stats = EngineStats()
        self._prefix_tokens: list[int] = []
        self._prefix_seq = n_parallel  # sequences 0..n_parallel-1 write, this one only holds the prefix
        self._load()

    # --- loading --------------------------------------------------------------------
    def _load(self) -> None:
        import llama_cpp

        self._L = llama_cpp
        quiet_llama_logs()
        llama_cpp.llama_backend_init()
        if not self.model_path.is_file():
            raise LLMError(f"GGUF model {self.model_path} does not exist: set --llm-model to a .gguf file")
        started = time.monotonic()
        mparams = llama_cpp.llama_model_default_params()
        # Without mmap llama.cpp repacks Q4_K/Q4_0 weights into its interleaved CPU
        # layout (q4_K_8x8), which makes prompt evaluation faster; mapped weights stay as stored.
        mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if self.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        self._model = llama_cpp.llama_model_load_from_file(str(self.model_path).encode(), mparams)
        if not self._model:
            raise LLMError(f"llama.cpp could not load {self.model_path} (is it a GGUF file?)")
        self.tokenizer = ChatTokenizer(self._model, source=str(self.model_path))
        cparams = llama_cpp.llama_context_default_params()
        # One cache for all sequences: a copied prefix is shared by tagging cells, not duplicated.
        cparams.kv_unified = True
        cparams.n_seq_max = self.n_parallel + 1
        cparams.n_ctx = self.n_ctx_per_seq * self.n_parallel
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = self.n_batch
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self.close()
            raise LLMError(
                f"llama.cpp could not create a context of {self.n_ctx_per_seq} x {self.n_parallel} tokens "
                f"for {self.model_path}; lower llm_parallel or llm_context"
            )
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, self.n_parallel + 1)
        logger.info(
            "Loaded %s in %.1f s (%d threads, %d sequences x %d tokens, batch %d, mmap %s)",
            self.model_path.name, time.monotonic() - started, self.n_threads, self.n_parallel,
            self.n_ctx_per_seq, self.n_batch, self.use_mmap,
        )

    def set_threads(self, n_threads: int) -> None:
        """Run the next decode calls on ``n_threads`` threads (prompt and generation alike)."""
        self._L.llama_set_n_threads(self._ctx, n_threads, n_threads)
        self.n_threads = n_threads

    def threads(self) -> int:
        """The thread count llama.cpp's context runs with now."""
        return int(self._L.llama_n_threads(self._ctx))

    def close(self) -> None:
        L = getattr(self, "_L", None)
        if L is None:
            return
        if getattr(self, "_batch", None) is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            L.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            L.llama_model_free(self._model)
            self._model = None

    # --- the shared prefix -------------------------------------------------------------
    def set_shared_prefix(self, text: str) -> int:
        """Evaluate ``text`` once; prompts that start with its tokens skip them. Returns the token count."""
        L = self._L
        started, cpu_started = time.perf_counter(), time.process_time()
        L.llama_memory_seq_rm(self._mem, self._prefix_seq, -1, -1)
        self._prefix_tokens = []
        tokens = self.tokenizer.tokenize(text) if text else []
        if len(tokens) >= self.n_ctx_per_seq:
            return 0
        for start in range(0, len(tokens), self.n_batch):
            part = tokens[start : start + self.n_batch]
            self._batch.n_tokens = 0
            for k, t in enumerate(part):
                self._add(t, start + k, self._prefix_seq, False)
            self._decode()
        self._prefix_tokens = tokens
        self.stats.prefix_tokens = len(tokens)
        self.stats.prefix_seconds += time.perf_counter() - started
        self.stats.prefix_cpu_seconds += time.process_time() - cpu_started
        return len(tokens)

    # --- generation ------------------------------------------------------------------
    def generate(
        self,
        chat_texts: Sequence[str],
        sampling: Sampling,
        *,
        stop: Callable[[str], bool] | None = None,
        on_done: Callable[[int], None] | None = None,
        on_answer: Callable[[int, str], None] | None = None,
        between_steps: Callable[[], object] | None = None,
    ) -> list[str]:
        """The answer to each rendered chat text (as from :meth:`ChatTokenizer.render`), in order.

        As each prompt finishes (they finish out of order), ``on_answer(its index, its
        answer)`` and then ``on_done(1)`` are called. ``between_steps()`` is called before
        every decode call, where the thread count may change (:meth:`set_threads`).
        """
        L = self._L
        started = time.perf_counter()
        tokenized = [self.tokenizer.tokenize(t) for t in chat_texts]
        for i, toks in enumerate(tokenized):
            if not toks:
                raise LLMError(f"prompt {i} is empty after tokenization; nothing to answer")
            if len(toks) + sampling.max_tokens > self.n_ctx_per_seq:
                raise LLMError(
                    f"prompt {i} is {len(toks)} tokens; with llm_max_tokens={sampling.max_tokens} it does not fit "
                    f"a context of {self.n_ctx_per_seq} tokens. Raise llm_context or lower chunk_size."
                )
        results: list[str | None] = [None] * len(chat_texts)
        queue = deque(range(len(chat_texts)))
        slots = [_Slot(seq_id=s) for s in range(self.n_parallel)]
        try:
            while queue or any(s.index >= 0 for s in slots):
                for slot in slots:
                    if slot.index < 0 and queue:
                        self._start(slot, queue.popleft(), tokenized, sampling)
                if between_steps is not None:
                    between_steps()
                self._step(slots)
                for slot in slots:
                    if slot.batch_row < 0:
                        continue
                    token = L.llama_sampler_sample(slot.sampler, self._ctx, slot.batch_row)
                    slot.batch_row = -1
                    if self.tokenizer.is_end(token):
                        self._finish(slot, results, on_done, on_answer)
                        continue
                    piece = self.tokenizer.piece(token)
                    slot.output += piece
                    slot.n_out += 1
                    self.stats.output_tokens += 1
                    slot.pending = [token]
                    if slot.n_out >= sampling.max_tokens:
                        self._finish(slot, results, on_done, on_answer)
                    elif stop is not None and b"\n" in piece and stop(_text(slot.output)):
                        self.stats.stopped_early += 1
                        self._finish(slot, results, on_done, on_answer)
        finally:
            for slot in slots:
                self._free(slot)
            self.stats.seconds += time.perf_counter() - started
        return [r or "" for r in results]

    def _start(self, slot: _Slot, index: int, tokenized: list[list[int]], sampling: Sampling) -> None:
        L = self._L
        tokens = tokenized[index]
        L.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        rest = split_after_prefix(tokens, self._prefix_tokens) if self._prefix_tokens else None
        if rest is not None:
            L.llama_memory_seq_cp(self._mem, self._prefix_seq, slot.seq_id, -1, -1)
            slot.pending, slot.pos = rest, len(self._prefix_tokens)
            self.stats.prefix_hits += 1
        else:
            slot.pending, slot.pos = list(tokens), 0
        self.stats.prompts += 1
        self.stats.prompt_tokens += len(slot.pending)
        slot.index = index
        slot.output = bytearray()
        slot.n_out = 0
        slot.batch_row = -1
        slot.sampler = self._make_sampler(sampling)

    def _step(self, slots: list[_Slot]) -> None:
        """One llama_decode: every writing slot's last token, then as many prompt tokens as fit."""
        active = [s for s in slots if s.index >= 0]
        # A slot is "writing" once it has produced a token; its pending list is then that one token.
        writing = [1 if s.n_out > 0 else 0 for s in active]
        prompt_left = [0 if w else len(s.pending) for s, w in zip(active, writing)]
        take_w, take_p = plan_batch(writing, prompt_left, self.n_batch)
        self._batch.n_tokens = 0
        for slot, w, p in zip(active, take_w, take_p):
            n = w or p
            if n == 0:
                continue
            part, slot.pending = slot.pending[:n], slot.pending[n:]
            for k, t in enumerate(part):
                last = k == n - 1 and not slot.pending
                if last:
                    slot.batch_row = self._batch.n_tokens
                self._add(t, slot.pos + k, slot.seq_id, last)
            slot.pos += n
        self._decode()

    def _add(self, token: int, pos: int, seq_id: int, logits: bool) -> None:
        b, j = self._batch, self._batch.n_tokens
        b.token[j] = token
        b.pos[j] = pos
        b.n_seq_id[j] = 1
        b.seq_id[j][0] = seq_id
        b.logits[j] = logits
        b.n_tokens = j + 1

    def _decode(self) -> None:
        if self._batch.n_tokens == 0:
            return
        rc = self._L.llama_decode(self._ctx, self._batch)
        self.stats.decode_calls += 1
        if rc != 0:
            raise LLMError(
                f"llama_decode failed with code {rc} ({'no room in the KV cache' if rc == 1 else 'error'}); "
                "lower llm_parallel or raise llm_context"
            )

    def _finish(
        self,
        slot: _Slot,
        results: list[str | None],
        on_done: Callable[[int], None] | None,
        on_answer: Callable[[int, str], None] | None,
    ) -> None:
        index = slot.index
        results[index] = _text(slot.output)
        self._free(slot)
        if on_answer is not None:
            on_answer(index, results[index])
        if on_done is not None:
            on_done(1)

    def _free(self, slot: _Slot) -> None:
        if slot.sampler is not None:
            self._L.llama_sampler_free(slot.sampler)
            slot.sampler = None
        if getattr(self, "_mem", None) is not None and slot.index >= 0:
            self._L.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        slot.index = -1
        slot.pending = []
        slot.batch_row = -1

    def _make_sampler(self, sampling: Sampling) -> Any:
        L = self._L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if sampling.temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            return chain
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(_TOP_K))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_typical(_TYPICAL_P, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(sampling.top_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(_MIN_P, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(sampling.temperature))
        seed = _DEFAULT_SEED if sampling.seed is None else sampling.seed & 0xFFFFFFFF
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))
        return chain


def _text(data: bytearray) -> str:
    # A token can end in the middle of a UTF-8 character; the rest comes with the next one.
    return bytes(data).decode("utf-8", errors="ignore")
