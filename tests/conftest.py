"""Test environment: offline, no telemetry, and a Prefect home of the test session's own.

Prefect's cache records would otherwise survive between test runs (and leak into
the user's ~/.prefect), turning a real run into a silent cache hit.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable

_PREFECT_HOME = tempfile.mkdtemp(prefix="bce-test-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ["PREFECT_LOGGING_TO_API_BATCH_INTERVAL"] = "0.3"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _var in list(os.environ):
    if _var.startswith("BCE_"):  # a developer's settings must not change what tests see
        del os.environ[_var]

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory) -> Callable[[Path], dict[str, str]]:
    """``prefect_home(folder)``: a Prefect home of its own for a subprocess, ready to use, as
    the environment variables that point the subprocess at it.

    A flow in a new home makes its local server migrate a new database and register Prefect's
    block types before the flow starts: about 12 s on 2 cores, for each of the seven homes of
    the suite's flow runs in subprocesses. One home is prepared per test session (a flow that
    does nothing) and copied; a copy's server starts without either step.
    """
    template = tmp_path_factory.mktemp("prefect-home-template")
    prepared = False

    def new_home(folder: Path) -> dict[str, str]:
        nonlocal prepared
        if not prepared:
            noop = "from prefect import flow; flow(name='prepare-home')(lambda: None)()"
            done = subprocess.run([sys.executable, "-c", noop], env={**os.environ, "PREFECT_HOME": str(template)},
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                pytest.fail(f"preparing a Prefect home in {template} failed (a flow that does nothing, "
                            f"exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
            prepared = True
        shutil.copytree(template, folder, dirs_exist_ok=True)
        # The block types are registered already, and memo_store.toml in the copy says so.
        return {"PREFECT_HOME": str(folder), "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false"}

    return new_home


def _shared_data(name: str) -> Path:
    """A file of ../shared/data; its tests are skipped when it is absent, unless
    REQUIRE_SHARED_DATA is set (then absence fails, so CI cannot pass by skipping)."""
    path = REPO.parent / "shared" / "data" / name
    if not path.is_file():
        if os.environ.get("REQUIRE_SHARED_DATA"):
            pytest.fail(f"REQUIRE_SHARED_DATA is set but {path} does not exist")
        pytest.skip(f"{name} not beside the repository ({path})")
    return path


@pytest.fixture(scope="session")
def cmrc_json() -> Path:
    """The CMRC 2018 trial file (Wikipedia, CC BY-SA 4.0) beside the repository."""
    return _shared_data("cmrc2018_trial.json")


@pytest.fixture(scope="session")
def cjrc_json() -> Path:
    """The CJRC legal dev file (court judgments; research use, never copied into the repository)."""
    return _shared_data("cjrc_legal_dev.json")
