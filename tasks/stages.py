"""The Prefect tasks of the pipeline: thin wrappers around the pure stage code.

Each task reads and writes files under the run's folder and returns a small
record (paths and counts), never a model or a tensor. Each has a cache key built
from its real inputs — the content hashes of the files it reads, the settings it
uses and the source of the code it runs — so an unchanged rerun is served from
Prefect's cache. The flow forces a refresh when a task's outputs have gone missing
from disk (see ``flows.finetune_bce``), so a cache hit never points at nothing.
"""

from __future__ import annotations

import inspect
import logging
import os
import stat
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from tasks.errors import PipelineError
from tasks.fileio import read_jsonl, sha256_file, stable_hash, write_jsonl_atomic
from tasks.records import Chunk, Document
from tasks.settings import Settings


# --- cache keys --------------------------------------------------------------------


def source_hash(*modules: str) -> str:
    """Hash of the source files of ``modules``: editing the code invalidates the cache."""
    parts = []
    for name in modules:
        __import__(name)
        parts.append(inspect.getsource(sys.modules[name]))
    return stable_hash(parts)


# sha256 by file, remembered for the life of the process: the evaluate, round-trip, train and
# promotion steps each ask for the fingerprint of the same model folders (~470 MB for
# e5-small, ~1 GB for bce), and reading them again for every key costs seconds a time.
# Resolved path → (identity from os.stat, digest); a file whose identity changed is hashed again.
_FILE_HASHES: dict[str, tuple[tuple[int, ...], str]] = {}
_FILE_HASHES_MAX = 10_000  # a long-lived worker sees many folders; entries are ~200 bytes


def _stat_identity(st: os.stat_result) -> tuple[int, ...]:
    # Size and mtime catch an edit; inode and ctime catch a file replaced by rename (how
    # tasks.fileio writes) or rewritten in place within the same mtime tick but not ctime's.
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns)


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, or ``"missing"`` when it is not a file.

    The bytes are read once per process while the file stays the same (size, mtime, inode,
    ctime): asking again for an unchanged file costs one ``stat``. Only an edit that keeps
    the size and lands within the file system's timestamp resolution (a few ms) of the
    previous one, in place, could go unseen; the pipeline's writers replace files instead.

    Example::

        >>> file_fingerprint(Path("out/train_dataset.json"))  # doctest: +SKIP
        '9f2c…'
    """
    path = Path(path)
    try:
        before = path.stat()
    except OSError:
        return "missing"
    if not stat.S_ISREG(before.st_mode):
        return "missing"
    key, ident = str(path.resolve()), _stat_identity(before)
    known = _FILE_HASHES.get(key)
    if known is not None and known[0] == ident:
        return known[1]
    digest = sha256_file(path)
    try:
        unchanged = _stat_identity(path.stat()) == ident
    except OSError:
        unchanged = False
    if unchanged:  # a file written to while it was read is not remembered
        if len(_FILE_HASHES) >= _FILE_HASHES_MAX and key not in _FILE_HASHES:
            _FILE_HASHES.pop(next(iter(_FILE_HASHES)))  # the oldest entry
        _FILE_HASHES[key] = (ident, digest)
    return digest


def dir_fingerprint(path: Path, ignore: frozenset[str] = frozenset()) -> str:
    """Content hash of every file of a folder (a model): names, sizes and bytes.

    ``ignore`` names files (paths relative to the folder) that do not count. Each file's
    bytes are hashed once per process while unchanged (:func:`file_fingerprint`), so the
    second fingerprint of an unchanged model folder costs a directory walk, not a read.

    Example::

        >>> dir_fingerprint(Path("out/model"), ignore=frozenset({"README.md"}))  # doctest: +SKIP
        '41d8…'
    """
    path = Path(path)
    if not path.is_dir():
        return "missing"
    files = (p for p in sorted(path.rglob("*")) if p.is_file())
    return stable_hash(
        [(rel, file_fingerprint(p)) for p in files if (rel := p.relative_to(path).as_posix()) not in ignore]
    )


def model_fingerprint(path: Path) -> str:
    """Content hash of a model folder without its model card (README.md): the flow writes
    the metrics into the card after evaluating, and the card does not change what the model
    computes, so it must not invalidate cached evaluations or tell two copies apart."""
    return dir_fingerprint(path, ignore=frozenset({"README.md"}))


def _key(task_name: str, modules: tuple[str, ...], *inputs: Any) -> str:
    return stable_hash([task_name, source_hash(*modules), *inputs])


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry what a second try may fix, never a user's error.

    A crashed LLM server or a timeout may pass; a :class:`PipelineError` (too many chunks
    failed, a bad file, a bad setting) fails the same way again, so retrying only delays the
    message the user needs.
    """
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable result is no reason to give up retrying
        return True
    return not isinstance(error, PipelineError)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # called outside a run (unit tests of the wrappers)
        return logging.getLogger(__name__)


