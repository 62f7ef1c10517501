"""The gguf backend's batching: batch planning, early stop, the shared prompt prefix.

The prefix tests use the real tokenizer of the bundled GGUF (a vocabulary-only load,
well under a second) and one short real generation; they skip when the GGUF or
llama-cpp-python is missing, unless REQUIRE_BUNDLED_LLM=1 makes that a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.questions.llm.base import Sampling
from tasks.questions.llm.batched_llama import QuestionStop, plan_batch
from tasks.questions.llm.chat_tokens import shared_prefix_text, split_after_prefix
from tasks.questions.prompts import build_prompt, parse_questions
from tasks.core.settings import DEFAULT_PROMPT_TEMPLATE, Settings

ROOT = Path(__file__).resolve().parents[2]
GGUF = ROOT / "models" / "llm" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
CMRC = ROOT.parent / "shared" / "data" / "cmrc2018_trial.json"


def _llama_cpp_loads() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except Exception:
        return False
    return True


def _gguf_available() -> bool:
    """The GGUF is there, or its pinned parts are installed so the first use assembles it."""
    from tasks.questions.llm.bundled import bundled_part_paths

    try:
        return GGUF.is_file() or bool(bundled_part_paths())
    except Exception:
        return False


needs_gguf = pytest.mark.skipif(
    not (_gguf_available() and _llama_cpp_loads()) and not os.environ.get("REQUIRE_BUNDLED_LLM"),
    reason=f"{GGUF.name} or llama-cpp-python is missing (REQUIRE_BUNDLED_LLM=1 makes this a failure)",
)


# --- batch planning -----------------------------------------------------------------------


def test_plan_batch_puts_writing_sequences_first_and_fills_with_prompts():
    assert plan_batch([1, 0, 1, 0], [0, 300, 0, 300], 512) == ([1, 0, 1, 0], [0, 300, 0, 210])
    assert plan_batch([0, 0], [100, 50], 512) == ([0, 0], [100, 50])
    assert plan_batch([1, 1], [0, 0], 2) == ([1, 1], [0, 0])


def test_plan_batch_refuses_a_batch_smaller_than_the_writers():
    with pytest.raises(ValueError, match="smaller than"):
        plan_batch([1, 1, 1], [0, 0, 0], 2)


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 900)), min_size=1, max_size=16),
    st.integers(16, 1024),
)
def test_plan_batch_never_exceeds_the_budget_and_never_starves_a_writer(slots, n_batch):
    writing = [int(w) for w, _ in slots]
    pending = [0 if w else p for w, p in slots]
    take_w, take_p = plan_batch(writing, pending, n_batch)
    assert take_w == writing
    assert sum(take_w) + sum(take_p) <= n_batch
    assert all(0 <= t <= p for t, p in zip(take_p, pending))
    # Prompts are filled in order: a later one gets tokens only if every earlier one got all of its.
    for i, t in enumerate(take_p):
        if t:
            assert all(take_p[j] == pending[j] for j in range(i))
    # Nothing is left idle while prompt tokens wait.
    assert sum(take_w) + sum(take_p) == min(n_batch, sum(writing) + sum(pending))


# --- early stop ------------------------------------------------------------------------------


def test_question_stop_waits_for_the_newline_after_the_nth_question():
    one = QuestionStop(1)
    assert not one("以下是根据资料提出的问题：\n")  # an intro line is not a question
    assert not one("植物靠什么生长？")  # the line may go on (a second clause, a closing quote)
    assert one("植物靠什么生长？\n")
    assert one("Intro:\nWhat is it?\nmore")
    two = QuestionStop(2)
    assert not two("1. 甲是什么？\n")
    assert two("1. 甲是什么？\n2. 乙是什么？\n")


def test_question_stop_zero_never_stops():
    assert not QuestionStop(0)("甲？\n乙？\n")


# --- the shared prefix, without a model ----------------------------------------------------


def _chat(message: str) -> str:
    return f"<|im_start|>user\n{message}<|im_end|>\n<|im_start|>assistant\n"


def test_shared_prefix_ends_after_the_last_newline_before_the_chunk():
    prefix = shared_prefix_text(_chat, DEFAULT_PROMPT_TEMPLATE, 1)
    assert prefix.endswith("---------------------\n")
    assert "{context_str}" not in prefix and "出1个问题" in prefix
    for chunk in ["水在100摄氏度沸腾。", "{context_str} 出{num_questions_per_chunk}题"]:
        assert _chat(build_prompt(DEFAULT_PROMPT_TEMPLATE, chunk, 1)).startswith(prefix)


def test_shared_prefix_is_empty_when_no_newline_precedes_the_chunk():
    assert shared_prefix_text(lambda m: m, "资料：{context_str}，出{num_questions_per_chunk}题", 1) == ""
    # A template that rewrites the message: nothing can be shared safely.
    assert shared_prefix_text(lambda m: m.lower(), "X\n{context_str}{num_questions_per_chunk}", 1) == ""


def test_split_after_prefix():
    assert split_after_prefix([1, 2, 3], [1, 2]) == [3]
    assert split_after_prefix([1, 2], [1, 2]) is None  # nothing left to write a logit from
    assert split_after_prefix([1, 3, 3], [1, 2]) is None
    assert split_after_prefix([1, 2, 3], []) is None


# --- the real tokenizer --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from tasks.questions.llm.chat_tokens import ChatTokenizer

    from tasks.questions.llm.bundled import bundled_gguf_path

    # On a fresh checkout nothing has assembled the GGUF yet: this does, once.
    tok = ChatTokenizer.load(bundled_gguf_path(ROOT / "models"))
    yield tok
    tok.close()


def _real_chunks(n: int = 40) -> list[str]:
    texts = [
        "Transformer模型由编码器和解码器两部分组成，其核心是自注意力机制。",
        "1998年，该公司在深圳成立。\n它的主要产品包括：路由器、交换机。",
        "   前面有空格的段落。",
        "「引号开头」的段落，和English mixed 文本 123。",
        "— 破折号开头",
        "Ⅱ. 罗马数字开头的标题",
    ]
    if CMRC.is_file():
        data = json.loads(CMRC.read_text(encoding="utf-8"))
        texts += [p["context"][:400] for e in data["data"] for p in e["paragraphs"]][:n]
    return texts


@needs_gguf
def test_render_is_the_qwen_chat_template(tokenizer):
    text = tokenizer.render("你好")
    assert text == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    )
    tokens = tokenizer.tokenize(text)
    assert tokens[0] == 151644 and tokenizer.token_text(tokens[0]) == "<|im_start|>"  # parsed as one special token
    assert tokenizer.is_end(151645)  # <|im_end|> ends the answer


@needs_gguf
def test_prefix_plus_rest_is_the_whole_prompt_for_real_chunks(tokenizer):
    for n_questions in (1, 3):
        prefix_text = shared_prefix_text(tokenizer.render, DEFAULT_PROMPT_TEMPLATE, n_questions)
        prefix = tokenizer.tokenize(prefix_text)
        assert len(prefix) > 100  # system message, instructions and example are shared
        for chunk in _real_chunks():
            whole = tokenizer.tokenize(tokenizer.render(build_prompt(DEFAULT_PROMPT_TEMPLATE, chunk, n_questions)))
            rest = split_after_prefix(whole, prefix)
            assert rest is not None, f"prefix not a token boundary for chunk {chunk[:20]!r}"
            assert prefix + rest == whole
            assert rest == tokenizer.tokenize(tokenizer.render(build_prompt(DEFAULT_PROMPT_TEMPLATE, chunk, n_questions))[len(prefix_text):])


@needs_gguf
def test_a_chunk_that_merges_with_the_prefix_is_detected(tokenizer):
    # "---\n" + "\n..." tokenizes as "---\n\n" + "...": the cut is no token boundary.
    prefix = tokenizer.tokenize(shared_prefix_text(tokenizer.render, DEFAULT_PROMPT_TEMPLATE, 1))
    whole = tokenizer.tokenize(tokenizer.render(build_prompt(DEFAULT_PROMPT_TEMPLATE, "\n换行开头的段落", 1)))
    assert split_after_prefix(whole, prefix) is None


# --- the writer ---------------------------------------------------------------------------------


def test_writer_takes_its_knobs_from_the_settings(tmp_path):
    from tasks.questions.llm.gguf_backend import GGUFWriter

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    s = Settings(llm_backend="gguf", llm_model=str(model), llm_parallel=3, llm_batch_tokens=256,
                 questions_per_chunk=2, llm_threads=1, seed=7, llm_temperature=0.0)
    w = GGUFWriter.from_settings(s)
    assert (w.n_parallel, w.n_batch, w.questions_per_chunk, w.n_threads) == (3, 256, 2, 1)
    assert w.prefix_template == s.prompt_template and w.stop_early
    assert w.sampling == Sampling(temperature=0.0, top_p=s.llm_top_p, max_tokens=s.llm_max_tokens, seed=7)
    assert w.passive_wait and w.thread_choice is None  # threads are chosen when the model loads, from the CPU load then
    off = GGUFWriter.from_settings(s.model_copy(update={"llm_prefix_cache": False, "llm_stop_early": False,
                                                        "llm_passive_wait": False, "llm_threads": None}))
    assert off.prefix_template is None and not off.stop_early and not off.passive_wait and off.n_threads is None
    assert w.complete([]) == [] and w.engine_stats is None  # nothing loaded for nothing to do


def test_speed_knobs_stay_out_of_the_generation_cache_key():
    base = Settings().generation_fingerprint()
    fast = Settings(llm_parallel=16, llm_batch_tokens=1024, llm_prefix_cache=False, llm_stop_early=False,
                    llm_threads=1, llm_passive_wait=False)
    assert fast.generation_fingerprint() == base


@pytest.mark.slow
@needs_gguf
def test_real_batched_generation_writes_questions(caplog):
    from tasks.questions.llm.gguf_backend import GGUFWriter

    chunks = [
        "光合作用是植物利用光能，把二氧化碳和水合成有机物并释放氧气的过程，主要在叶绿体中进行。",
        "长城始建于春秋战国时期，秦朝统一后连接成万里长城，明朝时大规模重修，总长度超过两万公里。",
        "\n大熊猫主要生活在中国四川、陕西和甘肃的山区，以竹子为主要食物，是中国的国宝。",  # no prefix match
    ]
    # The prompts must ask for as many questions as the writer's shared prefix says.
    settings = Settings(llm_backend="gguf", llm_parallel=2, llm_threads=1, llm_max_tokens=48, questions_per_chunk=1)
    done, answers = [], {}
    with caplog.at_level("INFO", logger="tasks.questions.llm.gguf_backend"), GGUFWriter.from_settings(settings) as writer:
        raws = writer.complete([build_prompt(settings.prompt_template, c, 1) for c in chunks], on_progress=done.append,
                               on_answer=answers.__setitem__)
        stats = writer.engine_stats
    assert len(raws) == 3 and done == [1, 1, 1] and answers == dict(enumerate(raws))
    assert any(r.getMessage().startswith("llm: 1 thread (llm_threads=1 set), ") for r in caplog.records)
    assert all(parse_questions(r, 1) for r in raws), raws
    assert stats.prompts == 3 and stats.prefix_hits == 2  # the chunk starting with a newline ran whole
    assert 0 < stats.output_tokens <= 3 * 48
    assert writer.requests_sent == 3


@pytest.mark.slow
@needs_gguf
def test_the_thread_count_changes_while_the_real_model_generates(caplog):
    """The tuner's change reaches llama.cpp's running context, between two decode calls."""
    from tasks.questions.llm.cpu_threads import ThreadTuner
    from tasks.questions.llm.gguf_backend import GGUFWriter

    writer = GGUFWriter(GGUF, n_parallel=2, sampling=Sampling(max_tokens=16), prefix_template=None)
    with writer:
        engine = writer.load()
        assert writer.thread_tuner is not None  # no llm_threads: the count is looked at again
        # The load as the tuner sees it: a neighbour on one core, then gone.
        loads = iter([1.5, 0.0])
        seen = []
        engine.set_threads(2)
        assert engine.threads() == 2
        writer.thread_tuner = ThreadTuner(2, cpus=2, every_s=0.0,
                                          set_threads=lambda n: (engine.set_threads(n), seen.append(engine.threads())),
                                          busy_elsewhere=lambda: next(loads, 0.0))
        with caplog.at_level("INFO", logger="tasks.questions.llm.cpu_threads"):
            raws = writer.complete([build_prompt(DEFAULT_PROMPT_TEMPLATE, "冰在零度融化，水在一百摄氏度沸腾。", 1)])
        assert raws[0]
        threads_at_end = engine.threads()
    assert seen == [1, 2] and threads_at_end == 2  # llama.cpp's own count, read back from the context
    assert [r.getMessage().split(";")[0] for r in caplog.records if "now" in r.getMessage()] == [
        "llm: 1 thread now (was 2", "llm: 2 threads now (was 1"]
    # Without a recheck, or with llm_threads set, the count stays as chosen at load.
    assert GGUFWriter(GGUF, recheck_threads_s=None).thread_tuner is None
