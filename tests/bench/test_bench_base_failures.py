"""The miss analysis of bench.base_failures, on hand-made rankings."""

from __future__ import annotations

from bench import base_failures as bench
from tasks.core.qa_dataset import QADataset

CORPUS = {"fish0": "黄鳍紫鱼，又称黄鳍姬鲷。", "fish1": "体长可达50公分。", "park0": "乍都节公园位于曼谷。"}
CHUNK_DOC = {"fish0": "fish", "fish1": "fish", "park0": "park"}
TITLES = {"fish": "黄鳍紫鱼（鱼类）", "park": "乍都节公园"}


def _dataset(questions: dict[str, tuple[str, str]]) -> QADataset:
    return QADataset(
        queries={q: text for q, (text, _) in questions.items()},
        corpus=CORPUS,
        relevant_docs={q: [rel] for q, (_, rel) in questions.items()},
    )


def test_misses_are_split_into_siblings_and_subjects_the_chunk_lacks() -> None:
    ds = _dataset({
        "hit": ("黄鳍紫鱼又称什么？", "fish0"),
        "sibling": ("黄鳍紫鱼体长多少？", "fish1"),  # names the subject, its chunk does not
        "other_doc": ("它有多长？", "fish1"),
        "park": ("乍都节公园在哪里？", "park0"),
    })
    top1 = {"hit": "fish0", "sibling": "fish0", "other_doc": "park0", "park": "park0"}
    m = bench.count_misses(ds, top1, CHUNK_DOC, TITLES)
    assert m == bench.Misses(questions=4, missed=2, lost_to_sibling=1, name_subject_absent=1,
                             name_subject_absent_missed=1)


def test_a_found_subject_question_is_counted_but_not_missed() -> None:
    ds = _dataset({"sibling": ("黄鳍紫鱼体长多少？", "fish1")})
    m = bench.count_misses(ds, {"sibling": "fish1"}, CHUNK_DOC, TITLES)
    assert (m.missed, m.name_subject_absent, m.name_subject_absent_missed) == (0, 1, 0)
