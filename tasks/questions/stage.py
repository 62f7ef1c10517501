"""The questions stage (an LLM writes questions for every chunk) and the optional round-trip filter."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.chunks.stage import load_chunks_file
from tasks.core.fileio import write_jsonl_atomic
from tasks.core.settings import Settings
from tasks.core.stage import stage


@dataclass
class QuestionsRecord:
    train_dataset: Path
    val_dataset: Path
    questions_path: Path
    n_train_queries: int
    n_val_queries: int
    n_val_corpus: int
    stats: dict[str, Any]


def _questions_summary(record: QuestionsRecord, cached: bool) -> dict:
    gen = record.stats
    asked = gen.get("chunks_asked", gen["chunks"])
    return {
        # Served from the cache, this run asked nothing.
        "llm_requests_sent": 0 if cached else gen["requests_sent"],
        "cache_hits": asked if cached else gen["cache_hits"],
        "questions_kept": gen["questions_kept"], "train_queries": record.n_train_queries,
        "val_queries": record.n_val_queries, "dropped": gen["dropped"],
        "chunks_not_asked": sum(gen.get("chunks_skipped", {}).values()), "not_asked": gen.get("chunks_skipped", {}),
        "failed_chunks": gen.get("failed_chunks", 0), "val_corpus_chunks": record.n_val_corpus,
    }


@stage("questions", writes=("train_path", "val_path", "questions_path"), settings=("generation",), retries=2,
       summary=_questions_summary)
def generate(chunks_path: Path, settings: Settings, train_path: Path, val_path: Path,
             questions_path: Path, examples: list[str] | None = None) -> QuestionsRecord:
    """Write questions for every chunk (cache first), then the train and val datasets.
    ``examples``: questions people wrote, shown in the prompt as the way users ask."""
    from tasks.core.memory import release_freed_memory
    from tasks.core.qa_dataset import build_dataset
    from tasks.questions.generation import generate_questions
    from tasks.questions.llm import make_writer
    from tasks.questions.prompts import with_examples

    # In the template itself, so that the echo filter also drops copies of the examples.
    template = with_examples(settings.prompt_template, examples or [])
    if template != settings.prompt_template:
        settings = settings.model_copy(update={"prompt_template": template})
    train, val = load_chunks_file(chunks_path)
    result = generate_questions(train + val, settings, make_writer)
    release_freed_memory()  # what the LLM's run left in this process's heap, before training
    triples = [(q.qid, q.chunk_id, q.question) for q in result.questions]
    # A RAG index holds every chunk: validation questions compete with the training chunks too,
    # unless the user asks for LlamaIndex's val-only corpus (tiny and easy on small folders).
    val_corpus = train + val if settings.val_corpus == "all" else val
    sizes = {}
    for path, chunks, corpus_chunks in ((train_path, train, train), (val_path, val, val_corpus)):
        own_ids = {c.chunk_id for c in chunks}
        ds = build_dataset({c.chunk_id: c.text for c in corpus_chunks}, [t for t in triples if t[1] in own_ids])
        ds.save(Path(path))
        sizes[path] = len(ds.queries)
    write_jsonl_atomic(Path(questions_path), [asdict(q) for q in result.questions])
    return QuestionsRecord(
        train_dataset=Path(train_path), val_dataset=Path(val_path), questions_path=Path(questions_path),
        n_train_queries=sizes[train_path], n_val_queries=sizes[val_path], n_val_corpus=len(val_corpus),
        stats=result.stats.to_dict(),
    )


@dataclass
class RoundTripRecord:
    train_dataset: Path
    n_train_queries: int
    report: dict[str, Any]


def _round_trip_summary(record: RoundTripRecord, cached: bool) -> dict:
    return {"kept": record.report["kept"], "dropped": record.report["dropped"]}


@stage("round-trip", writes=("out_path",), summary=_round_trip_summary)
def round_trip(base_model_path: Path, train_dataset: Path, top_k: int, batch_size: int, out_path: Path,
               trust_remote_code: bool = False) -> RoundTripRecord:
    """Keep the training questions whose own chunk the base model ranks in the top ``top_k``."""
    from sentence_transformers import SentenceTransformer

    from tasks.core.qa_dataset import QADataset
    from tasks.questions.round_trip import round_trip_filter

    kept, report = round_trip_filter(
        QADataset.load(Path(train_dataset)),
        SentenceTransformer(str(base_model_path), trust_remote_code=trust_remote_code),
        top_k,
        batch_size,
    )
    kept.save(Path(out_path))
    return RoundTripRecord(Path(out_path), len(kept.queries), report.to_dict())


def _expansion_summary(record: dict[str, Any], cached: bool) -> dict:
    return {"chunks": record["chunks"], "questions": record["questions"]}


@stage("bm25-expansion", writes=("out_path",), summary=_expansion_summary)
def bm25_expansion(train_dataset: Path, val_dataset: Path, out_path: Path) -> dict[str, Any]:
    """Write ``{chunk id: the questions about it}`` from the question sets that passed the
    filters (training, after the round trip when it ran; validation), for the candidate
    retrievers whose BM25 indexes each chunk with its questions (:mod:`tasks.retrieval.expansion`)."""
    from tasks.core.qa_dataset import QADataset
    from tasks.retrieval.expansion import chunk_questions, save_expansion

    expansion = chunk_questions(QADataset.load(Path(p)) for p in (train_dataset, val_dataset))
    save_expansion(expansion, Path(out_path))
    return {"path": Path(out_path), "chunks": len(expansion), "questions": sum(map(len, expansion.values()))}