# --- 1. documents ----------------------------------------------------------------------

DOCUMENT_MODULES = ("tasks.documents", "tasks.text_cleaning", "tasks.text_quality", "tasks.stages")


@dataclass
class DocumentsRecord:
    documents_path: str
    n_files: int
    n_documents: int
    n_pages: int
    n_duplicates: int
    skipped: list[dict[str, str]]


def _documents_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    from tasks.documents import find_pdfs

    pdf_dir = Path(params["pdf_dir"])
    files = [(p.relative_to(pdf_dir).as_posix(), sha256_file(p)) for p in find_pdfs(pdf_dir)]
    garbage = [params.get("garbage_pdfs", "skip"), params.get("garbage_threshold", 0.3)]
    return _key("read_documents", DOCUMENT_MODULES, str(Path(params["work_dir"]).resolve()), files, garbage)


@task(name="read-documents", cache_key_fn=_documents_key, persist_result=True)
def read_documents(
    pdf_dir: Path, work_dir: Path, garbage_pdfs: str = "skip", garbage_threshold: float = 0.3
) -> DocumentsRecord:
    """Find, hash, extract and clean every PDF under ``pdf_dir``; skip the unreadable ones."""
    from tasks.documents import load_documents

    result = load_documents(
        Path(pdf_dir), logger=_logger(), garbage_pdfs=garbage_pdfs, garbage_threshold=garbage_threshold
    )
    out = Path(work_dir) / "documents.jsonl"
    write_jsonl_atomic(out, [d.to_dict() for d in result.documents])
    return DocumentsRecord(
        documents_path=str(out),
        n_files=result.n_files,
        n_documents=len(result.documents),
        n_pages=result.n_pages,
        n_duplicates=sum(len(d.duplicates) for d in result.documents),
        skipped=[asdict(s) for s in result.skipped],
    )


def load_documents_file(path: str | Path) -> list[Document]:
    return [Document.from_dict(d) for d in read_jsonl(Path(path))]


# --- 2. split ---------------------------------------------------------------------------


def _split_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    return _key(
        "split", ("tasks.split",), file_fingerprint(params["documents_path"]), params["val_ratio"], params["seed"]
    )


@task(name="split-train-val", cache_key_fn=_split_key, persist_result=True)
def split_train_val(documents_path: str, val_ratio: float, seed: int) -> dict[str, Any]:
    """Assign whole documents to train or validation."""
    from tasks.split import split_documents

    docs = load_documents_file(documents_path)
    plan = split_documents([d.doc_id for d in docs], val_ratio, seed)
    if plan.by == "chunk":
        _logger().warning("only one document: splitting its chunks into train and validation instead")
    return asdict(plan)


# --- 3. chunks ----------------------------------------------------------------------------


@dataclass
class ChunksRecord:
    chunks_path: str
    n_train_chunks: int
    n_val_chunks: int
    split_by: str


def _chunks_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    return _key(
        "chunk",
        ("tasks.chunking", "tasks.chunk_sections", "tasks.split"),
        file_fingerprint(params["documents_path"]),
        params["plan"],
        params["chunk_size"],
        params["chunk_overlap"],
        params.get("by_section", False),
        params["val_ratio"],
        params["seed"],
        str(Path(params["work_dir"]).resolve()),
    )


