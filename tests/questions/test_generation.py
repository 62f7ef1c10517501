"""Question generation through the per-chunk cache (a counting writer stands in for the LLM)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.questions.generation import generate_questions
from tasks.questions.answer_cache import SYNC_EVERY_ANSWERS, GenerationCache
from tasks.questions.llm.base import BaseWriter
from tasks.core.records import Chunk
from tasks.core.settings import Settings


class CountingWriter:
    name = "counting"

    def __init__(self, answers=None, fail_after=None):
        self.requests_sent = 0
        self.prompts: list[str] = []
        self.answers = answers or {}
        self.fail_after = fail_after

    def complete(self, prompts, on_progress=None):
        out = []
        for p in prompts:
            if self.fail_after is not None and self.requests_sent >= self.fail_after:
                raise ConnectionError("LLM went away")
            self.requests_sent += 1
            self.prompts.append(p)
            answer = next((a for k, a in self.answers.items() if k in p), None)
            if answer is None:
                topic = re.search(r"(\S{1,2}内容第\d+段)", p).group(1)
                answer = f"1. {topic}讲的是什么事？"
            out.append(answer)
            if on_progress:
                on_progress(1)
        return out

    def close(self):
        pass


def _chunks(n: int, prefix: str = "段落") -> list[Chunk]:
    # Chunk i lies on pages i+1 to i+2, as a chunk across a page break does.
    return [Chunk(f"{prefix}{i}", "d", "d.pdf", i + 1, f"{prefix}内容第{i}段，讲的是一件事。", i + 2) for i in range(n)]


def _settings(tmp_path: Path, **kw) -> Settings:
    return Settings(cache_dir=tmp_path / "cache", llm_backend="openai", **kw)


def test_second_run_sends_nothing_and_new_chunks_only_send_themselves(tmp_path):
    s = _settings(tmp_path)
    w1 = CountingWriter()
    r1 = generate_questions(_chunks(5), s, lambda _: w1, show_progress=False)
    assert w1.requests_sent == 5 and r1.stats.requests_sent == 5 and r1.stats.cache_hits == 0
    assert [q.question for q in r1.questions][0].endswith("？")

    made = []
    r2 = generate_questions(_chunks(5), s, lambda _: made.append(1) or CountingWriter(), show_progress=False)
    assert made == [], "a fully cached run must not even load the LLM"
    assert r2.stats.requests_sent == 0 and r2.stats.cache_hits == 5
    assert [q.question for q in r2.questions] == [q.question for q in r1.questions]

    w3 = CountingWriter()
    r3 = generate_questions(_chunks(5) + _chunks(2, "新段"), s, lambda _: w3, show_progress=False)
    assert w3.requests_sent == 2 and all("新段" in p for p in w3.prompts)
    assert r3.stats.cache_hits == 5 and len(r3.questions) == 7


def test_changed_prompt_settings_do_not_reuse_answers(tmp_path):
    generate_questions(_chunks(3), _settings(tmp_path), lambda _: CountingWriter(), show_progress=False)
    w = CountingWriter()
    generate_questions(_chunks(3), _settings(tmp_path, llm_temperature=0.1), lambda _: w, show_progress=False)
    assert w.requests_sent == 3


class Killed(BaseException):
    """A kill -9 stand-in: not an Exception, so nothing may catch it as an LLM failure."""


class DyingWriter(CountingWriter):
    def complete(self, prompts, on_progress=None):
        if self.requests_sent + len(prompts) > 6:
            raise Killed()
        return super().complete(prompts, on_progress)


def test_a_crash_keeps_the_finished_batches(tmp_path):
    s = _settings(tmp_path, llm_concurrency=1)  # openai batches are 4 prompts
    with pytest.raises(Killed):
        generate_questions(_chunks(10), s, lambda _: DyingWriter(), show_progress=False)
    w = CountingWriter()
    r = generate_questions(_chunks(10), s, lambda _: w, show_progress=False)
    assert r.stats.cache_hits == 4 and w.requests_sent == 6


class StreamingWriter(CountingWriter):
    """Reports each answer as it is written (as the real backends do), and dies after ``die_after`` of them."""

    def __init__(self, die_after=None, die=None, **kw):
        super().__init__(**kw)
        self.die_after = die_after
        self.die = die or (lambda: (_ for _ in ()).throw(Killed()))

    def complete(self, prompts, on_progress=None, on_answer=None):
        out = []
        for i, p in enumerate(prompts):
            if self.requests_sent == self.die_after:
                self.die()
            out += super().complete([p], on_progress)
            if on_answer:
                on_answer(i, out[-1])
        return out


def test_a_crash_mid_batch_keeps_every_answer_that_arrived(tmp_path):
    s = _settings(tmp_path, llm_concurrency=1)  # openai batches are 4 prompts
    with pytest.raises(Killed):
        generate_questions(_chunks(10), s, lambda _: StreamingWriter(die_after=6), show_progress=False)
    w = CountingWriter()
    r = generate_questions(_chunks(10), s, lambda _: w, show_progress=False)
    # Dead two answers into the second batch: only the four never answered are asked again.
    assert r.stats.cache_hits == 6 and w.requests_sent == 4
    assert all(f"内容第{i}段" in p for i, p in zip(range(6, 10), w.prompts))


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.questions.test_generation import StreamingWriter, _chunks, _settings
from tasks.questions.generation import generate_questions

die = lambda: os.kill(os.getpid(), signal.SIGKILL)
generate_questions(_chunks(10), _settings(Path({tmp!r}), llm_concurrency=1),
                   lambda _: StreamingWriter(die_after={n}, die=die), show_progress=False)
"""


