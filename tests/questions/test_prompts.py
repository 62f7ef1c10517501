"""Prompt building and question parsing: real model outputs, and properties on any text."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tasks.questions.prompts import build_prompt, clean_line, parse_questions, strip_think
from tasks.core.settings import DEFAULT_PROMPT_TEMPLATE

# --- build_prompt ---------------------------------------------------------------


def test_build_prompt_fills_both_placeholders():
    prompt = build_prompt(DEFAULT_PROMPT_TEMPLATE, "光合作用是植物利用光能的过程。", 2)
    assert "光合作用是植物利用光能的过程。" in prompt
    assert "出2个问题" in prompt
    assert "{context_str}" not in prompt and "{num_questions_per_chunk}" not in prompt


def test_build_prompt_keeps_braces_in_the_context():
    context = 'def f(x): return {"a": x}  # {0} {context_str} {num_questions_per_chunk}'
    prompt = build_prompt("资料：{context_str}\n出{num_questions_per_chunk}题", context, 3)
    assert prompt == f"资料：{context}\n出3题"


# --- realistic outputs ------------------------------------------------------------

REAL_OUTPUTS = [
    ("植物通过什么过程把二氧化碳和水变成有机物？", ["植物通过什么过程把二氧化碳和水变成有机物？"]),
    ("问题：BCE模型的向量维度是多少？", ["BCE模型的向量维度是多少？"]),
    ("1. 细胞膜主要由哪些物质构成？", ["细胞膜主要由哪些物质构成？"]),
    ("**问题1：** 文中提到的三种排序算法分别是什么？", ["文中提到的三种排序算法分别是什么？"]),
    ("“为什么说RAG能减少幻觉？”", ["为什么说RAG能减少幻觉？"]),
    ("「什么是余弦相似度？」", ["什么是余弦相似度？"]),
    ("问题：牛顿第二定律的公式是什么？\n答案：F=ma", ["牛顿第二定律的公式是什么？"]),
    ("牛顿第二定律的公式是什么？（答案：F=ma）", ["牛顿第二定律的公式是什么？"]),
    ("牛顿第二定律的公式是什么？ 答案：F = ma。", ["牛顿第二定律的公式是什么？"]),
    ("<think>\n资料讲的是光合作用，我应该问过程。\n</think>\n\n光合作用会释放什么气体？", ["光合作用会释放什么气体？"]),
    ("<think>\n</think>\n\n问题：光合作用需要哪些原料？", ["光合作用需要哪些原料？"]),
    ("<think>用户要我出一个问题，资料讲的是", []),
    ("好的，我先想一想。</think>光合作用的产物是什么？", ["光合作用的产物是什么？"]),
    ("以下是根据参考资料出的问题：\n\n一、什么是向量数据库？", ["什么是向量数据库？"]),
    ("Question: What does the passage say about BM25?", ["What does the passage say about BM25?"]),
    ("- 文中的模型在哪一年发布？", ["文中的模型在哪一年发布？"]),
    ("1.5B参数的模型需要多少内存？", ["1.5B参数的模型需要多少内存？"]),
    ("“语义检索”和“关键词检索”有什么不同？", ["“语义检索”和“关键词检索”有什么不同？"]),
    ("《红楼梦》的作者是谁？", ["《红楼梦》的作者是谁？"]),
    # No question mark anywhere: the first sentence-like line, not the intro.
    ("好的：\n植物通过什么过程制造有机物", ["植物通过什么过程制造有机物"]),
    ("", []),
    ("   \n\n  ", []),
    ("？", []),
    ("答案：F=ma", []),
]


@pytest.mark.parametrize("raw,expected", REAL_OUTPUTS)
def test_parse_real_outputs(raw, expected):
    assert parse_questions(raw, 1) == expected


def test_several_numbered_questions_in_order_without_duplicates():
    raw = (
        "以下是3个问题：\n"
        "1. 什么是嵌入模型？\n"
        "2. 嵌入模型如何微调？\n"
        "3. 什么是嵌入模型？\n"
        "4. 微调需要哪些数据？"
    )
    assert parse_questions(raw, 3) == ["什么是嵌入模型？", "嵌入模型如何微调？", "微调需要哪些数据？"]
    assert parse_questions(raw, 1) == ["什么是嵌入模型？"]
    assert parse_questions(raw, 0) == []


def test_question_lines_win_over_other_lines():
    raw = "根据资料，可以出如下问题。\n(1) 向量检索使用什么距离？\n这个问题考查对资料的理解。"
    assert parse_questions(raw, 2) == ["向量检索使用什么距离？"]


def test_exclude_drops_the_prompt_example():
    example_question = "植物通过什么过程把二氧化碳和水变成有机物？"
    raw = f"问题：{example_question}\n问题：文中的模型有多少层？"
    assert parse_questions(raw, 1, exclude=[example_question]) == ["文中的模型有多少层？"]
    assert parse_questions(example_question, 1, exclude=[example_question]) == []


def test_strip_think_variants():
    assert strip_think("a<think>x</think>b") == "a\nb"
    assert strip_think("<think>never closed") == ""
    assert strip_think("reasoning</think>answer") == "answer"
    # A block is replaced by a line break, so removing it cannot glue a new tag together.
    assert strip_think("<thi<think></think>nk>x") == "<thi\nnk>x"


def test_clean_line_examples():
    assert clean_line('2、问题：“细胞膜由什么构成？”（答案：磷脂双分子层）') == "细胞膜由什么构成？"
    assert clean_line("Q3: 什么是BM25?") == "什么是BM25?"
    assert clean_line("## 问题") == "问题"
    assert clean_line("请给出答案：X是什么？") == "请给出答案：X是什么？"


# --- properties ---------------------------------------------------------------------

LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"

# Fragments that model output is made of, so that random text hits the parser's rules.
FRAGMENTS = st.sampled_from(
    ["<think>", "</think>", "问题：", "答案：", "1. ", "（1）", "一、", "Q1:", "- ", "**", "“", "”",
     "「", "」", '"', "'", "？", "?", "（", "）", "\n", " ", "。", "：", "【问题】", "#"]
)
MESSY_TEXT = st.lists(st.one_of(st.text(max_size=8), FRAGMENTS), max_size=30).map("".join)

# A question as a model would write it: words, then a question mark.
QUESTION = st.builds(
    lambda body, mark: body + mark,
    st.text(
        alphabet=st.sampled_from("植物光合作用二氧化碳水有机物模型向量检索什么为何多少哪些ABCxyz0123"),
        min_size=2,
        max_size=30,
    ),
    st.sampled_from(["？", "?"]),
)


@settings(max_examples=400)
@given(raw=st.one_of(st.text(), MESSY_TEXT), n=st.integers(min_value=0, max_value=5))
@example(raw="<thi<think></think>nk>问题？", n=1)
@example(raw="1.\n2.\n", n=3)
def test_never_raises_and_output_is_clean(raw, n):
    questions = parse_questions(raw, n)
    assert isinstance(questions, list)
    assert len(questions) <= max(n, 0)
    for q in questions:
        assert q and q == q.strip()
        assert not any(ch in q for ch in LINE_BREAKS)
        assert "<think>" not in q and "</think>" not in q


@settings(max_examples=400)
@given(raw=st.one_of(st.text(), MESSY_TEXT), n=st.integers(min_value=1, max_value=5))
def test_idempotent_on_own_output(raw, n):
    questions = parse_questions(raw, n)
    assert parse_questions("\n".join(questions), n) == questions


WRAPPERS = [
    "{q}",
    "1. {q}",
    "2、{q}",
    "(3) {q}",
    "（4）{q}",
    "一、{q}",
    "Q1: {q}",
    "- {q}",
    "* {q}",
    "• {q}",
    "问题：{q}",
    "问题1：{q}",
    "Question: {q}",
    "**问题：** {q}",
    "**{q}**",
    "“{q}”",
    "「{q}」",
    '"{q}"',
    "1. 问题：“{q}”",
    "{q}（答案：资料第二段）",
    "{q} 答案：光合作用。",
    "<think>先读一遍资料。</think>\n{q}",
    "好的，以下是问题：\n\n{q}",
    "  {q}  ",
]


@settings(max_examples=300)
@given(q=QUESTION, wrapper=st.sampled_from(WRAPPERS))
def test_wrapping_a_question_returns_it(q, wrapper):
    assert parse_questions(wrapper.format(q=q), 1) == [q]


def test_people_s_questions_go_into_the_default_prompt_as_instructions_before_the_material():
    from tasks.core.settings import DEFAULT_PROMPT_TEMPLATE as T
    from tasks.questions.prompts import EXAMPLES_HEADER, with_examples

    shown = with_examples(T, ["被告人犯什么罪？", " ", "判了几年？"])
    assert shown.count("- ") == 2 and "- 被告人犯什么罪？\n- 判了几年？" in shown
    # After the format example, before the material the questions are about.
    assert shown.index("示例问题") < shown.index(EXAMPLES_HEADER) < shown.index("参考资料：\n") < shown.index("{context_str}")
    prompt = build_prompt(shown, "本院认为，被告人张某犯盗窃罪。", 1)
    assert "本院认为" in prompt and "被告人犯什么罪？" in prompt
    assert with_examples(T, []) == T  # no examples: the same template, so the same cache keys


def test_a_template_can_place_the_examples_itself_and_loses_the_placeholder_without_them():
    from tasks.questions.prompts import with_examples

    template = "{examples_str}\n资料：{context_str}\n出{num_questions_per_chunk}题"
    assert with_examples(template, ["谁？"]).startswith("用户平时这样提问")
    assert with_examples(template, []) == "\n资料：{context_str}\n出{num_questions_per_chunk}题"
