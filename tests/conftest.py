"""Test environment: offline, no telemetry, and a Prefect home of the test session's own.

Prefect's cache records would otherwise survive between test runs (and leak into
the user's ~/.prefect), turning a real run into a silent cache hit.
"""

import os
import tempfile

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
