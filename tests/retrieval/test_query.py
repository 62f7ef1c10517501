"""`python -m flows.query` for real: two small PDFs, the tiny real model, a persisted
LlamaIndex VectorStoreIndex, and the champion pointer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flows.query import main, resolve_model
from tasks.registry.runs import register_run, set_champion
from tasks.core.settings import Settings
from tasks.core.caching import model_fingerprint
from tests.sample_pdfs import SAMPLES, first_page_pdf
from tests.tiny_model import make_tiny_st_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("query")
    pdfs = tmp / "pdfs"
    (pdfs / "sub").mkdir(parents=True)
    for src, dest in ((SAMPLES[0], pdfs / "a.pdf"), (SAMPLES[1], pdfs / "sub" / "b.pdf")):
        first_page_pdf(src, dest)
    return tmp, pdfs, make_tiny_st_model(tmp / "tiny")


def _query(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def test_builds_persists_then_loads_and_prints_file_and_page(setup, capsys):
    tmp, pdfs, tiny = setup
    out = tmp / "out-a"
    args = ["尤金袋鼠分布在哪里？", "--top-k", "3", "--model", str(tiny), "--pdf-dir", str(pdfs),
            "--output-dir", str(out), "--chunk-size", "120", "--chunk-overlap", "10"]
    code, first = _query(capsys, *args)
    assert code == 0
    assert "built now" in first
    hits = [line for line in first.splitlines() if line[:2] in ("1.", "2.", "3.")]
    assert len(hits) == 3
    assert all(("a.pdf" in h or "sub/b.pdf" in h) and "p.1" in h for h in hits)
    folders = list((out / "query_index").iterdir())
    assert len(folders) == 1 and (folders[0] / "docstore.json").is_file()

    code, second = _query(capsys, *args)
    assert code == 0 and "(loaded)" in second
    assert [line for line in second.splitlines() if line[:2] in ("1.", "2.", "3.")] == hits

    # Another model means other vectors: a new index, the old one kept.
    other = make_tiny_st_model(tmp / "tiny-other", seed=1)
    code, third = _query(capsys, *[a if a != str(tiny) else str(other) for a in args])
    assert code == 0 and "built now" in third
    assert len(list((out / "query_index").iterdir())) == 2


def test_a_chunks_own_text_finds_that_chunk_first(setup):
    from tasks.retrieval.index import Searcher, open_index

    tmp, pdfs, tiny = setup
    settings = Settings(chunk_size=120, chunk_overlap=10)
    index, _, _ = open_index(pdfs, str(tiny), tmp / "out-b" / "query_index", settings)
    nodes = list(index.nodes.values())
    assert len(nodes) >= 4
    target = nodes[len(nodes) // 2]
    searcher = Searcher(index)
    top = searcher.search(target.get_content(), top_k=2)
    assert top[0].chunk_id == target.node_id
    assert top[0].score >= top[1].score
    assert {h.file for h in searcher.search("袋鼠", top_k=len(nodes))} == {"a.pdf", "sub/b.pdf"}


def test_adapter_uses_the_models_query_and_document_prompts(setup):
    from sentence_transformers import SentenceTransformer

    from tasks.models.st_embedding import SentenceTransformerEmbedding

    _, _, tiny = setup
    embed = SentenceTransformerEmbedding(str(tiny))
    model = SentenceTransformer(str(tiny))
    text = "尤金袋鼠分布在澳洲南部岛屿。"
    q = np.array(embed.get_query_embedding(text))
    d = np.array(embed.get_text_embedding(text))
    assert np.allclose(q, model.encode_query([text], normalize_embeddings=True)[0], atol=1e-5)
    assert np.allclose(d, model.encode_document([text], normalize_embeddings=True)[0], atol=1e-5)
    assert not np.allclose(q, d, atol=1e-4)  # "query: " and "passage: " differ
    assert abs(np.linalg.norm(q) - 1) < 1e-5


def test_default_model_is_the_champion_then_the_base_model(setup, tmp_path):
    from tasks.registry.runs import serve_base_model

    _, _, tiny = setup
    out = tmp_path / "out"
    with pytest.raises(Exception, match="no current.json"):
        resolve_model(None, out)
    out.mkdir()
    serve_base_model(out, {"run_id": None, "model_path": str(tiny), "retriever": {"kind": "bm25"}})
    path, origin, serving = resolve_model(None, out)
    assert (path, origin) == (str(tiny), "no run promoted yet: the base model") and serving.spec.kind == "bm25"
    register_run(out, "r1", tiny, model_fingerprint(tiny), files={})
    set_champion(out, "r1")
    path, origin, serving = resolve_model(None, out)
    assert Path(path) == out / "runs" / "r1" / "model" and origin == "champion, run r1"
    assert serving.spec.kind == "dense"  # no retriever recorded: the model alone


@pytest.mark.slow
def test_command_line_entry_point(setup):
    tmp, pdfs, tiny = setup
    proc = subprocess.run(
        [sys.executable, "-m", "flows.query", "泡泡战士是什么？", "--top-k", "1", "--model", str(tiny),
         "--pdf-dir", str(pdfs), "--output-dir", str(tmp / "out-cli")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1. " in proc.stdout and "p.1" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "flows.query", "x", "--pdf-dir", str(tmp / "nope")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--pdf-dir" in bad.stderr and "Traceback" not in bad.stderr


def test_section_chunking_builds_its_own_index_of_headed_chunks(setup):
    from tasks.retrieval.index import index_key, open_index

    tmp, pdfs, tiny = setup
    plain = Settings(chunk_size=120, chunk_overlap=10)
    by_section = Settings(chunk_size=120, chunk_overlap=10, chunk_by_section=True)
    assert index_key("m", [("a.pdf", "x")], plain) != index_key("m", [("a.pdf", "x")], by_section)
    index, built, _ = open_index(pdfs, str(tiny), tmp / "out-sections" / "query_index", by_section)
    assert built
    texts = [n.get_content() for n in index.nodes.values()]
    # The sample PDFs put each CMRC article under its title: section chunks start with one.
    assert sum(t.split("\n", 1)[0] in ("泡泡战士", "尤金袋鼠", "松平康忠") for t in texts) >= len(texts) // 2


# --- the shipped retriever: BM25 and hybrid search, batch questions ----------------------------


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory, setup):
    """The query index over all the sample PDFs, and the questions people wrote about them
    matched to the same chunks (the pipeline's reading and chunking)."""
    from tasks.chunks.chunking import chunk_documents
    from tasks.documents.reading import load_documents
    from tasks.evaluation.human_questions import load_human_questions, resolve_questions
    from tasks.retrieval.index import open_index

    _, _, tiny = setup
    settings = Settings()
    index, _, where = open_index(REPO / "data" / "pdf", str(tiny), tmp_path_factory.mktemp("sample") / "qi", settings)
    chunks = chunk_documents(load_documents(REPO / "data" / "pdf").documents, settings.chunk_size,
                             settings.chunk_overlap)
    dataset = resolve_questions(load_human_questions(REPO / "data" / "pdf" / "human_questions.json"), chunks).dataset
    return index, where, dataset, tiny


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["bm25", "dense", "hybrid", "rrf", "bm25-expanded", "hybrid-expanded"])
def test_query_ranks_exactly_as_the_evaluation(sample_index, spec, tmp_path):
    """What is measured is what is searched: the top 10 of every question, and so every metric
    (with BM25 over each chunk and its questions too: people's questions are not among them)."""
    from tasks.evaluation.evaluate import evaluate_retrievers
    from tasks.retrieval.expansion import expanded_scores, save_expansion
    from tasks.retrieval.first_stage import first_stage_scores
    from tasks.retrieval.index import Searcher
    from tasks.retrieval.retriever import RetrieverSpec, combine

    index, _, dataset, tiny = sample_index
    kind = spec.removesuffix("-expanded")
    retriever = RetrieverSpec.hybrid(0.4) if kind == "hybrid" else RetrieverSpec(kind)
    expansion = None
    if spec.endswith("-expanded"):
        retriever = retriever.with_expansion()
        # Questions as a writer would word them, about what each chunk begins with.
        expansion = {c: [f"{text[:12]}说的是什么？", f"哪一段提到{text[20:26]}？"] for c, text in dataset.corpus.items()}
        save_expansion(expansion, tmp_path / "expansion.json")
    evaluator, dense, lexical = first_stage_scores(str(tiny), dataset)
    if expansion is not None:
        plain, lexical = lexical, expanded_scores(evaluator.corpus_ids, evaluator.corpus, expansion,
                                                  evaluator.queries,
                                                  [dataset.relevant_docs[q] for q in evaluator.queries_ids])
        assert (plain.argmax(1) != lexical.argmax(1)).any()  # the questions change what BM25 finds
    evaluated = combine(retriever, dense, lexical)
    expected = [[evaluator.corpus_ids[i] for i in sorted(range(len(row)), key=lambda i: (-row[i], evaluator.corpus_ids[i]))[:10]]
                for row in evaluated]

    searcher = Searcher(index, retriever, expansion=expansion)
    assert searcher.bm25 is not None or spec == "dense"
    found = [[h.chunk_id for h in hits] for hits in searcher.search_many(evaluator.queries, top_k=10)]
    assert found == expected

    # And so the metric the run reported is the metric of what flows.query returns.
    from tasks.retrieval.metrics import metrics_from_scores

    columns = [searcher.chunk_ids.index(c) for c in evaluator.corpus_ids]
    served = metrics_from_scores(dataset, searcher.scores(evaluator.queries)[:, columns], retriever.kind, evaluator)
    reported = evaluate_retrievers(str(tiny), dataset, [retriever],
                                   expansion=tmp_path / "expansion.json" if expansion else None)[retriever.label]
    key = "cosine_ndcg@10" if spec == "dense" else f"{retriever.kind}_ndcg@10"
    assert served[f"{retriever.kind}_ndcg@10"] == pytest.approx(reported[key], abs=1e-9)


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory, setup):
    """A cross-encoder folder: the tiny model's encoder with a seeded scoring head (its
    training is tests/reranking's and the flow test's; here only the ranking matters)."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    _, _, tiny = setup
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("reranker") / "reranker"
    CrossEncoder(str(tiny), num_labels=1, max_length=128).save_pretrained(str(folder))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("k", [3, 20])
def test_query_with_the_reranker_ranks_exactly_as_the_evaluation(sample_index, tiny_reranker, k):
    """With the reranker on, flows.query's searcher and the evaluation return the same top 10
    of every question, so the same NDCG@10."""
    from tasks.evaluation.evaluate import evaluate_retrievers
    from tasks.retrieval.first_stage import first_stage_scores
    from tasks.retrieval.index import Searcher
    from tasks.retrieval.metrics import metrics_from_scores
    from tasks.retrieval.rerank import CrossEncoderReranker
    from tasks.retrieval.retriever import RetrieverSpec, combine

    index, _, dataset, tiny = sample_index
    retriever = RetrieverSpec.hybrid(0.5).reranked(k)
    reranker = CrossEncoderReranker(tiny_reranker)
    searcher = Searcher(index, retriever, reranker=reranker)
    evaluator, dense, lexical = first_stage_scores(str(tiny), dataset)
    found = [[h.chunk_id for h in hits] for hits in searcher.search_many(evaluator.queries, top_k=10)]
    first = [[h.chunk_id for h in hits]
             for hits in Searcher(index, retriever.first_stage, searcher.bm25).search_many(evaluator.queries, 10)]
    assert found != first  # the reranker moved something

    columns = [searcher.chunk_ids.index(c) for c in evaluator.corpus_ids]
    served = metrics_from_scores(dataset, searcher.scores(evaluator.queries)[:, columns], "rerank", evaluator)
    reported = evaluate_retrievers(str(tiny), dataset, [retriever], reranker_path=tiny_reranker)[retriever.label]
    assert served["rerank_ndcg@10"] == pytest.approx(reported["rerank_ndcg@10"], abs=1e-9)
    # Hand-checked: the top k of the fused first stage, ordered by the cross-encoder's score.
    row = combine(retriever, dense, lexical)[0]
    top = sorted(range(len(row)), key=lambda i: (-row[i], evaluator.corpus_ids[i]))[:k]
    ce = reranker.predict([(evaluator.queries[0], evaluator.corpus[i]) for i in top])
    by_ce = [evaluator.corpus_ids[top[i]] for i in sorted(range(len(top)), key=lambda i: (-ce[i], evaluator.corpus_ids[top[i]]))]
    assert found[0][:min(k, 10)] == by_ce[:10]


@pytest.mark.slow
def test_the_llama_index_retriever_ranks_as_the_query_command(sample_index, tiny_reranker):
    from llama_index.core.schema import QueryBundle

    from tasks.retrieval.index import Searcher
    from tasks.retrieval.llama_retriever import ShippedRetriever
    from tasks.retrieval.rerank import CrossEncoderReranker
    from tasks.retrieval.retriever import RetrieverSpec

    index, _, dataset, _ = sample_index
    questions = list(dataset.queries.values())[:8]
    expansion = {c: [f"{text[:12]}说的是什么？"] for c, text in dataset.corpus.items()}
    for retriever, top_k in ((RetrieverSpec.hybrid(0.5).reranked(5), 8), (RetrieverSpec.hybrid(0.5).reranked(20), 5),
                             (RetrieverSpec.hybrid(0.5), 5), (RetrieverSpec.hybrid(0.5).with_expansion(), 5)):
        searcher = Searcher(index, retriever, reranker=CrossEncoderReranker(tiny_reranker), expansion=expansion)
        llama = ShippedRetriever(searcher, top_k=top_k)
        for question, hits in zip(questions, searcher.search_many(questions, top_k)):
            nodes = llama.retrieve(QueryBundle(question))
            assert [n.node.node_id for n in nodes] == [h.chunk_id for h in hits], retriever.label


def test_the_champions_reranker_is_served_with_its_recorded_depth(setup, tiny_reranker, tmp_path, capsys):
    tmp, pdfs, tiny = setup
    out = tmp_path / "out"
    register_run(out, "r1", tiny, model_fingerprint(tiny), files={}, folders={"reranker": tiny_reranker})
    set_champion(out, "r1", {"retriever": {"kind": "hybrid", "w_dense": 0.5, "tokenizer": "char", "rerank_k": 7}})
    common = ["--pdf-dir", str(pdfs), "--output-dir", str(out), "--chunk-size", "120", "--chunk-overlap", "10"]
    code, printed = _query(capsys, "袋鼠", *common)
    assert code == 0 and "its top 7 reranked by the cross-encoder" in printed
    assert f"reranker: {out / 'runs' / 'r1' / 'reranker'}" in printed
    code, printed = _query(capsys, "袋鼠", *common, "--rerank-k", "0")
    assert code == 0 and "reranker:" not in printed and "reranked" not in printed
    # A run without a reranker cannot serve one: one line that says what to pass.
    register_run(out, "r2", tiny, "other", files={})
    set_champion(out, "r2", {"retriever": {"kind": "hybrid", "w_dense": 0.5, "rerank_k": 7}})
    assert main(["袋鼠", *common]) == 2
    assert "needs a reranker" in capsys.readouterr().err


def test_the_champions_questions_expand_bm25_when_its_retriever_does(setup, tmp_path, capsys):
    """The champion's recorded expanded retriever is served with its run's questions by chunk;
    a run whose questions are gone is one line that says what to do."""
    from flows.query import open_searcher
    from tasks.registry.runs import EXPANSION_FILE
    from tasks.retrieval.expansion import load_expansion

    tmp, pdfs, tiny = setup
    out = tmp_path / "out"
    common = ["--pdf-dir", str(pdfs), "--output-dir", str(out), "--chunk-size", "120", "--chunk-overlap", "10"]
    # A question nothing in the PDFs answers, written beside one chunk: only the expanded index finds it.
    chunking = {"chunk_size": 120, "chunk_overlap": 10}
    register_run(out, "r0", tiny, model_fingerprint(tiny), files={})
    set_champion(out, "r0", {"retriever": {"kind": "bm25", "tokenizer": "char"}, "index_settings": chunking})
    plain = open_searcher(pdfs, out, Settings(pdf_dir=pdfs, output_dir=out)).searcher
    target = plain.chunk_ids[3]
    question = "量子纠缠蛋糕店的营业时间？"
    assert plain.search(question, top_k=1)[0].chunk_id != target
    expansion = json.dumps({target: [question]}, ensure_ascii=False)
    register_run(out, "r1", tiny, "expanded", files={EXPANSION_FILE: expansion})
    set_champion(out, "r1", {"retriever": {"kind": "bm25", "tokenizer": "char", "expanded": True},
                             "index_settings": chunking})
    opened = open_searcher(pdfs, out, Settings(pdf_dir=pdfs, output_dir=out))
    assert opened.searcher.search(question, top_k=1)[0].chunk_id == target
    assert load_expansion(out / "runs" / "r1" / EXPANSION_FILE) == {target: [question]}
    code, printed = _query(capsys, "袋鼠", *common)
    assert code == 0 and "BM25 over each chunk with its questions" in printed
    assert f"BM25 expansion: {out / 'runs' / 'r1' / EXPANSION_FILE} (questions of 1 chunks)" in printed
    (out / "runs" / "r1" / EXPANSION_FILE).unlink()
    assert main(["袋鼠", *common]) == 2
    assert "does not hold them" in capsys.readouterr().err
    assert main(["袋鼠", *common, "--retriever", "bm25"]) == 0  # the way out it names


def test_questions_file_prints_one_json_line_per_question_after_one_load(setup, sample_index, tmp_path, capsys,
                                                                         monkeypatch):
    import tasks.retrieval.index as qi

    _, where, dataset, tiny = sample_index
    questions = list(dataset.queries.values())[:5]
    file = tmp_path / "questions.txt"
    file.write_text("\n".join(questions) + "\n\n", encoding="utf-8")
    loads = []
    real_open = qi.open_index
    monkeypatch.setattr(qi, "open_index", lambda *a, **k: loads.append(a) or real_open(*a, **k))
    out = where.parent.parent  # the output folder whose query_index/ holds the sample index
    code = main(["--questions", str(file), "--top-k", "3", "--json", "--model", str(tiny), "--retriever", "hybrid",
                 "--w-dense", "0.3", "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and len(loads) == 1
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["question"] for line in lines] == questions
    texts = {c: t for c, t in dataset.corpus.items()}
    for line in lines:
        assert len(line["results"]) == 3
        for r in line["results"]:
            assert r["text"] == texts[r["chunk_id"]]  # the whole chunk, not a snippet
            assert r["source"].endswith(".pdf") and r["page"] >= 1 and isinstance(r["score"], float)
            assert r["pages"] == str(r["page"]) or r["pages"].startswith(f"{r['page']}–")
    assert "z-score fusion with dense weight 0.3" in captured.err


def test_auto_retriever_is_the_one_the_champion_was_shipped_with(setup, tmp_path, capsys):
    from flows.query import resolve_retriever

    tmp, pdfs, tiny = setup
    out = tmp_path / "out"
    register_run(out, "r1", tiny, model_fingerprint(tiny), files={})
    set_champion(out, "r1", {"retriever": {"kind": "hybrid", "w_dense": 0.6, "tokenizer": "char"}})
    spec, origin = resolve_retriever("auto", None, resolve_model(None, out)[2].record["retriever"])
    assert (spec.kind, spec.w_dense) == ("hybrid", 0.6) and "validation" in origin
    code, printed = _query(capsys, "袋鼠", "--pdf-dir", str(pdfs), "--output-dir", str(out), "--chunk-size", "120",
                           "--chunk-overlap", "10")
    assert code == 0 and "dense weight 0.6" in printed
    # Without a record the model alone, as before.
    assert resolve_retriever("auto", None, None)[0].kind == "dense"


def test_bad_batch_arguments_are_one_line_errors(setup, tmp_path, capsys):
    _, pdfs, tiny = setup
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    for args, message in (
        (["--model", str(tiny)], "give a question or --questions FILE"),
        (["q", "--questions", str(empty), "--model", str(tiny)], "one of the two"),
        (["--questions", str(empty), "--model", str(tiny)], "has no question"),
        (["--questions", str(tmp_path / "nope.txt"), "--model", str(tiny)], "cannot read"),
        (["q", "--model", str(tiny), "--w-dense", "0.5"], "--w-dense goes with --retriever hybrid"),
        (["q", "--model", str(tiny), "--retriever", "hybrid", "--w-dense", "2"], "must lie in [0, 1]"),
    ):
        assert main([*args, "--pdf-dir", str(pdfs), "--output-dir", str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err


# --- reading and chunking: the served run's ------------------------------------------------------


RUN_CHUNKING = {"garbage_pdfs": "skip", "garbage_threshold": 0.3, "chunk_size": 120, "chunk_overlap": 10,
                "chunk_by_section": False}


def _served_run(out: Path, tiny: Path, index_settings: dict | None) -> None:
    register_run(out, "r1", tiny, model_fingerprint(tiny), files={})
    set_champion(out, "r1", {"retriever": {"kind": "dense"},
                             **({"index_settings": index_settings} if index_settings else {})})


def test_query_reads_and_chunks_as_the_served_run_did(setup, tmp_path, capsys):
    """No chunking flag: the run's 120-token chunks, the index a 120-token build gives, not the defaults'."""
    from tasks.retrieval.index import open_index

    tmp, pdfs, tiny = setup
    out = tmp_path / "out"
    _served_run(out, tiny, RUN_CHUNKING)
    code, printed = _query(capsys, "袋鼠", "--pdf-dir", str(pdfs), "--output-dir", str(out))
    assert code == 0 and "chunks: garbage_pdfs skip, garbage_threshold 0.3, chunk_size 120" in printed
    assert "as run r1 chunked" in printed
    _, built, where = open_index(pdfs, str(out / "runs" / "r1" / "model"), out / "query_index",
                                 Settings(chunk_size=120, chunk_overlap=10))
    assert not built and f"index: {where} " in printed
    # A flag that repeats the run's value is accepted.
    assert main(["袋鼠", "--pdf-dir", str(pdfs), "--output-dir", str(out), "--chunk-size", "120"]) == 0


@pytest.mark.parametrize("flag, value, recorded", [("--chunk-size", "300", "chunk_size = 120"),
                                                   ("--no-chunk-by-section", None, None),
                                                   ("--chunk-by-section", None, "chunk_by_section = False"),
                                                   ("--garbage-pdfs", "keep", "garbage_pdfs = skip")])
def test_a_flag_that_contradicts_the_served_run_is_refused_in_one_line(setup, tmp_path, capsys, flag, value,
                                                                       recorded):
    tmp, pdfs, tiny = setup
    out = tmp_path / "out"
    _served_run(out, tiny, RUN_CHUNKING)
    args = ["袋鼠", "--pdf-dir", str(pdfs), "--output-dir", str(out), flag, *([value] if value else [])]
    code = main(args)
    err = capsys.readouterr().err
    if recorded is None:  # --no-chunk-by-section agrees with the run
        assert code == 0
        return
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert recorded in err and "run r1" in err and "--model FOLDER" in err and "Traceback" not in err
    assert not (out / "query_index").exists()  # refused before anything was built


def test_a_run_that_recorded_no_chunking_falls_back_to_the_defaults_with_a_note(setup, tmp_path, capsys, caplog):
    tmp, pdfs, tiny = setup
    out = tmp_path / "out"
    _served_run(out, tiny, None)
    code, printed = _query(capsys, "袋鼠", "--pdf-dir", str(pdfs), "--output-dir", str(out), "--chunk-size", "150",
                           "--chunk-overlap", "10")
    assert code == 0 and "chunk_size 150" in printed and "the run recorded none" in printed
    assert "recorded no reading and chunking settings" in caplog.text


def test_the_index_depends_on_every_reading_setting_and_the_chunk_shape():
    """A reading setting added to the documents stage's group must reach the query index too."""
    from tasks.core.settings import group_fields
    from tasks.retrieval.index import INDEX_SETTINGS

    assert group_fields(("documents",)) <= set(INDEX_SETTINGS) <= group_fields(("documents", "chunking"))
    assert {"chunk_size", "chunk_overlap", "chunk_by_section"} <= set(INDEX_SETTINGS)


