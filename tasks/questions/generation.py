"""Ask the LLM for questions about every chunk, through the per-chunk cache.

Only chunks the cache has not seen are sent, in batches sized for the backend
(vLLM takes hundreds at once, an HTTP server a few per connection, the CPU model a
handful); each answer is on disk as soon as it arrives, so a killed run asks again
only what was in flight. The LLM itself is loaded only when at least one chunk is
missing, so a fully cached run never touches it, and at most once per run: the
retry rounds reuse it, and it is freed before the questions are returned.

Around that:

- chunks not worth a question (a table of contents, references, a cover page:
  :mod:`tasks.chunks.quality`) are not sent at all, and counted per reason;
- what the LLM wrote is parsed (:mod:`tasks.questions.prompts`) and filtered
  (:mod:`tasks.questions.filters`, the prompt's example, duplicates), each drop counted;
- a chunk left without a usable question, or whose batch the LLM failed, is asked
  again with another seed, up to ``generation_retries`` times. Attempt ``a`` has its
  own cache file (the fingerprint plus ``attempt``), so a rerun is all cache hits;
- chunks that still have an LLM error or no question at all are listed, and the run
  fails only when they are more than ``max_failed_share`` of the chunks asked;
- an LLM server that went away is not a bad batch: the writer waits for it, and if it
  gives up (a :class:`TransientError`) generation stops at once, every answer so far
  cached, for the stage's retry to ask only the rest.

Example::

    >>> import tempfile
    >>> from tasks.questions.llm import make_writer
    >>> chunks = [Chunk(chunk_id="c1", doc_id="d1", source="a.pdf", page=1, text="尤金袋鼠分布在澳洲南部的岛屿上。它们以草为食。"),
    ...           Chunk(chunk_id="c2", doc_id="d1", source="a.pdf", page=2, text="泡泡战士由韩国Nexon开发与发行，是一款休闲射击游戏。")]
    >>> settings = Settings(llm_backend="extractive", cache_dir=tempfile.mkdtemp())
    >>> result = generate_questions(chunks, settings, make_writer, show_progress=False)
    >>> result.stats.requests_sent, result.stats.cache_hits, len(result.questions)
    (2, 0, 2)
    >>> result.questions[0].chunk_id, result.questions[0].question
    ('c1', '文中关于“尤金袋鼠分布在澳洲南部的岛屿上”说了什么？')
    >>> generate_questions(chunks, settings, make_writer, show_progress=False).stats.cache_hits  # a rerun
    2
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from tqdm.auto import tqdm

from tasks.chunks.quality import skip_reason
from tasks.core.errors import GenerationFailedError, LLMError, TransientError
from tasks.core.fileio import stable_hash
from tasks.questions.answer_cache import GenerationCache
from tasks.questions.llm.base import QuestionWriter
from tasks.questions.prompts import build_prompt, parse_questions
from tasks.questions.filters import DUPLICATE, ECHOES_PROMPT, drop_reason
from tasks.core.records import Chunk
from tasks.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Question:
    qid: str
    chunk_id: str
    question: str


NO_QUESTION = "no question in the answer"
ALL_DROPPED = "every question dropped by the filters"
LLM_FAILED = "LLM error"
# Examples kept per reason for the generation report, and failed chunks listed in it.
EXAMPLES_PER_REASON = 3
MAX_LISTED_FAILURES = 100
# This many failed batches in a row means the LLM is down, not that a few chunks are hard.
MAX_FAILED_BATCHES_IN_A_ROW = 3


@dataclass
class GenerationStats:
    chunks: int = 0
    cache_hits: int = 0
    requests_sent: int = 0
    questions_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    seconds_in_llm: float = 0.0
    # Not asked: chunk_quality's reason -> chunks.
    chunks_skipped: dict[str, int] = field(default_factory=dict)
    chunks_asked: int = 0
    chunks_with_questions: int = 0
    # Asked again with another seed (at least once), and of those, the ones that then gave a question.
    retried_chunks: int = 0
    recovered_by_retry: int = 0
    # After the retries: every chunk without a kept question, with why ({chunk_id, source, page, reason}).
    # Those whose reason is an LLM error or no question at all count as failed (max_failed_share).
    chunks_without_question: list[dict[str, Any]] = field(default_factory=list)
    failed_chunks: int = 0
    # reason -> a few {"chunk_id", "text"}: the dropped question, the raw answer, or the skipped chunk.
    examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)

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
    if backend == "gguf":
        # Its sequences run in parallel: a batch of a few times llm_parallel keeps them all busy.
        return settings.llm_parallel * 4
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


def retries_for(settings: Settings) -> int:
    """How many times a failed chunk is asked again: none when another seed cannot change
    the answer (greedy sampling, or the deterministic extractive writer)."""
    if settings.resolved_llm_backend() == "extractive" or settings.llm_temperature == 0:
        return 0
    return settings.generation_retries


def attempt_settings(settings: Settings, attempt: int) -> Settings:
    """The settings the writer of ``attempt`` is made with: the seed moves on by one per attempt."""
    return settings if attempt == 0 else settings.model_copy(update={"seed": settings.seed + attempt})


def attempt_fingerprint(settings: Settings, attempt: int) -> dict[str, Any]:
    """The cache fingerprint of ``attempt``; attempt 0 is the plain one, so earlier caches stay valid."""
    fp = settings.generation_fingerprint()
    return fp if attempt == 0 else {**fp, "attempt": attempt}


class _Judge:
    """Reads questions out of answers and filters them, counting drops and keeping examples."""

    def __init__(self, settings: Settings, stats: GenerationStats):
        self.settings = settings
        self.stats = stats
        self.dropped: Counter[str] = Counter()
        self.seen: set[str] = set()

    def example(self, reason: str, chunk: Chunk, text: str) -> None:
        shelf = self.stats.examples.setdefault(reason, [])
        if len(shelf) < EXAMPLES_PER_REASON:
            shelf.append({"chunk_id": chunk.chunk_id, "text": text})

    def keep(self, chunk: Chunk, raw: str) -> list[str]:
        s = self.settings
        parsed = parse_questions(raw, s.questions_per_chunk)
        if not parsed:
            self.dropped[NO_QUESTION] += 1
            self.example(NO_QUESTION, chunk, _excerpt(raw) or "(empty answer)")
            return []
        kept = []
        for q in parsed:
            reason = drop_reason(q, chunk.text, s)
            if reason is None and s.filter_prompt_echo and echoes_template(q, s.prompt_template, chunk.text):
                reason = ECHOES_PROMPT
            if reason is None and s.filter_duplicates and q in self.seen:
                reason = DUPLICATE
            if reason:
                self.dropped[reason] += 1
                self.example(reason, chunk, q)
                continue
            self.seen.add(q)
            kept.append(q)
        return kept


def _excerpt(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def generate_questions(
    chunks: list[Chunk],
    settings: Settings,
    writer_factory: Callable[[Settings], QuestionWriter],
    show_progress: bool = True,
) -> GenerationResult:
    """Questions for ``chunks``: cached answers reused, the rest asked of a writer.

    Raises :class:`GenerationFailedError` when more than ``settings.max_failed_share``
    of the chunks asked end with an LLM error or no question, or when the LLM fails
    several batches in a row; every answer received before is cached.
    """
    stats = GenerationStats(chunks=len(chunks))
    judge = _Judge(settings, stats)

    asked: list[Chunk] = []
    skipped: Counter[str] = Counter()
    for chunk in chunks:
        reason = skip_reason(chunk.text) if settings.skip_low_value_chunks else None
        if reason:
            skipped[reason] += 1
            judge.example(reason, chunk, _excerpt(chunk.text))
        else:
            asked.append(chunk)
    stats.chunks_skipped = dict(skipped)
    stats.chunks_asked = len(asked)
    if skipped:
        log.info("questions: %d chunks not worth a question, not asked: %s", sum(skipped.values()), dict(skipped))

    kept: dict[int, list[str]] = {}
    outcome: dict[int, str] = {}  # why a chunk has no question (after its latest attempt)
    pending = list(range(len(asked)))
    retries = retries_for(settings)
    writers = _OneWriter(writer_factory, settings)
    try:
        for attempt in range(retries + 1):
            if not pending:
                break
            with GenerationCache(settings.cache_dir, attempt_fingerprint(settings, attempt)) as cache:
                texts = list(dict.fromkeys(asked[i].text for i in pending))
                missing = [t for t in texts if cache.get(t) is None]
                stats.cache_hits += len(texts) - len(missing)
                if attempt == 1:
                    stats.retried_chunks = len(pending)
                log.info(
                    "questions%s: %d chunks, %d answered before (cache %s), %d to ask",
                    f" (attempt {attempt + 1}, seed {settings.seed + attempt})" if attempt else "",
                    len(texts), len(texts) - len(missing), cache.path, len(missing),
                )
                errors: dict[str, str] = {}
                if missing:
                    sent, seconds, errors = _ask(
                        missing, attempt_settings(settings, attempt), cache, writers.for_attempt(attempt),
                        show_progress, attempt,
                    )
                    stats.requests_sent += sent
                    stats.seconds_in_llm += seconds
            still = []
            for i in pending:
                chunk = asked[i]
                raw = cache.get(chunk.text)
                if raw is None:
                    outcome[i] = f"{LLM_FAILED}: {errors.get(chunk.text, 'no answer')}"
                    still.append(i)
                    continue
                questions = judge.keep(chunk, raw)
                if questions:
                    kept[i] = questions
                    outcome.pop(i, None)
                    stats.recovered_by_retry += attempt > 0
                else:
                    outcome[i] = NO_QUESTION if not parse_questions(raw, settings.questions_per_chunk) else ALL_DROPPED
                    still.append(i)
            pending = still
    finally:
        # Free the model now: the training that follows must not share memory with it.
        writers.close()

    questions: list[Question] = []
    for i, chunk in enumerate(asked):
        for j, q in enumerate(kept.get(i, [])):
            questions.append(Question(qid=question_id(chunk.chunk_id, j, q), chunk_id=chunk.chunk_id, question=q))
    stats.questions_kept = len(questions)
    stats.chunks_with_questions = len(kept)
    stats.dropped = dict(judge.dropped)
    without = [
        {"chunk_id": asked[i].chunk_id, "source": asked[i].source, "page": asked[i].page,
         "pages": asked[i].pages, "reason": outcome[i]}
        for i in pending
    ]
    failed = [w for w in without if w["reason"] != ALL_DROPPED]
    stats.failed_chunks = len(failed)
    # The failures first: they are what the report and the error must show.
    stats.chunks_without_question = (failed + [w for w in without if w["reason"] == ALL_DROPPED])[:MAX_LISTED_FAILURES]
    check_failed_share(failed, len(asked), settings.max_failed_share, retries)
    return GenerationResult(questions=questions, stats=stats)


class _OneWriter:
    """One writer for the first round and every retry round: made when first needed, closed once.

    A retry round only changes the seed; a writer that can take a new seed
    (``reseed``, as every backend here can) keeps its model loaded. One that cannot is
    closed and made again with the round's settings.
    """

    def __init__(self, factory: Callable[[Settings], QuestionWriter], settings: Settings):
        self.factory = factory
        self.settings = settings
        self.writer: QuestionWriter | None = None
        self.seed: int | None = None

    def for_attempt(self, attempt: int) -> QuestionWriter:
        s = attempt_settings(self.settings, attempt)
        if self.writer is not None and self.seed != s.seed:
            reseed = getattr(self.writer, "reseed", None)
            if reseed is not None:
                reseed(s.seed)
            else:
                self.close()
        if self.writer is None:
            self.writer = self.factory(s)
        self.seed = s.seed
        return self.writer

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()


def check_failed_share(failed: list[dict[str, Any]], n_asked: int, max_share: float, retries: int) -> None:
    """Raise when more than ``max_share`` of the ``n_asked`` chunks failed, listing a few.

    Example::

        >>> check_failed_share([{"chunk_id": "c1", "source": "a.pdf", "page": 2, "reason": "LLM error: timed out"}],
        ...                    n_asked=1, max_share=0.5, retries=2)
        Traceback (most recent call last):
        tasks.core.errors.GenerationFailedError: 1 of 1 chunks (100%) have no question after 2 retries, more than max_failed_share 0.5: a.pdf p.2 chunk c1: LLM error: timed out. ...
    """
    if not n_asked or len(failed) <= max_share * n_asked:
        if failed:
            log.warning("questions: %d of %d chunks failed (an LLM error or no question): %s",
                        len(failed), n_asked, "; ".join(_describe(f) for f in failed[:5]))
        return
    shown = "; ".join(_describe(f) for f in failed[:5])
    more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
    raise GenerationFailedError(
        f"{len(failed)} of {n_asked} chunks ({len(failed) / n_asked:.0%}) have no question after {retries} "
        f"retries, more than max_failed_share {max_share}: {shown}{more}. Answers received so far are cached: "
        f"fix the LLM (server, model, prompt) and run again, or raise --max-failed-share."
    )


def _describe(failure: dict[str, Any]) -> str:
    return f"{failure['source']} p.{failure.get('pages', failure['page'])} chunk {failure['chunk_id'][:12]}: {failure['reason']}"


def _ask(
    texts: list[str],
    settings: Settings,
    cache: GenerationCache,
    writer: QuestionWriter,
    show_progress: bool,
    attempt: int = 0,
) -> tuple[int, float, dict[str, str]]:
    """Ask for ``texts`` batch by batch, each answer cached as it arrives; (requests sent,
    seconds, {text: error} of failed batches).

    A failed batch is recorded and the next one tried (a retry round asks it again); a few
    failed batches in a row mean the LLM is down, and waiting on every other batch would
    only take longer, so that raises. A :class:`TransientError` (the server away longer
    than the writer waits for it) says nothing about the batch, and is raised as it is.
    """
    batch = batch_size_for(settings)
    started = time.perf_counter()
    errors: dict[str, str] = {}
    failed_in_a_row = 0
    sent_before = writer.requests_sent  # the writer serves every round (and tests may share one)
    desc = "questions" if attempt == 0 else f"questions (retry {attempt})"
    with tqdm(total=len(texts), desc=desc, unit="chunk", disable=not show_progress) as bar:
        for start in range(0, len(texts), batch):
            part = texts[start : start + batch]
            prompts = [build_prompt(settings.prompt_template, t, settings.questions_per_chunk) for t in part]
            answered: set[str] = set()
            try:
                _complete(writer, prompts, bar.update, _keeper(part, cache, answered))
            except TransientError:
                raise
            except Exception as e:  # noqa: BLE001 - any backend failure: record it, retry the chunks later
                log.warning("questions: a batch of %d chunks failed: %s", len(part), _error(e))
                rest = [i for i, t in enumerate(part) if t not in answered]
                if attempt == 0 or len(rest) <= 1:
                    batch_errors = dict.fromkeys((part[i] for i in rest), _error(e))
                else:
                    # In a retry round, one prompt the model cannot take (too long for its
                    # context, say) must not fail its batch-mates again: ask them one by one.
                    batch_errors = _one_by_one(writer, [part[i] for i in rest], [prompts[i] for i in rest], cache)
                errors.update(batch_errors)
                if len(batch_errors) < len(part):  # some of the batch was answered
                    failed_in_a_row = 0
                else:
                    failed_in_a_row += 1
                    if failed_in_a_row >= MAX_FAILED_BATCHES_IN_A_ROW:
                        raise GenerationFailedError(
                            f"the LLM ({writer.name}) failed {failed_in_a_row} batches in a row, last with "
                            f"{_error(e)}. Answers received so far are cached: fix the LLM (is the server up? "
                            "the model path right?) and run again."
                        ) from e
            else:
                failed_in_a_row = 0
            cache.sync()
            done = start + len(part)
            elapsed = time.perf_counter() - started
            log.info(
                "questions: %d/%d chunks asked, %.2f chunks/s, about %.0f s left",
                done, len(texts), done / elapsed, (len(texts) - done) * elapsed / done,
            )
    return writer.requests_sent - sent_before, time.perf_counter() - started, errors


def _keeper(part: list[str], cache: GenerationCache, answered: set[str]) -> Callable[[int, str], None]:
    """The ``on_answer`` of one batch: caches the answer to ``part[i]`` and notes it answered."""

    def keep(i: int, raw: str) -> None:
        answered.add(part[i])
        cache.add(part[i], raw)

    return keep


def _complete(
    writer: QuestionWriter,
    prompts: list[str],
    on_progress: Callable[[int], None] | None,
    on_answer: Callable[[int, str], None],
) -> None:
    """Ask ``writer`` for ``prompts``; each answer goes to ``on_answer`` once: as it arrives
    where the writer can say so, else when the call returns."""
    reported: set[int] = set()

    def once(i: int, raw: str) -> None:
        if i not in reported:
            reported.add(i)
            on_answer(i, raw)

    if _takes_on_answer(writer):
        raws = writer.complete(prompts, on_progress=on_progress, on_answer=once)
    else:
        raws = writer.complete(prompts, on_progress=on_progress)
    if len(raws) != len(prompts):
        raise LLMError(f"{writer.name} returned {len(raws)} answers for {len(prompts)} prompts")
    for i, raw in enumerate(raws):
        once(i, raw)


def _takes_on_answer(writer: QuestionWriter) -> bool:
    """Whether ``writer.complete`` accepts ``on_answer`` (writers written before it existed do not)."""
    try:
        params = inspect.signature(writer.complete).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "on_answer" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _one_by_one(writer: QuestionWriter, texts: list[str], prompts: list[str], cache: GenerationCache) -> dict[str, str]:
    """Ask each prompt alone, caching each answer; {text: error} of those that failed."""
    errors = {}
    for text, prompt in zip(texts, prompts):
        try:
            _complete(writer, [prompt], None, lambda _, raw, text=text: cache.add(text, raw))
        except TransientError:
            raise
        except Exception as e:  # noqa: BLE001 - recorded per chunk
            errors[text] = _error(e)
    return errors


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"
