"""Stage tasks retry transient failures but not a user's error (a real Prefect flow run)."""

from __future__ import annotations

import pytest
from prefect import flow, task

from tasks.core.errors import PipelineError
from tasks.core.stage import retry_unless_user_error

pytestmark = pytest.mark.slow  # runs a Prefect flow for real


def _flaky(error: Exception):
    calls = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_unless_user_error)
    def stage():
        calls.append(1)
        raise error

    @flow
    def pipeline() -> bool:
        return stage(return_state=True).is_failed()

    failed = pipeline()
    return len(calls), failed


def test_a_transient_error_is_retried_and_a_user_error_is_not():
    attempts, failed = _flaky(ConnectionError("LLM server went away"))
    assert attempts == 3 and failed

    attempts, failed = _flaky(PipelineError("62% of the chunks failed: see the list"))
    assert attempts == 1 and failed
