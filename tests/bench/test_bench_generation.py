"""bench.generation without running a model: chunk loading and the table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import generation

ROOT = Path(__file__).resolve().parents[2]


def test_table_has_a_row_per_way_with_its_ratio():
    g = generation
    rows = [
        g.Row("naive", 4, 1.0, 40.0, 30.0, 0.1, 40, 1.0, 600, 4),
        g.Row("ours", 4, 2.0, 10.0, 15.0, 0.4, 36, 3.6, 610, 4, ratio=4.0, cpu_ratio=2.0, stopped_early=1),
    ]
    table = g.result_table(rows).splitlines()
    assert len(table) == 4 and "ratio (chunks/s)" in table[0]
    assert "| ours | 4 | 2.0 | 10.0 | 0.400 | 36 | 3.60 | 610 | 4 | 4.00x | 15.0 | 2.00x | 1 |" == table[3]


@pytest.mark.skipif(
    not (ROOT.parent / "shared" / "data" / "cmrc2018_trial.json").is_file() and not os.environ.get("REQUIRE_SHARED_DATA"),
    reason="CMRC file missing (REQUIRE_SHARED_DATA=1 makes this a failure)",
)
def test_cmrc_chunks_are_distinct_and_as_many_as_asked():
    texts = generation.load_chunk_texts("cmrc", 5)
    assert len(texts) == len(set(texts)) == 5 and all(texts)
    with pytest.raises(SystemExit, match="--chunks"):
        generation.load_chunk_texts("cmrc", 10**6)
