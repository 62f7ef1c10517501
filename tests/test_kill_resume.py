"""Kill -9 the whole run mid-generation and mid-training, rerun, and compare with a run never killed.

The flow runs as a subprocess in its own process group (``python -m flows.finetune_bce``
and the local Prefect server it starts), on two small real PDFs plus an empty one, with
a tiny real model and the extractive question writer slowed down by
``--extractive-delay-s`` so there is a generation to interrupt. SIGKILL gives the run no
chance to clean up: the run lock stays behind with a dead PID, the generation cache may
end in a torn line, a model may be half written. The rerun must take over the lock,
resume from what was finished, and end with the same datasets as an uninterrupted run:
the same question set, no question twice, no chunk asked twice, and a complete model
that loads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.core.run_lock import LOCK_NAME
from tests.sample_pdfs import SAMPLES, first_page_pdf
from tests.tiny_model import make_tiny_st_model

REPO = Path(__file__).resolve().parent.parent
DATASETS = ("train_dataset.json", "val_dataset.json")


def _pdfs(folder: Path) -> None:
    """The first page of two sample PDFs, and a zero-byte file the run must skip."""
    folder.mkdir(parents=True)
    for src, name in ((SAMPLES[0], "a.pdf"), (SAMPLES[1], "b 文档.pdf")):
        first_page_pdf(src, folder / name)
    (folder / "empty.pdf").write_bytes(b"")


class Run:
    """One ``python -m flows.finetune_bce`` in its own process group, its output collected."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flows.finetune_bce", *args],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # the Prefect server it starts dies with it
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def kill_when(self, condition: Callable[[], bool], timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"the run ended (rc {self.proc.returncode}) before the kill point:\n{self.output[-4000:]}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"kill point not reached in {timeout} s:\n{self.output[-4000:]}")
            time.sleep(0.05)
        self.kill()

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)
        self._reader.join(timeout=10)

    def finish(self, timeout: float = 900) -> str:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the run did not finish in {timeout} s:\n{self.output[-4000:]}")
        self._reader.join(timeout=10)
        assert self.proc.returncode == 0, self.output[-6000:]
        return self.output


def _args(root: Path, name: str, tiny: Path, pdf_dir: Path, delay_s: float = 0.0) -> list[str]:
    """The run's settings; ``delay_s`` slows the question writer down where a kill must land
    mid-generation (it changes no question)."""
    return [
        "--pdf-dir", str(pdf_dir),
        "--output-dir", str(root / name / "out"),
        "--models-dir", str(root / name / "models"),
        "--cache-dir", str(root / name / "cache"),
        "--base-model", str(tiny),
        "--llm-backend", "extractive",
        "--extractive-delay-s", str(delay_s),
        "--chunk-size", "60",
        "--chunk-overlap", "5",
        "--batch-size", "2",
        "--epochs", "12",  # several epochs: a kill after the first checkpoint is mid-training
        "--learning-rate", "1e-3",
        "--warmup-steps", "0",
        "--val-ratio", "0.5",
    ]


def _env(root: Path, name: str, prefect_home) -> dict[str, str]:
    return {
        **os.environ,
        **prefect_home(root / name / "prefect-home"),
        "PYTHONUNBUFFERED": "1",
        # Every run starts a local Prefect server; on a busy 2-core machine that can take minutes.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",
    }


