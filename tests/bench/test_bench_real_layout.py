"""bench.real_layout and data/make_layout_pdfs.py: clean and real-layout PDFs of the same passages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import real_layout
from bench.harness import CMRC_DATA
from tasks.core.records import Chunk

REPO = Path(__file__).resolve().parents[2]
FURNITURE = {"a.pdf": {"header": ["某法院", "（2019）民初1号"], "watermark": "仅供参考",
                       "footnote": "① 注释。", "table_cells": ["案件受理费", "鉴定费"]}}


def test_ndcg_counts_the_first_relevant_rank_and_zero_without_one() -> None:
    assert real_layout.ndcg_at_10(["a", "b"], {"a"}) == 1.0
    assert real_layout.ndcg_at_10(["b", "a"], {"a"}) == pytest.approx(1 / 1.5849625)
    assert real_layout.ndcg_at_10(["b"], set()) == 0.0


def test_furniture_is_counted_in_running_text_not_in_its_own_table_chunk() -> None:
    chunks = [
        Chunk("1", "d", "a.pdf", 1, "（2019）民初1号\n本院认为，仅供参考。"),
        Chunk("2", "d", "a.pdf", 1, "| 项目 | 金额 |\n|---|---|\n| 案件受理费 | 1 |\n| 鉴定费 | 2 |"),
        Chunk("3", "d", "a.pdf", 1, "案件受理费 1 鉴定费 2"),
        Chunk("4", "d", "a.pdf", 2, "① 注释。"),
    ]
    assert real_layout.furniture_counts(chunks, FURNITURE) == {
        "case number": 1, "watermark": 1, "table cells as text": 1, "footnote in running text": 0}


@pytest.mark.skipif(not CMRC_DATA.is_file(), reason=f"{CMRC_DATA} is not here")
def test_real_layout_pdfs_read_back_without_furniture(tmp_path: Path, capsys) -> None:
    sys.path.insert(0, str(REPO / "data"))
    import make_human_questions
    import make_layout_pdfs

    try:
        font = make_layout_pdfs.clean.find_font(None)
    except SystemExit:
        pytest.skip("no CJK font (apt-get install fonts-wqy-microhei)")
    real, clean = tmp_path / "real", tmp_path / "clean"
    # File 1 with margin line numbers, file 2 in two columns.
    make_layout_pdfs.build(CMRC_DATA, real, 2, 3, font, {1}, {2})
    assert make_layout_pdfs.main([str(CMRC_DATA), "--clean", "--n-docs", "2", "--out-dir", str(clean)]) == 0
    for folder in (clean, real):
        make_human_questions.main([str(CMRC_DATA), "--sources", str(folder / "sources.json"),
                                   "--out", str(folder / "human_questions.json"), "--pad", "12"])
    out = tmp_path / "results.json"
    assert real_layout.main(["--pdf-dir", str(clean), "--pdf-dir", str(real), "--json", str(out)]) == 0
    clean_row, real_row = json.loads(out.read_text(encoding="utf-8"))["folders"]
    assert set(real_row["furniture"].values()) == {0}
    assert real_row["inside one chunk"][0] >= clean_row["inside one chunk"][0] - 1
    assert "| chunks |" in capsys.readouterr().out
