"""Versioned runs and what search serves, inside a run's output folder.

Layout under ``output_dir``::

    runs/<run_id>/            one folder per distinct fine-tuned model, never overwritten
        model/                a copy of the model as it was evaluated
        reranker/             a copy of its reranker, when the run trained one
        expansion.json        its questions by chunk, for BM25 over each chunk with its questions
        run.json              id, model fingerprint, creation time, its retriever and index settings
        metrics.json, report.md, metrics.png, promotion.json, summary.json
    current.json              what search serves: the champion {"run_id", "model_path": "runs/<id>/model",
                              "retriever", "index_settings", ...}, or, before any run was promoted,
                              the base model ("run_id": null) with the retriever the last run chose for it
    current -> runs/<id>/model   a relative symlink to the champion's model, where the OS allows one

``current.json`` is the one record of what is served: ``flows.query`` searches with it,
and a run's report, model card and ``summary.json`` name it (``tasks.registry.release``).
``current`` is a convenience for ``SentenceTransformer("outputs/finetune_bce/current")``
(symlinks need privileges on Windows). Both are replaced atomically. A run folder is
assembled under a hidden name and renamed into place, so ``runs/`` never shows half a run.

Example::

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> (out / "model").mkdir()  # stands in for the sentence-transformers folder training wrote
    >>> _ = (out / "model" / "modules.json").write_text("[]", encoding="utf-8")
    >>> run_id = new_run_id(datetime(2026, 11, 27, 15, 1, 2), "ab12cd34ef")  # the flow passes now (UTC)
    >>> register_run(out, run_id, out / "model", "ab12cd34ef", {"metrics.json": "{}"}).relative_to(out).as_posix()
    'runs/20261127-150102-ab12cd34'
    >>> set_champion(out, run_id, {"retriever": {"kind": "hybrid", "w_dense": 0.5}})
    >>> read_champion(out).model_path.relative_to(out).as_posix()
    'runs/20261127-150102-ab12cd34/model'
    >>> read_serving(out).spec.label
    'hybrid w=0.5'
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.fileio import replace_folder, write_json_atomic

if TYPE_CHECKING:
    from tasks.retrieval.retriever import RetrieverSpec

logger = logging.getLogger(__name__)

RUNS_DIR = "runs"
POINTER = "current.json"
LINK = "current"
RUN_RECORD = "run.json"
RERANKER_DIR = "reranker"  # a run folder's reranker, beside its model
EXPANSION_FILE = "expansion.json"  # a run's questions by chunk, which its expanded BM25 indexes


@dataclass(frozen=True)
class Champion:
    run_id: str
    model_path: Path
    model_fingerprint: str | None
    reranker_fingerprint: str | None = None  # None: the run has no reranker
    serving: dict[str, Any] = field(default_factory=dict, compare=False)  # its current.json


@dataclass(frozen=True)
class Serving:
    """What search serves, as ``current.json`` records it."""

    run_id: str | None  # the champion's run; None: no run promoted yet, the base model
    model_path: Path
    reranker_path: Path | None  # the cross-encoder the retriever reranks with, if it reranks
    record: dict[str, Any]  # current.json as written
    expansion_path: Path | None = None  # the questions by chunk its BM25 indexes, if it expands

    @property
    def spec(self) -> "RetrieverSpec":
        return served_spec(self.record)

    @property
    def index_settings(self) -> dict[str, Any] | None:
        """How the PDFs were read and chunked for the served model; None: not recorded (an older run)."""
        return self.record.get("index_settings")

    @property
    def origin(self) -> str:
        """Whose model it is, for a person: ``run <id>`` or the base model."""
        return f"run {self.run_id}" if self.run_id else "the base model (no run promoted yet)"


def served_spec(record: dict[str, Any]) -> "RetrieverSpec":
    """The retriever a ``current.json`` record serves; a record without one (a run older than
    the retriever's choice) serves the model alone."""
    from tasks.retrieval.retriever import RetrieverSpec

    retriever = record.get("retriever")
    return RetrieverSpec.from_dict(retriever) if retriever else RetrieverSpec("dense")


def new_run_id(now: datetime, model_fingerprint: str) -> str:
    """``YYYYmmdd-HHMMSS-<first 8 hex of the model fingerprint>``: sorts by time, names the model.

    >>> new_run_id(datetime(2026, 11, 27, 15, 1, 2), "ab12cd34ef")
    '20261127-150102-ab12cd34'
    """
    return f"{now:%Y%m%d-%H%M%S}-{model_fingerprint[:8]}"


def run_dir(output_dir: Path, run_id: str) -> Path:
    return Path(output_dir) / RUNS_DIR / run_id


def find_run(output_dir: Path, model_fingerprint: str, reranker_fingerprint: str | None = None) -> str | None:
    """Id of the registered run whose model (and reranker; None: none) has this fingerprint, if any."""
    runs = Path(output_dir) / RUNS_DIR
    if not runs.is_dir():
        return None
    for record in sorted(runs.glob(f"*/{RUN_RECORD}")):
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            if (data.get("model_fingerprint"), data.get("reranker_fingerprint")) == (model_fingerprint,
                                                                                      reranker_fingerprint):
                return record.parent.name
        except (OSError, json.JSONDecodeError):
            logger.warning("ignoring unreadable %s", record)
    return None


def register_run(
    output_dir: Path,
    run_id: str,
    model_dir: Path,
    model_fingerprint: str,
    files: dict[str, str | bytes],
    record: dict[str, Any] | None = None,
    folders: dict[str, Path] | None = None,
) -> Path:
    """Copy ``model_dir`` (and each of ``folders`` under its name, e.g. the reranker) and
    write ``files`` into ``runs/<run_id>/``, all in one rename.

    Copies, not hard links: a later run may rewrite the files of ``model_dir`` in place,
    and a link would silently change the registered model with them.

    Raises ``FileExistsError`` if the run folder exists: a run is never overwritten.
    """
    final = run_dir(output_dir, run_id)
    if final.exists():
        raise FileExistsError(f"{final} exists already; runs are never overwritten")
    with replace_folder(final, if_exists="fail") as tmp:
        shutil.copytree(model_dir, tmp / "model")
        for name, folder in (folders or {}).items():
            shutil.copytree(folder, tmp / name)
        for name, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            (tmp / name).write_bytes(data)
        meta = {"run_id": run_id, "model_fingerprint": model_fingerprint, **(record or {})}
        (tmp / RUN_RECORD).write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return final


def read_serving(output_dir: Path) -> Serving | None:
    """What ``current.json`` says search serves, or None if there is none or it is unreadable (logged)."""
    pointer = Path(output_dir) / POINTER
    if not pointer.is_file():
        return None
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
        model_path = Path(output_dir) / data["model_path"]  # relative to output_dir, or absolute (the base model)
        run_id = data["run_id"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        logger.warning("%s is unreadable (%s): treating this run as the first", pointer, e)
        return None
    reranker, expansion = data.get("reranker_path"), data.get("expansion_path")
    return Serving(run_id, model_path, Path(output_dir) / reranker if reranker else None, data,
                   Path(output_dir) / expansion if expansion else None)


def read_champion(output_dir: Path) -> Champion | None:
    """The promoted run, or None if none was promoted or its model folder is gone (logged)."""
    serving = read_serving(output_dir)
    if serving is None or serving.run_id is None:
        return None
    if not (serving.model_path / "modules.json").is_file():
        logger.warning(
            "the champion's model %s is missing: treating this run as the first (restore it or delete %s)",
            serving.model_path, Path(output_dir) / POINTER,
        )
        return None
    data = serving.record
    return Champion(run_id=serving.run_id, model_path=serving.model_path,
                    model_fingerprint=data.get("model_fingerprint"),
                    reranker_fingerprint=data.get("reranker_fingerprint"), serving=data)


def champion_record(run_id: str, run_record: dict[str, Any], info: dict[str, Any] | None = None) -> dict[str, Any]:
    """``current.json`` for the registered run ``run_id`` whose ``run.json`` is ``run_record``:
    its model, its fingerprints, the reranker folder when the retriever in ``info`` reranks,
    its questions by chunk when it expands BM25, and ``info`` (retriever, index settings, scores)."""
    info = dict(info or {})
    reranks = bool((info.get("retriever") or {}).get("rerank_k"))
    expands = bool((info.get("retriever") or {}).get("expanded"))
    return {"run_id": run_id, "model_path": f"{RUNS_DIR}/{run_id}/model",
            "model_fingerprint": run_record.get("model_fingerprint"),
            **({"reranker_fingerprint": run_record["reranker_fingerprint"]}
               if run_record.get("reranker_fingerprint") else {}),
            **({"reranker_path": f"{RUNS_DIR}/{run_id}/{RERANKER_DIR}"} if reranks else {}),
            **({"expansion_path": f"{RUNS_DIR}/{run_id}/{EXPANSION_FILE}"} if expands else {}),
            **info}


def set_champion(output_dir: Path, run_id: str, info: dict[str, Any] | None = None) -> None:
    """Point ``current.json`` (and the ``current`` symlink, where possible) at a registered run."""
    output_dir = Path(output_dir)
    model_rel = f"{RUNS_DIR}/{run_id}/model"
    if not (output_dir / model_rel / "modules.json").is_file():
        raise FileNotFoundError(f"{output_dir / model_rel} is not a registered model; register the run first")
    record = json.loads((run_dir(output_dir, run_id) / RUN_RECORD).read_text(encoding="utf-8"))
    write_json_atomic(output_dir / POINTER, champion_record(run_id, record, info))
    _point_link(output_dir / LINK, Path(model_rel))


def serve_base_model(output_dir: Path, record: dict[str, Any]) -> None:
    """Before any run is promoted: point ``current.json`` at the base model (``record``, with
    ``"run_id": None`` and the base model's absolute ``model_path``)."""
    if record.get("run_id") is not None or not (Path(record["model_path"]) / "modules.json").is_file():
        raise ValueError(f"not a base model record: {record}")
    write_json_atomic(Path(output_dir) / POINTER, record)


def _point_link(link: Path, target: Path) -> None:
    tmp = link.parent / f".{link.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        os.symlink(target, tmp, target_is_directory=True)
        os.replace(tmp, link)  # atomic on POSIX: readers see the old or the new champion
    except OSError as e:  # Windows without the privilege, or a file system without links
        tmp.unlink(missing_ok=True)
        if link.is_symlink():
            link.unlink()  # a stale link would name the previous champion
        logger.info("no %s symlink (%s); %s names the champion", link, e, POINTER)


