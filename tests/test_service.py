"""The service for real: a Prefect server, a process work pool, the repository's prefect.yaml
deployed with `prefect deploy`, a worker, and the PDF watcher.

The test drops PDFs into the watched folder and checks that the watcher's event makes the
deployment's trigger start exactly one flow run per burst, that a new PDF sends only its own
chunks to the (extractive) question writer, and that the cron schedule's run with no new
PDFs generates and trains nothing. Everything listens on 127.0.0.1 and every process is
stopped by its process group at the end, also when the test fails.

The deployment is the `cpu` one of prefect.yaml as it is (pool, pull step, trigger, cron
schedule, concurrency limit), deployed with one override: `--params` points its settings
at the temporary folders, a tiny model and the extractive backend.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import yaml

from tests.sample_pdfs import SAMPLES, first_page_pdf
from tests.tiny_model import make_tiny_st_model

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QUIET_SECONDS = 2
RUN_TIMEOUT = 240
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

pytestmark = pytest.mark.service


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (the worker's flow-run children too), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _iso(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


class Service:
    """The started processes, their logs, and a small client of the server's REST API."""

    def __init__(self, tmp: Path, env: dict[str, str], api: str):
        self.tmp, self.env, self.api = tmp, env, api
        self.procs: list[subprocess.Popen] = []
        self.http = httpx.Client(base_url=api, timeout=30)

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen(args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str) -> str:
        proc = subprocess.run([str(BIN / "prefect"), *args], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=180)
        assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text()[-4000:]}" for p in sorted(self.tmp.glob("*.log")))

    def deployment(self, name: str) -> dict:
        r = self.http.get(f"/deployments/name/finetune-bce/{name}")
        r.raise_for_status()
        return r.json()

    def runs(self, deployment_id: str) -> list[dict]:
        r = self.http.post("/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}})
        r.raise_for_status()
        return r.json()

    def wait(self, what: str, check, timeout: float = RUN_TIMEOUT, every: float = 0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            for p in self.procs:
                assert p.poll() is None, f"{p.args[:4]} exited with {p.returncode} while waiting for {what}\n{self.logs()}"
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")


def _test_settings(tmp: Path, tiny_model: Path) -> dict:
    """The cpu deployment's settings from prefect.yaml, pointed at the test's folders and tiny model."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    cpu = next(d for d in spec["deployments"] if d["name"] == "cpu")
    return {
        **cpu["parameters"]["settings"],
        "pdf_dir": str(tmp / "inbox"),
        "output_dir": str(tmp / "out"),
        "models_dir": str(tmp / "models"),
        "cache_dir": str(tmp / "cache"),
        "base_model": str(tiny_model),
        "llm_backend": "extractive",
        "chunk_size": 200,
        "chunk_overlap": 10,
        "batch_size": 4,
        "epochs": 1,
        "learning_rate": 1e-3,
        "warmup_steps": 0,
        "val_ratio": 0.34,  # one validation document of two and of three
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory, prefect_home):
    assert len(SAMPLES) >= 3, "data/pdf must hold the sample PDFs"
    tmp = tmp_path_factory.mktemp("service")
    (tmp / "inbox").mkdir()
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        **prefect_home(tmp / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PWD": str(REPO),  # what `{{ $PWD }}` in prefect.yaml becomes: the deploy runs from the repo root
        "PYTHONUNBUFFERED": "1",
    }
    svc = Service(tmp, env, api)
    try:
        svc.start("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)])
        tiny_model = make_tiny_st_model(tmp / "tiny-model")  # while the server starts

        def healthy():
            try:
                return svc.http.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        svc.wait("the server's /api/health", healthy, timeout=120)
        svc.cli("work-pool", "create", "bce-cpu", "--type", "process")
        # Only the cpu deployment: the gpu one would need the bce-gpu pool (test_scale_out.py validates it offline).
        svc.cli("--no-prompt", "deploy", "--name", "cpu",
                "--params", json.dumps({"settings": _test_settings(tmp, tiny_model)}))
        svc.start("worker", [str(BIN / "prefect"), "worker", "start", "--pool", "bce-cpu", "--type", "process"])
        svc.start("watcher", [sys.executable, "-m", "flows.watch_pdfs", "--pdf-dir", str(tmp / "inbox"),
                              "--output-dir", str(tmp / "out"), "--source", "local",
                              "--quiet-seconds", str(QUIET_SECONDS), "--poll-seconds", "0.5"])
        yield svc
    finally:
        for proc in reversed(svc.procs):
            _stop(proc)
        svc.http.close()


def _wait_for_event(svc: Service, after: str | None) -> dict:
    state_file = svc.tmp / "out" / "work" / "pdf_watch_state.json"

    def announced():
        if not state_file.is_file():
            return None
        event = json.loads(state_file.read_text()).get("last_event")
        return event if event and event["id"] != after else None

    return svc.wait("the watcher's event", announced, timeout=60)


def _wait_for_finished_runs(svc: Service, deployment_id: str, n: int) -> list[dict]:
    """The deployment's runs that are not the cron schedule's future ones, once n have finished."""

    def finished():
        runs = [r for r in svc.runs(deployment_id) if not r["auto_scheduled"]]
        done = [r for r in runs if r["state_type"] in TERMINAL]
        return sorted(runs, key=lambda r: r["created"]) if len(done) >= n else None

    # A second run from the same event would show up here, or at the latest in the final
    # count after the cron run (test_cron_fallback_...).
    return svc.wait(f"{n} finished flow run(s)", finished)


def _timing(run: dict, event: dict | None) -> dict:
    start, end = _iso(run["start_time"]), _iso(run["end_time"])
    out = {"run_seconds": round((end - start).total_seconds(), 1)}
    if event:
        out["trigger_to_start_seconds"] = round((start - _iso(event["occurred"])).total_seconds(), 1)
    return out


def _summary(svc: Service) -> dict:
    return json.loads((svc.tmp / "out" / "summary.json").read_text())


def _total_chunks(summary: dict) -> int:
    return summary["stages"]["chunks"]["train_chunks"] + summary["stages"]["chunks"]["val_chunks"]


@pytest.fixture(scope="module")
def scenario(service):
    svc = service
    dep = svc.deployment("cpu")
    inbox = svc.tmp / "inbox"
    seen = {}

    # 1. A burst of two PDFs, a second apart: one event, one run.
    first_page_pdf(SAMPLES[0], inbox / "a.pdf")
    time.sleep(1)
    first_page_pdf(SAMPLES[1], inbox / "b.pdf")
    first_event = _wait_for_event(svc, None)
    runs = _wait_for_finished_runs(svc, dep["id"], 1)
    seen["burst"] = {"event": first_event, "runs": runs, "summary": _summary(svc)}

    # 2. One more PDF: one more run, and only its chunks go to the question writer.
    first_page_pdf(SAMPLES[2], inbox / "c.pdf")
    second_event = _wait_for_event(svc, first_event["id"])
    runs = _wait_for_finished_runs(svc, dep["id"], 2)
    seen["new_pdf"] = {"event": second_event, "runs": runs, "summary": _summary(svc)}

    # 3. The cron schedule's fallback with nothing new: take the scheduler's next run of
    #    this deployment and make it due now, as the clock would.
    def a_scheduled_run():
        return [r for r in svc.runs(dep["id"]) if r["auto_scheduled"] and r["state_type"] == "SCHEDULED"]

    scheduled = sorted(svc.wait("the cron schedule's runs", a_scheduled_run, timeout=60),
                       key=lambda r: r["expected_start_time"])[0]
    now = datetime.now(timezone.utc).isoformat()
    r = svc.http.post(f"/flow_runs/{scheduled['id']}/set_state", json={
        "state": {"type": "SCHEDULED", "name": "Scheduled", "state_details": {"scheduled_time": now}},
        "force": True,
    })
    r.raise_for_status()

    def cron_run_done():
        run = svc.http.get(f"/flow_runs/{scheduled['id']}").json()
        return run if run["state_type"] in TERMINAL else None

    seen["cron"] = {"run": svc.wait("the cron run", cron_run_done), "summary": _summary(svc),
                    "schedule_run": scheduled}
    seen["deployment"] = dep
    seen["service_tmp"] = svc.tmp
    r = svc.http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [seen["new_pdf"]["runs"][1]["id"]]}}})
    r.raise_for_status()
    seen["artifacts"] = {a["key"]: a for a in r.json()}
    seen["event_count"] = len([r for r in svc.runs(dep["id"]) if not r["auto_scheduled"]])

    timings = {
        "burst (2 PDFs)": _timing(seen["burst"]["runs"][0], first_event),
        "one new PDF": _timing(seen["new_pdf"]["runs"][1], second_event),
        "cron, nothing new": _timing(seen["cron"]["run"], None),
    }
    seen["timings"] = timings
    print("\nservice timings:", json.dumps(timings))
    return seen


def test_deployment_is_the_one_in_prefect_yaml(scenario):
    dep = scenario["deployment"]
    assert dep["work_pool_name"] == "bce-cpu"
    assert {"bce-finetune", "cpu"} <= set(dep["tags"])
    assert dep["global_concurrency_limit"]["limit"] == 1
    assert dep["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert [s["schedule"]["cron"] for s in dep["schedules"]] == ["30 3 * * *"]
    assert dep["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]


def test_a_burst_of_pdfs_gives_one_triggered_run_that_completes(scenario):
    burst = scenario["burst"]
    assert sorted(burst["event"]["added"]) == ["a.pdf", "b.pdf"]
    assert len(burst["runs"]) == 1, [r["name"] for r in burst["runs"]]
    run = burst["runs"][0]
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["created_by"]["type"] == "AUTOMATION"
    stages = burst["summary"]["stages"]
    assert stages["questions"]["llm_requests_sent"] == _total_chunks(burst["summary"]) > 0
    assert stages["training"]["steps_run"] > 0


def test_a_new_pdf_sends_only_its_chunks_and_training_uses_all(scenario):
    before, after = scenario["burst"]["summary"], scenario["new_pdf"]["summary"]
    assert scenario["new_pdf"]["event"]["added"] == ["c.pdf"]
    runs = scenario["new_pdf"]["runs"]
    assert len(runs) == 2, [r["name"] for r in runs]
    assert runs[1]["state_type"] == "COMPLETED" and runs[1]["created_by"]["type"] == "AUTOMATION"
    q = after["stages"]["questions"]
    assert after["stages"]["documents"]["documents"] == 3
    assert q["llm_requests_sent"] == _total_chunks(after) - _total_chunks(before) > 0
    assert q["cache_hits"] == _total_chunks(before)
    assert after["stages"]["training"]["steps_run"] > 0
    assert after["stages"]["training"]["pairs"] > before["stages"]["training"]["pairs"]


def test_cron_fallback_with_nothing_new_generates_and_trains_nothing(scenario):
    cron = scenario["cron"]
    assert cron["run"]["state_type"] == "COMPLETED", cron["run"]["state"]
    assert cron["run"]["auto_scheduled"] is True
    stages = cron["summary"]["stages"]
    assert stages["questions"]["llm_requests_sent"] == 0
    assert stages["training"]["steps_run"] == 0
    # The two triggered runs, and no run from a second trigger firing.
    assert scenario["event_count"] == 2


def test_the_run_shows_its_stages_metrics_and_model_in_the_ui(scenario):
    artifacts = scenario["artifacts"]
    assert {"finetune-metrics", "finetune-stages", "finetune-model", "finetune-report"} <= set(artifacts)
    stages = artifacts["finetune-stages"]["data"]
    stages = json.loads(stages) if isinstance(stages, str) else stages
    assert {row["stage"] for row in stages} >= {"documents", "questions", "training"}
    model_link = artifacts["finetune-model"]["data"]
    assert str(scenario["service_tmp"] / "out" / "model") in model_link