def _cache_lines(cache_dir: Path) -> list[dict]:
    rows = []
    for path in sorted((cache_dir / "generation").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                rows.append({"torn": line})
    return rows


def _datasets(out: Path) -> dict[str, dict]:
    return {name: json.loads((out / name).read_text(encoding="utf-8")) for name in DATASETS}


def _assert_model_complete(model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    assert (model_dir / "modules.json").is_file() and (model_dir / "model.safetensors").is_file()
    assert SentenceTransformer(str(model_dir), local_files_only=True).encode(["还能用吗？"]).shape[0] == 1
    leftovers = [p.name for p in model_dir.parent.iterdir() if p.name.startswith(f".{model_dir.name}.")]
    assert leftovers == [], leftovers


@pytest.fixture(scope="module")
def setup(tmp_path_factory, prefect_home):
    root = tmp_path_factory.mktemp("kill")
    pdf_dir = root / "pdfs"
    _pdfs(pdf_dir)
    tiny = make_tiny_st_model(root / "tiny-model")
    return root, pdf_dir, tiny, lambda name: _env(root, name, prefect_home)


@pytest.fixture(scope="module")
def reference(setup):
    """The run that nobody kills."""
    root, pdf_dir, tiny, env = setup
    Run(_args(root, "reference", tiny, pdf_dir), env("reference")).finish()
    out = root / "reference" / "out"
    return _datasets(out), json.loads((out / "summary.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_kill_mid_generation_then_rerun(setup, reference) -> None:
    root, pdf_dir, tiny, new_env = setup
    ref_datasets, ref_summary = reference
    n_chunks = ref_summary["stages"]["chunks"]["train_chunks"] + ref_summary["stages"]["chunks"]["val_chunks"]
    assert n_chunks > 4, "too few chunks to stop generation in the middle"
    # About 0.2 s an answer: several seconds of generation to interrupt.
    args, env = _args(root, "gen", tiny, pdf_dir, delay_s=0.2), new_env("gen")
    out, cache = root / "gen" / "out", root / "gen" / "cache"

    # Killed once the first batch of answers is on disk, with more still to ask.
    first = Run(args, env)
    first.kill_when(lambda: 0 < len(_cache_lines(cache)))
    answered = [r for r in _cache_lines(cache) if "key" in r]
    assert 0 < len(answered) < n_chunks, "the kill did not land mid-generation"
    assert (out / LOCK_NAME).is_file(), "the killed run's lock should still be there"
    assert not any((out / name).exists() for name in DATASETS), "a dataset exists before generation finished"

    output = Run(args, env).finish()
    assert "is in use by another run" not in output
    assert not (out / LOCK_NAME).exists()
    assert _datasets(out) == ref_datasets

    rows = [r for r in _cache_lines(cache) if "key" in r]
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "a chunk was asked twice"
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    questions = summary["stages"]["questions"]
    assert questions["llm_requests_sent"] == len(rows) - len(answered), "finished answers were asked again"
    for ds in _datasets(out).values():
        assert len(set(ds["queries"].values())) == len(ds["queries"]), "a question is in a dataset twice"
    _assert_model_complete(out / "model")


@pytest.mark.slow
def test_kill_mid_training_then_rerun(setup, reference) -> None:
    root, pdf_dir, tiny, new_env = setup
    ref_datasets, _ = reference
    args, env = _args(root, "train", tiny, pdf_dir), new_env("train")
    out = root / "train" / "out"

    first = Run(args, env)
    started = {}

    def training_under_way() -> bool:
        # After the first epoch's checkpoint, or 3 s into the stage, whichever comes first.
        if "training …" in first.output and "t" not in started:
            started["t"] = time.monotonic()
        if "t" not in started:
            return False
        return any((out / "work").glob("*/checkpoint-*")) or time.monotonic() - started["t"] > 3

    first.kill_when(training_under_way)
    assert not (out / "model" / "modules.json").exists(), "training had finished before the kill"
    assert _datasets(out) == ref_datasets  # written before training started

    output = Run(args, env).finish()
    assert "is in use by another run" not in output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["stages"]["questions"]["llm_requests_sent"] == 0, "generation ran again after the kill"
    assert _datasets(out) == ref_datasets
    _assert_model_complete(out / "model")


@pytest.mark.slow
def test_skipped_file_is_in_the_report(setup, reference) -> None:
    root = setup[0]
    report = (root / "reference" / "out" / "report.md").read_text(encoding="utf-8")
    assert "## Skipped input files" in report
    assert "| empty.pdf | empty file (0 bytes) | copy the file again" in report
    skipped = reference[1]["stages"]["documents"]["skipped_files"]
    assert [s["source"] for s in skipped] == ["empty.pdf"] and skipped[0]["hint"]

    # The same table is the flow run's Prefect artifact, read from the run's own Prefect database.
    import sqlite3

    db = sqlite3.connect(root / "reference" / "prefect-home" / "prefect.db")
    try:
        rows = db.execute("SELECT type, data FROM artifact WHERE key = 'skipped-inputs'").fetchall()
    finally:
        db.close()
    assert len(rows) == 1 and rows[0][0] == "markdown"
    markdown = json.loads(rows[0][1])
    assert markdown.startswith("## 1 input file skipped")
    assert "| empty.pdf | empty file (0 bytes) | copy the file again" in markdown


@pytest.mark.slow
def test_sigterm_ends_the_run_and_its_prefect_server(setup) -> None:
    """``kill PID`` (SIGTERM to the run alone, not its process group) mid-generation: the run
    unwinds, Prefect stops its local server, nothing is left running, the lock is released."""
    psutil = pytest.importorskip("psutil")
    root, pdf_dir, tiny, new_env = setup
    out = root / "term" / "out"
    # Slowed down so that the signal lands mid-generation.
    run = Run(_args(root, "term", tiny, pdf_dir, delay_s=0.4), new_env("term"))
    main = psutil.Process(run.proc.pid)

    def server_up_and_generating() -> bool:
        try:
            servers = [p for p in main.children(recursive=True) if "uvicorn" in " ".join(p.cmdline())]
        except psutil.Error:
            return False
        return bool(servers) and "questions …" in run.output

    deadline = time.monotonic() + 600
    while not server_up_and_generating():
        if run.proc.poll() is not None or time.monotonic() > deadline:
            run.kill()
            pytest.fail(f"the run never reached generation with its server up:\n{run.output[-4000:]}")
        time.sleep(0.1)
    family = main.children(recursive=True)
    assert family, "no child process to check"

    os.kill(run.proc.pid, signal.SIGTERM)
    try:
        rc = run.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail(f"the run did not stop within 120 s of SIGTERM:\n{run.output[-4000:]}")
    run._reader.join(timeout=10)
    _, alive = psutil.wait_procs(family, timeout=30)
    leftover = [f"{p.pid} {' '.join(p.cmdline())}" for p in alive if p.is_running()]
    if leftover:
        os.killpg(run.proc.pid, signal.SIGKILL)
    assert leftover == [], f"left running after SIGTERM: {leftover}"
    assert rc == 128 + signal.SIGTERM, run.output[-4000:]  # exited by itself, not killed by the signal
    assert "stopped by SIGTERM" in run.output
    assert "still running" not in run.output  # unwound by itself, not by the watchdog
    assert not (out / LOCK_NAME).exists(), "the run lock was not released"
