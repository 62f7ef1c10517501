"""bench.passing_neighbour without running a model: arguments, ratios, table, results.json."""

from __future__ import annotations

import json

import pytest

from bench import passing_neighbour as b


def _row(config, gen_s, changes=(), **kw):
    values = dict(threads_at_load=1, why="2 cores, 1.0 busy with other processes", chunks=4, load_s=3.0,
                  wall_s=gen_s + 4.0, questions=4)
    values.update(kw)
    return b.Row(config=config, gen_s=gen_s, changes=list(changes), **values)


def test_arguments_and_their_checks():
    args = b.parse_args(["--n-chunks", "2"])
    assert (args.n_chunks, args.neighbours, args.neighbour_s, args.configs, args.worker) == (
        2, 1, 30.0, ["fixed", "rechecked"], None)
    assert b.parse_args(["--configs", "rechecked"]).configs == ["rechecked"]
    for bad in (["--n-chunks", "0"], ["--configs", "fast"], ["--neighbour-s", "0"], ["--recheck-s", "0"]):
        with pytest.raises(SystemExit):
            b.parse_args(bad)


def test_ratios_and_table():
    rows = b.add_ratios([_row("fixed", 120.0), _row("rechecked", 80.0, changes=[(31.0, 2)], neighbour_cores=0.95)])
    assert [r.s_per_chunk for r in rows] == [30.0, 20.0]
    assert [r.fixed_over_this for r in rows] == [1.0, 1.5]
    assert [r.threads_at_end for r in rows] == [1, 2]
    table = b.result_table(rows).splitlines()
    assert len(table) == 4 and "fixed/rechecked" in table[0]
    assert table[2].startswith("| fixed | 1 | 2 cores, 1.0 busy with other processes | none | 1 |")
    assert table[3] == ("| rechecked | 1 | 2 cores, 1.0 busy with other processes | 31 s → 2 | 2 | 3.0 | 80.0 | "
                        "84.0 | 20.00 | 1.50x | 4/4 | 0.95 |")


def test_main_runs_each_row_on_the_same_chunks_and_writes_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(b, "load_chunk_texts", lambda source, n: [f"段落{i}" for i in range(n)])
    asked = []

    def fake_row(config, chunks_file, args):
        asked.append((config, json.loads(chunks_file.read_text(encoding="utf-8")), args.neighbour_s))
        return _row(config, 100.0 if config == "fixed" else 50.0, chunks=args.n_chunks)

    assert b.main(["--n-chunks", "2", "--neighbour-s", "10", "--out", str(tmp_path)], row_runner=fake_row) == 0
    assert asked == [("fixed", ["段落0", "段落1"], 10.0), ("rechecked", ["段落0", "段落1"], 10.0)]
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert [r["fixed_over_this"] for r in results["rows"]] == [1.0, 2.0]
    assert results["neighbour_s"] == 10.0
    assert "| rechecked |" in capsys.readouterr().out