@task(name="chunk", cache_key_fn=_chunks_key, persist_result=True)
def chunk(
    documents_path: str,
    plan: dict[str, Any],
    chunk_size: int,
    chunk_overlap: int,
    val_ratio: float,
    seed: int,
    work_dir: Path,
    by_section: bool = False,
) -> ChunksRecord:
    """Chunk every page with SentenceSplitter and tag each chunk train or val."""
    from tasks.chunking import chunk_documents
    from tasks.split import SplitPlan, assign_chunks

    chunks = chunk_documents(load_documents_file(documents_path), chunk_size, chunk_overlap, by_section)
    train, val = assign_chunks(chunks, SplitPlan(**plan), val_ratio, seed)
    out = Path(work_dir) / "chunks.jsonl"
    write_jsonl_atomic(
        out, [{**c.to_dict(), "split": "train"} for c in train] + [{**c.to_dict(), "split": "val"} for c in val]
    )
    return ChunksRecord(str(out), len(train), len(val), plan["by"])


def load_chunks_file(path: str | Path) -> tuple[list[Chunk], list[Chunk]]:
    train, val = [], []
    for row in read_jsonl(Path(path)):
        split = row.pop("split")
        (train if split == "train" else val).append(Chunk(**row))
    return train, val


# --- 4. questions ------------------------------------------------------------------------


@dataclass
class QuestionsRecord:
    train_dataset: str
    val_dataset: str
    questions_path: str
    n_train_queries: int
    n_val_queries: int
    stats: dict[str, Any]


def _questions_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    settings: Settings = params["settings"]
    return _key(
        "questions",
        ("tasks.generation", "tasks.question_filters", "tasks.chunk_quality", "tasks.prompts", "tasks.qa_dataset"),
        file_fingerprint(params["chunks_path"]),
        settings.generation_fingerprint(),
        settings.question_filters(),
        settings.val_corpus,
        str(Path(params["out_dir"]).resolve()),
    )


@task(name="generate-questions", cache_key_fn=_questions_key, persist_result=True, retries=2, retry_delay_seconds=10,
      retry_condition_fn=retry_unless_user_error)
def generate(chunks_path: str, settings: Settings, out_dir: Path) -> QuestionsRecord:
    """Write questions for every chunk (cache first), then the train and val datasets."""
    from tasks.generation import generate_questions
    from tasks.llm import make_writer
    from tasks.qa_dataset import build_dataset

    train, val = load_chunks_file(chunks_path)
    result = generate_questions(train + val, settings, make_writer)
    triples = [(q.qid, q.chunk_id, q.question) for q in result.questions]
    out_dir = Path(out_dir)
    datasets = {}
    # A RAG index holds every chunk: validation questions compete with the training chunks too,
    # unless the user asks for LlamaIndex's val-only corpus (tiny and easy on small folders).
    val_corpus = train + val if settings.val_corpus == "all" else val
    for name, chunks, corpus_chunks in (("train", train, train), ("val", val, val_corpus)):
        own_ids = {c.chunk_id for c in chunks}
        ds = build_dataset(
            {c.chunk_id: c.text for c in corpus_chunks},
            [t for t in triples if t[1] in own_ids],
        )
        ds.save(out_dir / f"{name}_dataset.json")
        datasets[name] = ds
    questions_path = out_dir / "work" / "questions.jsonl"
    write_jsonl_atomic(questions_path, [asdict(q) for q in result.questions])
    return QuestionsRecord(
        train_dataset=str(out_dir / "train_dataset.json"),
        val_dataset=str(out_dir / "val_dataset.json"),
        questions_path=str(questions_path),
        n_train_queries=len(datasets["train"].queries),
        n_val_queries=len(datasets["val"].queries),
        stats=result.stats.to_dict(),
    )


# --- 5. base model --------------------------------------------------------------------------


