"""The CMRC human-question benchmark (bench.cmrc_human), without an LLM.

The SQuAD reader and the answer-span → chunk mapping it builds on are tested in
tests/evaluation/test_squad.py.

The data tests read a handful of entries of the CMRC 2018 trial file beside the
repository; they are skipped when it is absent, unless REQUIRE_SHARED_DATA is set
(then its absence is a failure, so CI cannot pass by skipping them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cmrc_human as bench
from tasks.chunks.chunking import chunk_documents
from tasks.core.qa_dataset import QADataset
from tasks.core.settings import Settings
from tasks.evaluation.squad import build_documents, human_benchmark, load_squad
from tests.tiny_model import make_tiny_st_model


@pytest.fixture(scope="module")
def cmrc_passages(cmrc_json: Path) -> list:
    return load_squad(cmrc_json)


@pytest.fixture(scope="module")
def few(cmrc_passages) -> list:
    return bench.select_passages(cmrc_passages, 8)


# --- passages ----------------------------------------------------------------------------


def test_select_passages_takes_the_first_n_in_file_order(cmrc_passages) -> None:
    assert bench.select_passages(cmrc_passages, 5) == cmrc_passages[:5]
    assert bench.select_passages(cmrc_passages, None) == cmrc_passages


# --- split -----------------------------------------------------------------------------------


def test_train_and_heldout_passages_do_not_overlap(cmrc_passages) -> None:
    passages = bench.select_passages(cmrc_passages, 20)
    train, heldout = bench.split_passages(passages, 0.5, seed=42)
    train_ids, heldout_ids = {p.doc_id for p in train}, {p.doc_id for p in heldout}
    assert not train_ids & heldout_ids
    assert train_ids | heldout_ids == {p.doc_id for p in passages}
    assert len(heldout) == 10
    # The same inputs give the same split; chunks follow their passage.
    assert bench.split_passages(passages, 0.5, seed=42) == (train, heldout)
    chunks = chunk_documents(build_documents(passages), 300, 30)
    train_chunk_ids = {c.chunk_id for c in chunks if c.doc_id in train_ids}
    heldout_corpus = human_benchmark(heldout, [c for c in chunks if c.doc_id in heldout_ids]).dataset.corpus
    assert not train_chunk_ids & set(heldout_corpus)


def test_a_single_passage_cannot_be_split(cmrc_passages) -> None:
    with pytest.raises(bench.BenchInputError):
        bench.split_passages(cmrc_passages[:1], 0.5, seed=42)


# --- configs and table ------------------------------------------------------------------------


def test_configs_parse_into_validated_training_settings() -> None:
    assert bench.parse_config("learning_rate=2e-5, epochs=3,loss-scale=20") == {
        "learning_rate": "2e-5", "epochs": "3", "loss_scale": "20",
    }
    s = bench.config_settings(Settings(), bench.parse_config("learning_rate=2e-5,epochs=1,loss_scale=none"))
    assert (s.learning_rate, s.epochs, s.loss_scale) == (2e-5, 1, None)
    for bad in ("chunk_size=100", "epochs", "epochs=", "epochs=1,epochs=2"):
        with pytest.raises(bench.BenchInputError):
            bench.parse_config(bad)
    for bad in ("epochs=zero", "batch_size=1", "learning_rate=-1"):
        with pytest.raises(bench.BenchInputError):
            bench.config_settings(Settings(), bench.parse_config(bad))


def test_table_shows_change_in_points_against_base() -> None:
    base = {"cosine_ndcg@10": 0.80, "cosine_accuracy@1": 0.70, "cosine_mrr@10": 0.75}
    tuned = {"cosine_ndcg@10": 0.83, "cosine_accuracy@1": 0.65, "cosine_mrr@10": 0.75}
    rows = [bench.result_row("base", base, 0, 10, None), bench.result_row("loss_scale=20", tuned, 40, 10, base)]
    lines = bench.result_table(rows).splitlines()
    assert lines[2].startswith("| base | — | 10 | 0.8000 | 0.7000 | 0.7500 | — |")
    assert lines[3] == "| loss_scale=20 | 40 | 10 | 0.8300 | 0.6500 | 0.7500 | +3.0 | -5.0 | +0.0 |"


def test_bad_command_lines_exit_2_before_any_work(tmp_path: Path, capsys) -> None:
    assert bench.main(["--data", str(tmp_path / "missing.json")]) == 2
    data = tmp_path / "data.json"
    data.write_text('{"data": []}', encoding="utf-8")
    assert bench.main(["--data", str(data), "--config", "chunk_size=10"]) == 2
    assert bench.main(["--data", str(data), "--config", "epochs=1", "--config", "epochs=1"]) == 2
    assert bench.main(["--data", str(data), "--heldout-ratio", "1"]) == 2
    assert bench.main(["--n-passages", "1"]) == 2
    assert "error:" in capsys.readouterr().err


# --- end to end, no LLM ------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_runs_end_to_end_with_the_extractive_writer(cmrc_passages, tmp_path: Path, capsys) -> None:
    base = make_tiny_st_model(tmp_path / "tiny")
    out = tmp_path / "out"
    rc = bench.main(
        [
            "--n-passages", "6", "--heldout-ratio", "0.5",
            "--llm-backend", "extractive",
            "--cache-dir", str(tmp_path / "cache"),
            "--base-model", str(base),
            "--config", "epochs=1,batch_size=2,warmup_steps=0",
            "--out", str(out),
            "--human-train",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0
    assert "| base |" in printed and "| epochs=1,batch_size=2,warmup_steps=0 |" in printed

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    data = results["data"]
    assert (data["passages"], data["train_passages"], data["heldout_passages"]) == (6, 3, 3)
    config = "epochs=1,batch_size=2,warmup_steps=0"
    assert [r["config"] for r in results["rows"]] == ["base", config, f"human-train: {config}"]
    assert results["generation"]["requests_sent"] == data["train_chunks"]  # train chunks only
    assert results["rows"][1]["train_pairs"] == data["train_pairs"] > 0
    assert results["training"]["epochs=1,batch_size=2,warmup_steps=0"]["steps"] > 0
    assert "change_pts" in results["rows"][1]
    human = QADataset.load(out / "human_heldout_dataset.json")
    train = QADataset.load(out / "train_dataset.json")
    assert len(human.queries) == data["human_queries"] > 0
    assert not set(human.corpus) & set(train.corpus)
    # The --human-train control: human questions of the train passages, on the train chunks.
    human_train = QADataset.load(out / "human_train_dataset.json")
    assert set(human_train.corpus) == set(train.corpus)
    assert not set(human_train.queries) & set(human.queries)
    assert results["rows"][2]["train_pairs"] == len(human_train.pairs())
    assert "| config |" in (out / "results.md").read_text(encoding="utf-8")
    assert not (out / "models").exists()  # temporary unless --keep-models

    # A second run asks the LLM nothing: the per-chunk cache in --cache-dir is reused.
    assert bench.main(
        [
            "--n-passages", "6", "--llm-backend", "extractive", "--cache-dir", str(tmp_path / "cache"),
            "--base-model", str(base), "--config", "epochs=1,batch_size=2", "--out", str(tmp_path / "out2"),
            "--no-progress",
        ]
    ) == 0
    again = json.loads((tmp_path / "out2" / "results.json").read_text(encoding="utf-8"))
    assert again["generation"]["requests_sent"] == 0
    assert again["generation"]["cache_hits"] == data["train_chunks"]

    # --chunk-titles: the LLM is asked about titled chunks (new cache entries), and the
    # same questions are searched among titled chunks.
    assert bench.main(
        [
            "--n-passages", "6", "--llm-backend", "extractive", "--cache-dir", str(tmp_path / "cache"),
            "--base-model", str(base), "--config", "epochs=1,batch_size=2", "--out", str(tmp_path / "out3"),
            "--no-progress", "--chunk-titles",
        ]
    ) == 0
    titled = json.loads((tmp_path / "out3" / "results.json").read_text(encoding="utf-8"))
    assert titled["data"]["chunk_titles"] is True
    assert titled["generation"]["requests_sent"] == data["train_chunks"]
    titled_human = QADataset.load(tmp_path / "out3" / "human_heldout_dataset.json")
    assert titled_human.queries == human.queries and titled_human.relevant_docs == human.relevant_docs
    titles = {p.title for p in cmrc_passages[:6]}
    for cid, text in titled_human.corpus.items():
        head, _, body = text.partition("\n")
        assert head in titles and body == human.corpus[cid]


def test_unfiltered_rows_use_the_same_answers_with_every_filter_off(tmp_path: Path) -> None:
    from tasks.core.records import Chunk

    args = bench.build_parser().parse_args(
        ["--llm-backend", "extractive", "--cache-dir", str(tmp_path), "--generation-retries", "0",
         "--round-trip-top-k", "0", "--round-trip-top-k", "3", "--unfiltered"]
    )
    assert args.round_trip_top_k == [0, 3] and args.unfiltered
    settings = bench.base_settings(args)
    assert settings.generation_retries == 0 and settings.max_copied_chars == 15
    loose = bench.unfiltered_settings(settings)
    assert loose.generation_fingerprint() == settings.generation_fingerprint()  # the same cached answers
    assert not (loose.filter_non_questions or loose.max_copied_chars or loose.filter_non_chinese
                or loose.filter_prompt_echo or loose.filter_duplicates or loose.skip_low_value_chunks)

    from tasks.questions.llm.extractive_backend import ExtractiveWriter

    # The extractive writer copies up to 20 characters of its chunk: the filter drops it, unfiltered keeps it.
    chunks = [Chunk("c1", "d", "d", 1, "尤金袋鼠分布在澳洲南部岛屿及西岸地区以小群生活夜间出来觅食。")]
    filtered, _ = bench.synthetic_train_dataset(chunks, settings, ExtractiveWriter.from_settings, show_progress=False)
    raw, _ = bench.synthetic_train_dataset(chunks, loose, lambda _: pytest.fail("asked again"), show_progress=False)
    assert len(filtered.pairs()) == 0 and len(raw.pairs()) == 1


def test_titled_chunks_keep_their_ids_and_the_benchmark_its_relevance(few) -> None:
    chunks = chunk_documents(build_documents(few), 300, 30)
    plain = human_benchmark(few, chunks).dataset
    titled_chunks = bench.titled_chunks(chunks, few)
    titled = bench.titled_dataset(plain, titled_chunks)
    title = {p.doc_id: p.title for p in few}
    assert [c.chunk_id for c in titled_chunks] == [c.chunk_id for c in chunks]
    for c, t in zip(chunks, titled_chunks):
        assert t.text == f"{title[c.doc_id]}\n{c.text}"
        assert titled.corpus[c.chunk_id] == t.text
    assert titled.queries == plain.queries and titled.relevant_docs == plain.relevant_docs
    assert plain.corpus[chunks[0].chunk_id] == chunks[0].text  # the original is left alone
