"""Chunks not worth a question: each kind caught, and real prose left alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.chunks.quality import (
    BOILERPLATE,
    MOSTLY_NUMBERS,
    REFERENCES,
    TABLE_OF_CONTENTS,
    TOO_LITTLE_TEXT,
    skip_reason,
)

REPO = Path(__file__).resolve().parents[2]
CMRC_JSON = REPO.parent / "shared" / "data" / "cmrc2018_trial.json"

SKIPPED = [
    # Tables of contents: dot leaders and page numbers, or a heading and numbered sections.
    ("目 录\n摘要 ........ I\n第一章 绪论 ........ 1\n1.1 研究背景 ........ 2\n1.2 研究内容 ........ 4", TABLE_OF_CONTENTS),
    ("第一章 引言……………… 1 第二章 相关工作……………… 7 第三章 方法……………… 15 第四章 实验……………… 28", TABLE_OF_CONTENTS),
    ("Contents 1 Introduction ..... 1 2 Related Work ..... 5 3 Method ..... 9", TABLE_OF_CONTENTS),
    ("目录 第一章 总则 3 第二章 组织机构 5 第三章 职责 8 第四章 附则 12", TABLE_OF_CONTENTS),
    # Reference lists: GB/T 7714 types, numbered entries with years, English citations.
    ("[1] 张三. 检索增强生成综述[J]. 计算机学报, 2023, 46(1): 1-20.\n[2] 李四. 向量数据库[M]. 北京: 科学出版社, 2021."
     "\n[3] 王五. 语义检索研究[D]. 北京: 北京大学, 2020.", REFERENCES),
    ("参考文献\n1. Devlin J, Chang M W. BERT. NAACL, 2019.\n2. Reimers N. Sentence-BERT. EMNLP, 2019.", REFERENCES),
    ("Karpukhin V, et al. Dense passage retrieval. EMNLP 2020, pp. 6769-6781. Lewis P, et al. RAG. NeurIPS 2020. "
     "Izacard G, et al. Atlas. arXiv: 2208.03299, 2022.", REFERENCES),
    # Cover pages, declarations, copyright pages.
    ("分类号：TP391 密级：公开 UDC：004 学号：2019001 硕士学位论文 基于检索增强的问答系统研究 指导教师：张三 教授 "
     "申请学位：工学硕士 培养单位：计算机学院 论文提交日期：2023年5月", BOILERPLATE),
    ("学位论文原创性声明 本人郑重声明：所呈交的论文是本人在导师指导下独立进行研究所取得的成果。作者签名： 日期： 年 月 日",
     BOILERPLATE),
    ("图书在版编目（CIP）数据 深度学习入门 / 张三著. 北京：科学出版社 ISBN 978-7-03-000000-0 责任编辑：李四 "
     "开本：787×1092 1/16 印张：20 版次：2020年1月第1版 定价：69.00元 版权所有，侵权必究", BOILERPLATE),
    # Figures and almost nothing.
    ("年份 营业收入 营业成本 净利润 增长率\n2019 12.5 13.2 14.1 15.0\n2020 13.1 13.9 14.8 15.6\n2021 13.8 14.5 15.2 16.3\n2022 14.2 15.0 15.9 17.1", MOSTLY_NUMBERS),
    ("表 3-2 　 1 　 2 　 3", TOO_LITTLE_TEXT),
    ("12.5 13.2 14.1 15.0 13.1 13.9", TOO_LITTLE_TEXT),
    ("", TOO_LITTLE_TEXT),
]

KEPT = [
    "尤金袋鼠分布在澳洲南部岛屿及西岸地区，以小群生活，夜间出来觅食。",
    # Prose with dates, amounts and citations is still prose.
    "2023年公司营业收入为12,345,678元，同比增长12.5%，其中海外业务占比达到35%，主要来自东南亚市场。",
    "研究[1]表明，检索增强生成能减少幻觉；文献[2]在2021年提出了改进方法，并在三个数据集上验证了效果。",
    "该论文的指导教师是张三教授，答辩委员会由五名专家组成，论文获得了优秀评价。",
    "本书第三章介绍向量检索的原理，第四章讨论索引的构建方法，第五章给出实验结果。",
    "BM25 ranks documents by term frequency and document length; dense retrieval uses embeddings instead.",
]


@pytest.mark.parametrize("text,reason", SKIPPED)
def test_chunks_not_worth_a_question_are_recognised(text, reason):
    assert skip_reason(text) == reason


@pytest.mark.parametrize("text", KEPT)
def test_prose_is_asked_about(text):
    assert skip_reason(text) is None


def test_no_wikipedia_chunk_of_cmrc_is_skipped():
    """718 chunks of real Chinese prose (CMRC 2018 trial): none may be taken for boilerplate."""
    if not CMRC_JSON.is_file():
        if os.environ.get("REQUIRE_SHARED_DATA"):
            pytest.fail(f"REQUIRE_SHARED_DATA is set but {CMRC_JSON} does not exist")
        pytest.skip(f"no {CMRC_JSON}")
    import json

    contexts = [p["context"] for e in json.loads(CMRC_JSON.read_text(encoding="utf-8"))["data"] for p in e["paragraphs"]]
    assert len(contexts) > 200
    flagged = [(skip_reason(c), c[:60]) for c in contexts if skip_reason(c)]
    assert flagged == []