def _base_model_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    s: Settings = params["settings"]
    spec = s.resolved_base_model()
    local = Path(spec).expanduser()
    # A local folder is identified by its files; an id or the bundled model by its name.
    identity = dir_fingerprint(local) if local.is_dir() else spec
    return _key(
        "base_model",
        ("tasks.base_model", "tasks.bundled_e5"),
        identity,
        s.model_hub,
        s.pooling,
        s.query_prompt,
        s.document_prompt,
        s.trust_remote_code,
        str(Path(s.models_dir).resolve()),
    )


@task(name="prepare-base-model", cache_key_fn=_base_model_key, persist_result=True, retries=1, retry_delay_seconds=10,
      retry_condition_fn=retry_unless_user_error)
def prepare_base(settings: Settings) -> dict[str, Any]:
    """Resolve, download if needed, and convert the base model to sentence-transformers."""
    from tasks.base_model import prepare_base_model

    return asdict(prepare_base_model(settings))


# --- 5b. round trip (with --round-trip-top-k) ----------------------------------------------


@dataclass
class RoundTripRecord:
    train_dataset: str
    n_train_queries: int
    report: dict[str, Any]


def _round_trip_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    return _key(
        "round_trip",
        ("tasks.round_trip", "tasks.qa_dataset"),
        dir_fingerprint(params["base_model_path"]),
        file_fingerprint(params["train_dataset"]),
        params["top_k"],
        params["batch_size"],
        str(Path(params["out_path"]).resolve()),
    )


@task(name="round-trip-filter", cache_key_fn=_round_trip_key, persist_result=True)
def round_trip(
    base_model_path: str, train_dataset: str, top_k: int, batch_size: int, out_path: Path,
    trust_remote_code: bool = False,
) -> RoundTripRecord:
    """Keep the training questions whose own chunk the base model ranks in the top ``top_k``."""
    from sentence_transformers import SentenceTransformer

    from tasks.qa_dataset import QADataset
    from tasks.round_trip import round_trip_filter

    kept, report = round_trip_filter(
        QADataset.load(Path(train_dataset)),
        SentenceTransformer(base_model_path, trust_remote_code=trust_remote_code),
        top_k,
        batch_size,
    )
    kept.save(Path(out_path))
    return RoundTripRecord(str(out_path), len(kept.queries), report.to_dict())


# --- 6. training ---------------------------------------------------------------------------


def _train_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    from tasks.training import TRAINING_FIELDS

    s: Settings = params["settings"]
    return _key(
        "train",
        ("tasks.training", "tasks.base_model"),
        dir_fingerprint(params["base_model_path"]),
        file_fingerprint(params["train_dataset"]),
        # The recipe's knobs (tasks.training.TRAINING_FIELDS) and the α choice; the guard and
        # validation sets choose the checkpoint and α, so their content is part of the key.
        [getattr(s, k) for k in TRAINING_FIELDS],
        [s.interpolation_alphas, s.alpha_guard_margin],
        [file_fingerprint(p) if p else None for p in (params.get("val_dataset"), params.get("guard_dataset"))],
        str(Path(params["model_dir"]).resolve()),
    )


@task(name="fine-tune", cache_key_fn=_train_key, persist_result=True)
def train(
    base_model_path: str,
    train_dataset: str,
    model_dir: Path,
    settings: Settings,
    val_dataset: str | None = None,
    guard_dataset: str | None = None,
) -> dict[str, Any]:
    """Fine-tune the base model on the training pairs (best epoch on ``val_dataset``, α on it
    and ``guard_dataset``); the model is saved atomically."""
    from tasks.training import train_model

    result = train_model(
        base_model_path, Path(train_dataset), Path(model_dir), settings,
        val_dataset=Path(val_dataset) if val_dataset else None,
        guard_dataset=Path(guard_dataset) if guard_dataset else None,
    )
    return asdict(result)


# --- 7. evaluation -------------------------------------------------------------------------


EVALUATION_MODULES = ("tasks.evaluation", "tasks.qa_dataset", "tasks.retrieval.lexical", "tasks.retrieval.fusion",
                      "tasks.retrieval.retriever", "tasks.retrieval.metrics")


def _evaluate_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    return _key(
        "evaluate",
        EVALUATION_MODULES,
        model_fingerprint(params["model_path"]),
        file_fingerprint(params["dataset"]),
        params["batch_size"],
        params["retrievers"],
    )


