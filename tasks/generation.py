"""Ask the LLM for questions about every chunk, through the per-chunk cache.

Only chunks the cache has not seen are sent, in batches sized for the backend
(vLLM takes hundreds at once, an HTTP server a few per connection, the CPU model a
handful); every finished batch is on disk before the next starts. The LLM itself
is loaded only when at least one chunk is missing, so a fully cached run never
touches it.

Example::

    >>> result = generate_questions(chunks, settings, make_writer)
    >>> result.stats.requests_sent, result.stats.cache_hits, len(result.questions)
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable

from tqdm.auto import tqdm

from tasks.fileio import stable_hash
from tasks.generation_cache import GenerationCache
from tasks.llm.base import QuestionWriter
from tasks.prompts import build_prompt, parse_questions
from tasks.question_filters import DUPLICATE, drop_reason
from tasks.records import Chunk
from tasks.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Question:
    qid: str
    chunk_id: str
    question: str


@dataclass
class GenerationStats:
    chunks: int = 0
    cache_hits: int = 0
    requests_sent: int = 0
    questions_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    seconds_in_llm: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenerationResult:
    questions: list[Question]
    stats: GenerationStats


def batch_size_for(settings: Settings) -> int:
    """How many prompts go to the backend between two cache flushes."""
    backend = settings.resolved_llm_backend()
    if backend == "vllm":
        return settings.vllm_batch_size
    if backend == "openai":
        return settings.llm_concurrency * 4
    return 4


def echoes_template(question: str, template: str, chunk_text: str, min_len: int = 6) -> bool:
    """True when the question repeats a run of ``min_len`` characters from the prompt's own
    text (its example question, its instructions) that the chunk does not contain.

    Small models copy the one-shot example; a question about the example is about
    nothing in the corpus and would teach the model a false pair.
    """
    instructions = _letters(template.replace("{context_str}", "\0").replace("{num_questions_per_chunk}", "\0"))
    q, chunk = _letters(question), _letters(chunk_text)
    return any(
        q[i : i + min_len] in instructions and q[i : i + min_len] not in chunk for i in range(len(q) - min_len + 1)
    )


def _letters(text: str) -> str:
    # Punctuation differs between a question and the sentence it came from ("？" vs "，").
    return "".join(ch for ch in text if ch.isalnum() or ch == "\0")


def question_id(chunk_id: str, index: int, question: str) -> str:
    return stable_hash([chunk_id, index, question])[:32]


def generate_questions(
    chunks: list[Chunk],
    settings: Settings,
    writer_factory: Callable[[Settings], QuestionWriter],
    show_progress: bool = True,
) -> GenerationResult:
    """Questions for ``chunks``: cached answers reused, the rest asked of a writer."""
    cache = GenerationCache(settings.cache_dir, settings.generation_fingerprint())
    stats = GenerationStats(chunks=len(chunks))

    unique_texts = list(dict.fromkeys(c.text for c in chunks))
    missing = [t for t in unique_texts if cache.get(t) is None]
    stats.cache_hits = len(unique_texts) - len(missing)
    log.info(
        "questions: %d chunks, %d answered before (cache %s), %d to ask",
        len(unique_texts), stats.cache_hits, cache.path, len(missing),
    )
    if missing:
        stats.requests_sent, stats.seconds_in_llm = _ask(missing, settings, cache, writer_factory, show_progress)

    questions: list[Question] = []
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    for chunk in chunks:
        parsed = parse_questions(cache.get(chunk.text) or "", settings.questions_per_chunk)
        if not parsed:
            dropped["no question in the answer"] += 1
            continue
        kept = []
        for q in parsed:
            reason = drop_reason(q, chunk.text, settings)
            if reason is None and echoes_template(q, settings.prompt_template, chunk.text):
                reason = "repeats the prompt's example"
            if reason is None and q in seen:
                reason = DUPLICATE
            if reason:
                dropped[reason] += 1
                continue
            seen.add(q)
            kept.append(q)
        for i, q in enumerate(kept):
            questions.append(Question(qid=question_id(chunk.chunk_id, i, q), chunk_id=chunk.chunk_id, question=q))
    stats.questions_kept = len(questions)
    stats.dropped = dict(dropped)
    return GenerationResult(questions=questions, stats=stats)


def _ask(
    texts: list[str],
    settings: Settings,
    cache: GenerationCache,
    writer_factory: Callable[[Settings], QuestionWriter],
    show_progress: bool,
) -> tuple[int, float]:
    batch = batch_size_for(settings)
    started = time.perf_counter()
    writer = writer_factory(settings)
    try:
        with tqdm(total=len(texts), desc="questions", unit="chunk", disable=not show_progress) as bar:
            for start in range(0, len(texts), batch):
                part = texts[start : start + batch]
                prompts = [build_prompt(settings.prompt_template, t, settings.questions_per_chunk) for t in part]
                raws = writer.complete(prompts, on_progress=bar.update)
                if len(raws) != len(part):
                    raise RuntimeError(f"{writer.name} returned {len(raws)} answers for {len(part)} prompts")
                cache.put_many(dict(zip(part, raws)))
                done = start + len(part)
                elapsed = time.perf_counter() - started
                log.info(
                    "questions: %d/%d chunks asked, %.2f chunks/s, about %.0f s left",
                    done, len(texts), done / elapsed, (len(texts) - done) * elapsed / done,
                )
        return writer.requests_sent, time.perf_counter() - started
    finally:
        writer.close()
