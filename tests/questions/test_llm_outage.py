"""An OpenAI-compatible server that stops mid-generation and comes back on the same port.

A real HTTP server on 127.0.0.1 answers each prompt with a question about its chunk and
counts the answers per chunk; it goes down after a few answers and is started again a
moment later. A short outage costs a pause; a longer one fails the questions stage with a
transient error that Prefect retries, and the retry asks only what was not answered.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks.core.errors import LLMUnreachableError, TransientError
from tasks.core.fileio import write_jsonl_atomic
from tasks.core.records import Chunk
from tasks.core.settings import Settings
from tasks.questions.generation import MAX_FAILED_BATCHES_IN_A_ROW, batch_size_for, generate_questions

MARK = re.compile(r"编号(\d+)")


class RestartingServer:
    """``/v1/chat/completions`` that writes ``编号N的资料里，动物住在哪里？`` for the chunk marked
    ``编号N``, and after ``down_after`` answers stops listening for ``down_s`` seconds, or,
    given ``back``, until that event is set."""

    def __init__(self, down_after: int, down_s: float, back: threading.Event | None = None) -> None:
        self.down_after = down_after
        self.down_s = down_s
        self.back = back
        self.answered: Counter[int] = Counter()  # chunk number -> answers sent
        self.outages: list[tuple[float, float]] = []  # (stopped, started again), monotonic
        self.lock = threading.Lock()
        self.port = 0
        self.httpd: ThreadingHTTPServer | None = None
        self._start()
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def _start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest's output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                n = int(MARK.search(body["messages"][0]["content"]).group(1))
                time.sleep(0.02)  # a model takes a moment
                data = json.dumps({"choices": [{"message": {"role": "assistant",
                                                            "content": f"编号{n}的资料里，动物住在哪里？"}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                with server.lock:
                    server.answered[n] += 1
                    if sum(server.answered.values()) == server.down_after:
                        threading.Thread(target=server._outage, daemon=True).start()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()  # the port refuses connections from now on
            self.httpd = None

    def _outage(self) -> None:
        self._stop()
        stopped = time.monotonic()
        if self.back is None:
            time.sleep(self.down_s)
        else:
            self.back.wait(self.down_s)
        self._start()  # the same port: allow_reuse_address is set by HTTPServer
        self.outages.append((stopped, time.monotonic()))

    def __enter__(self) -> "RestartingServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()


def _chunks(n: int) -> list[Chunk]:
    return [Chunk(chunk_id=f"c{i}", doc_id="d1", source="zoo.pdf", page=i + 1,
                  text=f"编号{i}的资料：这种袋鼠生活在澳洲南部的第{i}座小岛上，以青草为食，夜间活动。")
            for i in range(n)]


def _settings(url: str, cache_dir: Path, wait_s: float) -> Settings:
    return Settings(llm_backend="openai", llm_model="qwen-test", llm_base_url=url, cache_dir=cache_dir,
                    llm_concurrency=2, llm_unreachable_wait_s=wait_s, generation_retries=0,
                    skip_low_value_chunks=False)


# Short pauses keep the tests fast; the stage itself runs with the defaults.
BACKOFF_S, MAX_BACKOFF_S = 0.1, 0.4


def _writer(settings: Settings):
    from tasks.questions.llm.openai_backend import OpenAIWriter

    return OpenAIWriter.from_settings(settings, backoff_s=BACKOFF_S, max_backoff_s=MAX_BACKOFF_S)


def test_a_server_that_restarts_mid_run_costs_a_pause_not_the_run(tmp_path, caplog):
    n, down_s = 40, 3.0
    # Down for longer than a prompt's own tries (0.1 + 0.2 + 0.4 s) would bridge, in as many
    # batches as fail the run when each counts as a failed batch.
    with RestartingServer(down_after=6, down_s=down_s) as server, caplog.at_level(logging.INFO):
        settings = _settings(server.url, tmp_path / "cache", wait_s=30)
        assert n // batch_size_for(settings) > MAX_FAILED_BATCHES_IN_A_ROW
        result = generate_questions(_chunks(n), settings, _writer, show_progress=False)
    [(stopped, started)] = server.outages
    assert started - stopped >= down_s
    assert {q.chunk_id for q in result.questions} == {f"c{i}" for i in range(n)}
    assert result.stats.failed_chunks == 0
    assert server.answered == Counter(range(n))  # every chunk answered once: nothing asked twice
    assert result.stats.requests_sent == n
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LLM server unreachable")]
    assert waits and re.match(r"LLM server unreachable, retrying in 0.1 s \(attempt 2 of \d+\)", waits[0])
    # One log line per pause, not one per concurrent request.
    from tasks.questions.llm.openai_backend import outage_pauses

    pauses = outage_pauses(30, BACKOFF_S, MAX_BACKOFF_S)
    assert len(waits) <= sum(1 for k in range(len(pauses)) if sum(pauses[:k]) < down_s + 1)
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_a_server_away_longer_than_the_wait_stops_generation_at_once_and_the_rerun_asks_only_the_rest(tmp_path):
    n = 40
    with RestartingServer(down_after=6, down_s=4) as server:
        settings = _settings(server.url, tmp_path / "cache", wait_s=1.5)
        started = time.monotonic()
        with pytest.raises(LLMUnreachableError) as info:
            generate_questions(_chunks(n), settings, _writer, show_progress=False)
        assert isinstance(info.value, TransientError)
        assert time.monotonic() - started < 4  # one wait, not one per remaining batch
        assert "llm_unreachable_wait_s=1.5" in str(info.value) and server.url in str(info.value)
        first = sum(server.answered.values())
        assert 6 <= first < n
        while not server.outages:  # the server comes back
            time.sleep(0.1)
        again = generate_questions(_chunks(n), settings, _writer, show_progress=False)
    assert {q.chunk_id for q in again.questions} == {f"c{i}" for i in range(n)}
    assert again.stats.cache_hits == first and again.stats.requests_sent == n - first
    assert server.answered == Counter(range(n))


@pytest.mark.slow  # a real Prefect flow
def test_the_questions_stage_is_retried_by_prefect_and_its_retry_asks_only_the_rest(tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from tasks.chunks.stage import load_chunks_file
    from tasks.questions.stage import generate

    chunks = _chunks(40)
    chunks_path = tmp_path / "chunks.jsonl"
    write_jsonl_atomic(chunks_path, [{**c.to_dict(), "split": "val" if i % 5 == 0 else "train"}
                                     for i, c in enumerate(chunks)])
    assert sum(map(len, load_chunks_file(chunks_path))) == 40

    # Away until the stage's second try has started: the first try must give up (1.5 s of
    # pauses), and the second finds the server back. A timer would race a loaded machine.
    second_try = threading.Event()

    class SecondTry(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.tries = 0

        def emit(self, record: logging.LogRecord) -> None:
            if "answered before" in record.getMessage():  # each try's first line (no retry rounds here)
                self.tries += 1
                if self.tries == 2:
                    second_try.set()

    watcher = SecondTry()
    generation_log = logging.getLogger("tasks.questions.generation")
    level = generation_log.level
    generation_log.setLevel(logging.INFO)
    generation_log.addHandler(watcher)
    with RestartingServer(down_after=6, down_s=60, back=second_try) as server:
        settings = _settings(server.url, tmp_path / "cache", wait_s=1.5)

        @flow
        def questions_only():
            staged = generate.with_options(retry_delay_seconds=0)
            return staged(chunks_path, settings, tmp_path / "train.json", tmp_path / "val.json",
                          tmp_path / "questions.jsonl", return_state=True)

        try:
            state = questions_only()
        finally:
            generation_log.removeHandler(watcher)
            generation_log.setLevel(level)
    record = state.result()
    with get_client(sync_client=True) as client:
        task_run = client.read_task_run(state.state_details.task_run_id)
    assert task_run.run_count == 2  # failed once with the server away, then retried
    assert len(server.outages) == 1
    assert record.n_train_queries + record.n_val_queries == 40
    assert record.stats["cache_hits"] >= 6  # the answers of the first try, not asked again
    assert server.answered == Counter(range(40))