def test_the_index_depends_on_the_code_that_reads_and_chunks(tmp_path, monkeypatch):
    """An upgrade that reads or chunks otherwise must not serve the index the old code built."""
    import shutil

    import tasks.core.caching as caching
    from tasks.retrieval.index import index_key

    copy = tmp_path / "repo"
    shutil.copytree(REPO / "tasks", copy / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(caching, "PROJECT_ROOT", copy)
    fingerprint = caching.code_fingerprint
    monkeypatch.setattr(caching, "code_fingerprint", lambda module, root=copy: fingerprint(module, root))
    before = index_key("m", [("a.pdf", "x")], Settings())
    chunking = copy / "tasks" / "chunks" / "chunking.py"
    chunking.write_text(chunking.read_text(encoding="utf-8") + "\n# chunked otherwise\n", encoding="utf-8")
    assert index_key("m", [("a.pdf", "x")], Settings()) != before


def test_search_reads_no_private_attribute_of_llama_index():
    # The index's vectors and model are the project's own (vectors.npy, chunk_ids.json beside the
    # persisted index): a llama-index-core upgrade that renames its internals must not break search.
    private = ("vector_store.data", "embedding_dict", "._embed_model", "._model")
    for path in [*(REPO / "tasks" / "retrieval").glob("*.py"), REPO / "flows" / "query.py"]:
        source = path.read_text(encoding="utf-8")
        assert not [p for p in private if p in source], f"{path.name} reads {[p for p in private if p in source]}"
