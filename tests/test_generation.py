"""Question generation through the per-chunk cache (a counting writer stands in for the LLM)."""

from __future__ import annotations

import re
from pathlib import Path

from tasks.generation import generate_questions
from tasks.generation_cache import GenerationCache
from tasks.records import Chunk
from tasks.settings import Settings


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
            topic = re.search(r"(\S{1,2}内容第\d+段)", p).group(1)
            out.append(next((a for k, a in self.answers.items() if k in p), f"1. {topic}讲的是什么事？"))
            if on_progress:
                on_progress(1)
        return out

    def close(self):
        pass


def _chunks(n: int, prefix: str = "段落") -> list[Chunk]:
    return [Chunk(f"{prefix}{i}", "d", "d.pdf", 1, f"{prefix}内容第{i}段，讲的是一件事。") for i in range(n)]


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


def test_a_crash_keeps_the_finished_batches(tmp_path):
    s = _settings(tmp_path, llm_concurrency=1)  # openai batches are 4 prompts
    try:
        generate_questions(_chunks(10), s, lambda _: CountingWriter(fail_after=6), show_progress=False)
    except ConnectionError:
        pass
    w = CountingWriter()
    r = generate_questions(_chunks(10), s, lambda _: w, show_progress=False)
    assert r.stats.cache_hits == 4 and w.requests_sent == 6


def test_unparseable_answers_are_dropped_and_counted(tmp_path):
    w = CountingWriter(answers={"内容第1段": "", "内容第2段": "<think>嗯</think>"})
    r = generate_questions(_chunks(4), _settings(tmp_path), lambda _: w, show_progress=False)
    assert r.stats.questions_kept == 2
    assert sum(r.stats.dropped.values()) == 2


def test_torn_cache_line_is_ignored_and_does_not_eat_the_next(tmp_path):
    fp = {"x": 1}
    cache = GenerationCache(tmp_path, fp)
    cache.put_many({"a": "A？"})
    with open(cache.path, "a", encoding="utf-8") as f:
        f.write('{"key": "torn", "ra')  # killed mid-write
    cache2 = GenerationCache(tmp_path, fp)
    cache2.put_many({"b": "B？"})
    cache3 = GenerationCache(tmp_path, fp)
    assert cache3.get("a") == "A？" and cache3.get("b") == "B？" and len(cache3) == 2


def test_questions_that_repeat_the_prompts_example_are_dropped(tmp_path):
    from tasks.generation import echoes_template
    from tasks.settings import DEFAULT_PROMPT_TEMPLATE as T

    chunk = "地球体育场位于东京，可以容纳五万名观众。"
    assert echoes_template("什么过程可以使植物通过光合作用将二氧化碳和水变成有机物？", T, chunk)
    assert not echoes_template("地球体育场可以容纳多少名观众？", T, chunk)
    # Words the chunk itself uses are fair game even if the template has them too.
    assert not echoes_template("植物通过什么过程把二氧化碳变成有机物？", T, "植物通过什么过程把二氧化碳变成有机物，是本段的主题。")

    w = CountingWriter(answers={"内容第1段": "植物通过什么过程把二氧化碳和水变成有机物？"})
    r = generate_questions(_chunks(3), Settings(cache_dir=tmp_path, llm_backend="openai"), lambda _: w,
                           show_progress=False)
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
    s = _settings(tmp_path, max_copied_chars=10)
    r = generate_questions(chunks, s, lambda _: w, show_progress=False)
    assert [q.chunk_id for q in r.questions] == ["段落0", "段落3"]
    assert r.stats.dropped == {"not a question": 1, "copies the chunk": 1, "duplicate of another question": 1}

    # Filters apply after the cache: turning them off asks the LLM nothing and keeps more.
    made = []
    loose = _settings(tmp_path, filter_non_questions=False, max_copied_chars=0)
    r2 = generate_questions(chunks, loose, lambda _: made.append(1), show_progress=False)
    assert made == [] and len(r2.questions) == 4


def test_longest_common_run():
    from tasks.question_filters import longest_common_run

    assert longest_common_run("abcdef", "xxbcdxx") == 3
    assert longest_common_run("", "abc") == 0
    assert longest_common_run("尤金袋鼠在哪里", "尤金袋鼠分布在澳洲") == 4