@task(name="evaluate", task_run_name="evaluate · {set_name} · {label}", cache_key_fn=_evaluate_key,
      persist_result=True)
def evaluate(
    model_path: str, dataset: str, batch_size: int, retrievers: list[dict[str, Any]], trust_remote_code: bool = False,
    set_name: str = "val", label: str = "model",
) -> dict[str, dict[str, float]]:
    """Retrieval metrics on one dataset of every retriever built from one model and BM25:
    ``{label: metrics}`` (``dense``, ``bm25``, ``hybrid w=…``, ``rrf``)."""
    from tasks.evaluation import evaluate_retrievers
    from tasks.retrieval.retriever import RetrieverSpec

    return evaluate_retrievers(model_path, Path(dataset), [RetrieverSpec.from_dict(r) for r in retrievers],
                               batch_size=batch_size, trust_remote_code=trust_remote_code, name=set_name)


# --- 7b. questions written by people (report only) ----------------------------------------


@dataclass
class HumanQuestionsRecord:
    dataset: str | None  # human_dataset.json; None when no question found its chunk
    n_questions: int
    n_resolved: int
    unresolved: list[dict[str, str]]  # {"id", "reason"}
    n_on_train_chunks: int  # resolved questions whose answer lies in a chunk the model was trained on


def _human_questions_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    return _key(
        "human_questions",
        ("tasks.human_questions", "tasks.qa_dataset"),
        file_fingerprint(params["questions_path"]),
        file_fingerprint(params["chunks_path"]),
        str(Path(params["out_path"]).resolve()),
    )


@task(name="human-questions", cache_key_fn=_human_questions_key, persist_result=True)
def human_questions(questions_path: str, chunks_path: str, out_path: Path) -> HumanQuestionsRecord:
    """Match questions people wrote to the chunks holding their evidence; write the dataset
    (corpus: every chunk) to ``out_path``, or remove a stale one when none matched."""
    from tasks.human_questions import load_human_questions, resolve_questions

    train, val = load_chunks_file(chunks_path)
    result = resolve_questions(load_human_questions(Path(questions_path)), train + val)
    out_path = Path(out_path)
    for u in result.unresolved:
        _logger().info("human question %s not used: %s", u["id"], u["reason"])
    if result.n_resolved:
        result.dataset.save(out_path)
    else:
        out_path.unlink(missing_ok=True)
        _logger().warning(
            "none of the %d questions in %s was found in the chunks: no evaluation on them",
            result.n_questions, questions_path,
        )
    train_ids = {c.chunk_id for c in train}
    return HumanQuestionsRecord(
        dataset=str(out_path) if result.n_resolved else None,
        n_questions=result.n_questions,
        n_resolved=result.n_resolved,
        unresolved=result.unresolved,
        n_on_train_chunks=sum(bool(train_ids & set(d)) for d in result.dataset.relevant_docs.values()),
    )


# --- 8. registry and promotion ----------------------------------------------------------------


@task(name="register-and-promote", cache_policy=NO_CACHE)
def register_and_promote(
    output_dir: Path, run_id: str, model_dir: Path, fingerprint: str, promote: bool, record: dict[str, Any]
) -> dict[str, Any]:
    """Keep the run's model under ``runs/<run_id>/`` (unless that model is registered already)
    and, if ``promote``, point ``current.json``/``current`` at it. Never cached: it acts on the
    registry as it is now."""
    from tasks.registry import find_run, register_run, run_dir, set_champion

    created = find_run(Path(output_dir), fingerprint) is None
    if created:
        register_run(Path(output_dir), run_id, Path(model_dir), fingerprint, files={}, record=record)
    if promote:
        set_champion(Path(output_dir), run_id, {"promoted_at": record.get("created_at"), **record.get("scores", {}),
                                                **({"retriever": record["retriever"]} if "retriever" in record else {})})
        _logger().info("promoted run %s: %s", run_id, run_dir(Path(output_dir), run_id) / "model")
    return {"run_id": run_id, "created": created, "promoted": promote}
