"""Stage tasks retry transient failures but not a user's error: the condition on Prefect's
failed states, then a real Prefect flow run."""

from __future__ import annotations

import pytest
from prefect import flow, task
from prefect.states import Failed

from tasks.core.errors import (
    BaseModelDownloadError, GenerationFailedError, LLMUnreachableError, PipelineError, SettingsError, TransientError,
)
from tasks.core.stage import retry_unless_user_error


@pytest.mark.parametrize("error", [
    LLMUnreachableError("http://127.0.0.1:8000/v1/chat/completions could not connect, for 120 s"),
    BaseModelDownloadError("could not download base model 'maidalun/bce-embedding-base_v1': connection reset"),
    ConnectionError("a bug's exception, not ours"),
], ids=["llm-unreachable", "download-cut-off", "unexpected"])
def test_the_condition_retries_a_transient_failure(error):
    assert retry_unless_user_error(None, None, Failed(data=error))


@pytest.mark.parametrize("error", [
    SettingsError("--chunk-size: must be greater than 0"),
    GenerationFailedError("62% of the chunks have no question"),
    PipelineError("data/pdf is not a folder"),
], ids=["setting", "generation", "input"])
def test_the_condition_never_retries_a_user_error(error):
    assert not isinstance(error, TransientError)
    assert not retry_unless_user_error(None, None, Failed(data=error))


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


@pytest.mark.slow  # runs a Prefect flow for real
def test_a_transient_error_is_retried_and_a_user_error_is_not():
    attempts, failed = _flaky(ConnectionError("LLM server went away"))
    assert attempts == 3 and failed

    attempts, failed = _flaky(LLMUnreachableError("the LLM server refused connections for 120 s"))
    assert attempts == 3 and failed

    attempts, failed = _flaky(PipelineError("62% of the chunks failed: see the list"))
    assert attempts == 1 and failed