@pytest.mark.slow
def test_kill_9_mid_batch_then_rerun_asks_only_the_rest(tmp_path):
    root = Path(__file__).resolve().parents[2]
    code = KILLED_RUN.format(root=str(root), tmp=str(tmp_path), n=7)
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]

    s = _settings(tmp_path, llm_concurrency=1)
    lines = GenerationCache(tmp_path / "cache", s.generation_fingerprint()).path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 7 and all(line.startswith('{"key": ') and line.endswith("}") for line in lines)
    w = CountingWriter()
    r = generate_questions(_chunks(10), s, lambda _: w, show_progress=False)
    assert r.stats.cache_hits == 7 and w.requests_sent == 3 and len(r.questions) == 10


def test_answers_are_in_the_file_at_once_and_fsynced_in_groups(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    with GenerationCache(tmp_path, {"x": 1}) as cache:
        for i in range(SYNC_EVERY_ANSWERS * 2 + 3):
            cache.add(f"段{i}", f"问{i}？")
            # Another reader (a rerun after kill -9) sees every answer added so far.
            assert len(GenerationCache(tmp_path, {"x": 1})) == i + 1
        assert len(synced) == 2
    assert len(synced) == 3  # the last three, on close


class ReseedingWriter(BaseWriter):
    """Answers chunk 1 only under seed 44; counts what a GGUF model load would cost."""

    name = "reseeding"

    def __init__(self, seed, log):
        super().__init__()
        self.seed = seed
        self.log = log

    def reseed(self, seed):
        self.seed = seed

    def complete(self, prompts, on_progress=None, on_answer=None):
        self.log.append(("complete", self.seed, len(prompts)))
        if self.log.count("down"):
            raise ConnectionError("LLM went away")
        self.requests_sent += len(prompts)
        topics = [re.search(r"内容第\d+段", p).group(0) for p in prompts]
        return [f"{t}讲了什么？" if t != "内容第1段" or self.seed == 44 else "" for t in topics]

    def close(self):
        self.log.append("close")


def test_one_writer_serves_every_retry_round_and_is_closed_before_returning(tmp_path):
    log = []

    def factory(settings):
        log.append(("make", settings.seed))
        return ReseedingWriter(settings.seed, log)

    r = generate_questions(_chunks(4), _settings(tmp_path), factory, show_progress=False)
    assert log == [("make", 42), ("complete", 42, 4), ("complete", 43, 1), ("complete", 44, 1), "close"]
    assert r.stats.recovered_by_retry == 1 and r.stats.requests_sent == 6 and len(r.questions) == 4

    # Closed once on an error too, before the error reaches the caller.
    from tasks.core.errors import GenerationFailedError

    log.clear()
    log.append("down")
    with pytest.raises(GenerationFailedError, match="batches in a row"):
        generate_questions(_chunks(40), _settings(tmp_path / "down", llm_concurrency=1), factory, show_progress=False)
    assert [e for e in log if e[0] == "make"] == [("make", 42)] and log[-1] == "close" and log.count("close") == 1


def test_unparseable_answers_are_dropped_counted_and_asked_again_with_another_seed(tmp_path):
    w = CountingWriter(answers={"内容第1段": "", "内容第2段": "<think>嗯</think>"})
    seeds = []
    r = generate_questions(_chunks(4), _settings(tmp_path, max_failed_share=0.5),
                           lambda s: seeds.append(s.seed) or w, show_progress=False)
    assert r.stats.questions_kept == 2
    assert seeds == [42, 43, 44]  # a writer that cannot reseed: one per attempt, each with its own seed
    assert r.stats.requests_sent == 4 + 2 + 2 == w.requests_sent
    assert r.stats.retried_chunks == 2 and r.stats.recovered_by_retry == 0
    assert r.stats.dropped == {"no question in the answer": 6}  # 2 chunks x 3 attempts
    assert r.stats.failed_chunks == 2
    assert {f["chunk_id"]: f["reason"] for f in r.stats.chunks_without_question} == {
        "段落1": "no question in the answer", "段落2": "no question in the answer"}
    assert r.stats.examples["no question in the answer"][0]["chunk_id"] in {"段落1", "段落2"}

    # No retries when a new seed cannot change the answer (greedy sampling).
    w0 = CountingWriter(answers={"内容第1段": ""})
    r0 = generate_questions(_chunks(4), _settings(tmp_path / "greedy", llm_temperature=0.0),
                            lambda _: w0, show_progress=False)
    assert w0.requests_sent == 4 and r0.stats.retried_chunks == 0


class SeededWriter(CountingWriter):
    """Answers chunk 1 with a statement under seed 42 and with a question under any other seed."""

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def complete(self, prompts, on_progress=None):
        out = super().complete(prompts, on_progress)
        return ["它讲了一件事。" if "内容第1段" in p and self.seed == 42 else a for p, a in zip(prompts, out)]


def test_a_retry_with_another_seed_recovers_the_chunk_and_reruns_are_cache_hits(tmp_path):
    s = _settings(tmp_path)
    writers = []

    def factory(settings):
        writers.append(SeededWriter(settings.seed))
        return writers[-1]

    r = generate_questions(_chunks(4), s, factory, show_progress=False)
    assert [w.seed for w in writers] == [42, 43] and [w.requests_sent for w in writers] == [4, 1]
    assert sorted(q.chunk_id for q in r.questions) == ["段落0", "段落1", "段落2", "段落3"]
    assert r.stats.recovered_by_retry == 1 and r.stats.failed_chunks == 0
    assert r.stats.dropped == {"not a question": 1}

    # The retry's answer has its own cache entry: a rerun asks nothing and keeps the same questions.
    again = generate_questions(_chunks(4), s, lambda _: pytest.fail("the LLM was asked"), show_progress=False)
    assert again.stats.requests_sent == 0 and again.stats.cache_hits == 4 + 1
    assert [(q.qid, q.question) for q in again.questions] == [(q.qid, q.question) for q in r.questions]
    # ... and attempt 0 still uses the plain fingerprint: older caches stay valid.
    assert len(GenerationCache(tmp_path / "cache", s.generation_fingerprint())) == 4


class FlakyWriter(CountingWriter):
    """Fails every batch that holds chunk 5 (a prompt the model cannot take)."""

    def complete(self, prompts, on_progress=None):
        if any("内容第5段" in p for p in prompts):
            raise ConnectionError("server answered 500")
        return super().complete(prompts, on_progress)


def test_llm_errors_are_retried_alone_recorded_and_fail_the_run_only_above_the_share(tmp_path):
    from tasks.core.errors import GenerationFailedError

    s = _settings(tmp_path, llm_concurrency=1)  # batches of 4: chunks 4-7 fail together at first
    r = generate_questions(_chunks(10), s, lambda _: FlakyWriter(), show_progress=False)
    # The retry asks the failed batch one by one: only chunk 5 fails for good.
    assert sorted(q.chunk_id for q in r.questions) == [f"段落{i}" for i in range(10) if i != 5]
    assert r.stats.failed_chunks == 1
    [failure] = r.stats.chunks_without_question
    assert failure["chunk_id"] == "段落5" and failure["source"] == "d.pdf"
    assert failure["pages"] == "6–7"  # the chunk's page range, as reports show it
    assert failure["reason"] == "LLM error: ConnectionError: server answered 500"

    # Above the share: a clear error naming the chunk, after caching every answer received.
    with pytest.raises(GenerationFailedError, match=r"1 of 10 chunks .*max_failed_share 0.05.*段落5.*500"):
        generate_questions(_chunks(10), _settings(tmp_path, llm_concurrency=1, max_failed_share=0.05),
                           lambda _: FlakyWriter(), show_progress=False)


def test_an_llm_that_is_down_stops_the_run_after_a_few_batches(tmp_path):
    from tasks.core.errors import GenerationFailedError
    from tasks.questions.generation import MAX_FAILED_BATCHES_IN_A_ROW

    w = CountingWriter(fail_after=0)
    with pytest.raises(GenerationFailedError, match="failed 3 batches in a row.*LLM went away.*cached"):
        generate_questions(_chunks(40), _settings(tmp_path, llm_concurrency=1), lambda _: w, show_progress=False)
    assert MAX_FAILED_BATCHES_IN_A_ROW == 3 and w.requests_sent == 0


def test_chunks_not_worth_a_question_are_not_asked_and_counted(tmp_path):
    toc = Chunk("目录", "d", "d.pdf", 2, "目 录\n第一章 绪论 ........ 1\n第二章 方法 ........ 5\n第三章 实验 ........ 9")
    refs = Chunk("文献", "d", "d.pdf", 9, "[1] 张三. 检索增强生成综述[J]. 计算机学报, 2023.\n"
                                          "[2] 李四. 向量数据库[M]. 北京: 科学出版社, 2021.\n[3] 王五. 语义检索[D]. 北京大学, 2020.")
    chunks = _chunks(3) + [toc, refs]
    w = CountingWriter()
    r = generate_questions(chunks, _settings(tmp_path), lambda _: w, show_progress=False)
    assert w.requests_sent == 3 and all("目 录" not in p and "[J]" not in p for p in w.prompts)
    assert r.stats.chunks_skipped == {"table of contents": 1, "references": 1}
    assert r.stats.chunks_asked == 3 and r.stats.chunks == 5 and len(r.questions) == 3
    assert r.stats.examples["table of contents"][0]["chunk_id"] == "目录"

    # Turned off, they are asked like any chunk.
    w2 = CountingWriter(answers={"目 录": "第一章在第几页？", "[J]": "张三的综述发表在哪里？"})
    r2 = generate_questions(chunks, _settings(tmp_path, skip_low_value_chunks=False), lambda _: w2, show_progress=False)
    assert w2.requests_sent == 2 and r2.stats.chunks_skipped == {} and len(r2.questions) == 5


def test_several_questions_per_chunk_are_asked_in_one_prompt_and_deduplicated(tmp_path):
    chunks = _chunks(3)
    w = CountingWriter(answers={
        "内容第0段": "1. 第0段讲了什么事？\n2. 第0段讲了什么事？\n3. 这件事发生在哪里？",  # a repeat inside the answer
        "内容第1段": "1. 这件事发生在哪里？\n2. 第1段的主角是谁？\n3. 第1段为什么重要？",  # one repeats chunk 0
        "内容第2段": "第2段讲了什么事？\n第2段的事有什么结果？\n第2段的事何时发生？\n第2段多长？",  # one too many
    })
    s = _settings(tmp_path, questions_per_chunk=3)
    r = generate_questions(chunks, s, lambda _: w, show_progress=False)
    assert w.requests_sent == 3 and all("出3个问题" in p for p in w.prompts)
    by_chunk = {}
    for q in r.questions:
        by_chunk.setdefault(q.chunk_id, []).append(q.question)
    assert by_chunk == {
        "段落0": ["第0段讲了什么事？", "这件事发生在哪里？"],
        "段落1": ["第1段的主角是谁？", "第1段为什么重要？"],
        "段落2": ["第2段讲了什么事？", "第2段的事有什么结果？", "第2段的事何时发生？"],
    }
    assert r.stats.dropped == {"duplicate of another question": 1}
    assert len({q.qid for q in r.questions}) == 7

    # Into the datasets: several queries point at the same chunk.
    from tasks.core.qa_dataset import build_dataset

    ds = build_dataset({c.chunk_id: c.text for c in chunks}, [(q.qid, q.chunk_id, q.question) for q in r.questions])
    assert len(ds.pairs()) == 7 and sum(v == ["段落2"] for v in ds.relevant_docs.values()) == 3

    # The extractive writer honours the count too (the flow's smoke backend).
    from tasks.questions.llm.extractive_backend import ExtractiveWriter

    long = [Chunk("长", "d", "d.pdf", 1, "水在一百摄氏度时沸腾。冰在零摄氏度时融化。铁在高温下会熔化成液体。")]
    rx = generate_questions(long, Settings(cache_dir=tmp_path / "x", llm_backend="extractive", questions_per_chunk=3,
                                           max_copied_chars=0), ExtractiveWriter.from_settings, show_progress=False)
    assert len(rx.questions) == 3


def test_torn_cache_line_is_ignored_and_does_not_eat_the_next(tmp_path):
    fp = {"x": 1}
    cache = GenerationCache(tmp_path, fp)
    cache.put_many({"a": "A？"})
    with open(cache.path, "ab") as f:
        f.write('{"key": "torn", "raw": "问'.encode()[:-1])  # the machine went down mid-write, mid-character
    cache2 = GenerationCache(tmp_path, fp)
    cache2.put_many({"b": "B？"})
    with cache2:
        cache2.add("c", "C？")
    cache3 = GenerationCache(tmp_path, fp)
    assert (cache3.get("a"), cache3.get("b"), cache3.get("c")) == ("A？", "B？", "C？") and len(cache3) == 3


def test_questions_that_repeat_the_prompts_example_are_dropped(tmp_path):
    from tasks.questions.generation import echoes_template
    from tasks.core.settings import DEFAULT_PROMPT_TEMPLATE as T

    chunk = "地球体育场位于东京，可以容纳五万名观众。"
    assert echoes_template("什么过程可以使植物通过光合作用将二氧化碳和水变成有机物？", T, chunk)
    assert not echoes_template("地球体育场可以容纳多少名观众？", T, chunk)
    # Words the chunk itself uses are fair game even if the template has them too.
    assert not echoes_template("植物通过什么过程把二氧化碳变成有机物？", T, "植物通过什么过程把二氧化碳变成有机物，是本段的主题。")

    w = CountingWriter(answers={"内容第1段": "植物通过什么过程把二氧化碳和水变成有机物？"})
    r = generate_questions(_chunks(3), Settings(cache_dir=tmp_path, llm_backend="openai", generation_retries=0),
                           lambda _: w, show_progress=False)
    assert r.stats.questions_kept == 2
    assert r.stats.dropped == {"repeats the prompt's example": 1}


def test_filters_drop_non_questions_copies_and_duplicates_and_count_them(tmp_path):
    chunks = _chunks(5)
    long_copy = chunks[1].text[:-1]  # a statement copied from its chunk
    w = CountingWriter(answers={
        "内容第1段": long_copy,
        "内容第2段": f"为什么{chunks[2].text[:12]}？",  # 12 copied characters
        "内容第3段": "这件事是什么？",
        "内容第4段": "这件事是什么？",  # same question as chunk 3
    })
    s = _settings(tmp_path, max_copied_chars=10, generation_retries=0)  # the retries have their own test
    r = generate_questions(chunks, s, lambda _: w, show_progress=False)
    assert [q.chunk_id for q in r.questions] == ["段落0", "段落3"]
    assert r.stats.dropped == {"not a question": 1, "copies the chunk": 1, "duplicate of another question": 1}

    assert r.stats.examples["copies the chunk"] == [{"chunk_id": "段落2", "text": f"为什么{chunks[2].text[:12]}？"}]

    # Filters apply after the cache: turning them off asks the LLM nothing and keeps more.
    made = []
    loose = _settings(tmp_path, filter_non_questions=False, max_copied_chars=0, generation_retries=0)
    r2 = generate_questions(chunks, loose, lambda _: made.append(1), show_progress=False)
    assert made == [] and len(r2.questions) == 4
    r3 = generate_questions(chunks, _settings(tmp_path, max_copied_chars=10, filter_duplicates=False, generation_retries=0),
                            lambda _: made.append(1), show_progress=False)
    assert made == [] and [q.chunk_id for q in r3.questions] == ["段落0", "段落3", "段落4"]


def test_english_questions_about_chinese_chunks_are_dropped(tmp_path):
    from tasks.questions.filters import NOT_CHINESE, drop_reason

    s = Settings()
    zh = "检索增强生成（RAG）先用BM25或向量检索找到相关段落，再让模型作答。"
    assert drop_reason("What does RAG retrieve first?", zh, s) == NOT_CHINESE
    assert drop_reason("RAG先用什么方法检索？", zh, s) is None
    assert drop_reason("BM25和向量检索有什么不同？", zh, s) is None
    # An English chunk may get an English question.
    assert drop_reason("What does BM25 rank?", "BM25 ranks documents by term frequency and length.", s) is None
    assert drop_reason("What does RAG retrieve first?", zh, Settings(filter_non_chinese=False)) is None

    w = CountingWriter(answers={"内容第1段": "What is this paragraph about?"})
    r = generate_questions(_chunks(3), _settings(tmp_path, generation_retries=0), lambda _: w, show_progress=False)
    assert r.stats.dropped == {NOT_CHINESE: 1} and len(r.questions) == 2


def test_longest_common_run():
    from tasks.questions.filters import longest_common_run

    assert longest_common_run("abcdef", "xxbcdxx") == 3
    assert longest_common_run("", "abc") == 0
    assert longest_common_run("尤金袋鼠在哪里", "尤金袋鼠分布在澳洲") == 4


def test_the_questions_stage_shows_people_s_questions_and_drops_copies_of_them(tmp_path, monkeypatch):
    import json

    import tasks.questions.llm as llm
    from tasks.questions.stage import generate

    chunks = _chunks(3)
    chunks_path = tmp_path / "chunks.jsonl"
    chunks_path.write_text("".join(json.dumps({**c.to_dict(), "split": "train"}, ensure_ascii=False) + "\n"
                                   for c in chunks), encoding="utf-8")
    example = "被告人最后被判了几年有期徒刑？"
    writer = CountingWriter(answers={"内容第1段": example})  # the model copies the example for one chunk
    monkeypatch.setattr(llm, "make_writer", lambda _settings: writer)

    record = generate.fn(chunks_path, _settings(tmp_path, generation_retries=0), tmp_path / "train.json",
                         tmp_path / "val.json", tmp_path / "questions.jsonl", [example, "罚金是多少？"])
    assert len(writer.prompts) == 3
    assert all(example in p and "罚金是多少？" in p for p in writer.prompts)
    assert record.stats["dropped"] == {"repeats the prompt's example": 1}
    assert record.n_train_queries == 2
