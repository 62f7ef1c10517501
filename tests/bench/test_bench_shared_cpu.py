"""bench.shared_cpu_generation without running a model: arguments, rows' settings, ratios, table, results.json."""

from __future__ import annotations

import json

import pytest

from bench import shared_cpu_generation as b


def _row(settings, neighbours, gen_s, **kw):
    values = dict(threads=2, why="", wait="passive wait", chunks=4, load_s=3.0, gen_s=gen_s, cpu_s=1.0, questions=4)
    values.update(kw)
    return b.Row(settings=settings, neighbours=neighbours, **values)


def test_arguments_and_their_checks():
    args = b.parse_args(["--n-chunks", "2"])
    assert (args.n_chunks, args.neighbours, args.neighbour_kind, args.configs, args.worker) == (2, 1, "python", ["today", "new"], None)
    assert b.parse_args(["--configs", "new"]).configs == ["new"]
    for bad in (["--n-chunks", "0"], ["--configs", "fast"], ["--neighbour-kind", "rust"]):
        with pytest.raises(SystemExit):
            b.parse_args(bad)


def test_today_is_all_cores_and_openmp_wait_new_is_the_default_and_both_ask_the_same(tmp_path):
    from tasks.questions.llm.cpu_threads import all_cores

    today, new = b.config_settings("today", tmp_path), b.config_settings("new", tmp_path)
    assert (today.llm_threads, today.llm_passive_wait) == (all_cores(), False)
    assert (new.llm_threads, new.llm_passive_wait) == (None, True)
    assert today.cache_dir == new.cache_dir == tmp_path  # a temporary cache: every row generates
    assert today.generation_fingerprint() == new.generation_fingerprint()
    assert today.generation_retries == 0 and not today.skip_low_value_chunks


def test_ratios_and_table():
    rows = b.add_ratios([
        _row("today", 0, 12.0, threads=2, wait="OpenMP default wait (llm_passive_wait off)"),
        _row("today", 1, 60.0, threads=2, wait="OpenMP default wait (llm_passive_wait off)", neighbour_cores=0.6),
        _row("new", 0, 12.0),
        _row("new", 1, 24.0, threads=1, neighbour_cores=0.98, why="2 cores, 1.0 busy with other processes"),
    ])
    assert [r.s_per_chunk for r in rows] == [3.0, 15.0, 3.0, 6.0]
    assert [r.slowdown for r in rows] == [1.0, 5.0, 1.0, 2.0]
    assert [r.today_over_new for r in rows] == [1.0, 1.0, 1.0, 2.5]
    table = b.result_table(rows).splitlines()
    assert len(table) == 6 and "slowdown" in table[0] and "today/new" in table[0]
    assert table[5] == ("| new | 1 | 1 | 2 cores, 1.0 busy with other processes | passive wait | 3.0 | 24.0 | 6.00 | "
                        "2.00x | 2.50x | 1.0 | 0.98 |")
    assert table[3].endswith("| 0.60 |") and table[4].endswith("| 1.0 |  |")


def test_main_runs_each_config_alone_and_beside_the_neighbours_and_writes_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(b, "load_chunk_texts", lambda source, n: [f"段落{i}" for i in range(n)])
    asked = []

    def fake_row(config, n, chunks_file, args):
        asked.append((config, n, json.loads(chunks_file.read_text(encoding="utf-8"))))
        return _row(config, n, 10.0 * (1 + n), chunks=args.n_chunks)

    assert b.main(["--n-chunks", "2", "--neighbours", "2", "--out", str(tmp_path)], row_runner=fake_row) == 0
    assert [(c, n) for c, n, _ in asked] == [("today", 0), ("today", 2), ("new", 0), ("new", 2)]
    assert all(texts == ["段落0", "段落1"] for _, _, texts in asked)
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert [r["slowdown"] for r in results["rows"]] == [1.0, 3.0, 1.0, 3.0]
    assert results["n_chunks"] == 2 and results["neighbours"] == 2
    assert "| today | 2 |" in capsys.readouterr().out
    assert (tmp_path / "results.md").read_text(encoding="utf-8").startswith("| settings |")


def test_a_neighbour_is_busy_while_it_runs_and_gone_after(monkeypatch):
    import psutil

    monkeypatch.setattr(b, "WARM_UP_S", 0.1)
    with b.neighbours(1, "python") as cores:
        import time

        time.sleep(0.3)
        used = cores()
        [child] = psutil.Process().children()
    assert 0 < used <= 1.2
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    with b.neighbours(0, "python") as cores:
        assert cores() is None
