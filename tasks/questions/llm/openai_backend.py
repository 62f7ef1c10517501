"""Question writer for any OpenAI-compatible server: ``vllm serve``, Ollama, llama.cpp's server.

Prompts are sent as ``POST {base_url}/chat/completions``, several at once
(``llm_concurrency``), each with its own timeout. Connection errors, timeouts,
``429`` and ``5xx`` answers and unreadable JSON are retried with exponential
backoff; anything else stops the run with an :class:`LLMError` that names the
URL, the status and what the server said.

``chat_template_kwargs: {"enable_thinking": false}`` turns off Qwen3's reasoning
on vLLM and llama.cpp. Servers that reject unknown fields (OpenAI's own API
answers 400 "Unrecognized request argument supplied: chat_template_kwargs")
get the same request again without it.

Example, with a stand-in for the server (``transport``) that is busy once, then answers::

    >>> answers = iter([httpx.Response(503), httpx.Response(200, json={"choices": [{"message": {"content": "水在多少度沸腾？"}}]})])
    >>> with OpenAIWriter("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct", concurrency=16, backoff_s=0.01,
    ...                   transport=httpx.MockTransport(lambda request: next(answers))) as writer:
    ...     writer.complete(["请为“水在100摄氏度沸腾”出一个问题。"])
    ['水在多少度沸腾？']
    >>> writer.requests_sent, writer.attempts
    (1, 2)
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import httpx

from tasks.core.errors import LLMError
from tasks.questions.llm.base import AnswerCallback, BaseWriter, ProgressCallback, Sampling

if TYPE_CHECKING:
    from tasks.core.settings import Settings

__all__ = ["OpenAIWriter"]

logger = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 425, 429}  # plus every 5xx
_TEMPLATE_KWARGS = "chat_template_kwargs"


class _Retryable(Exception):
    """A failure worth another attempt; carries the reason and an optional server-suggested wait."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Cancelled(Exception):
    """Another prompt already failed; this one stops without sending."""


class OpenAIWriter(BaseWriter):
    """Concurrent chat completions against an OpenAI-compatible HTTP server."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "EMPTY",
        sampling: Sampling = Sampling(),
        timeout_s: float = 120.0,
        concurrency: int = 8,
        max_attempts: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        disable_thinking: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__()
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.sampling = sampling
        self.concurrency = max(1, concurrency)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.attempts = 0  # HTTP requests made, retries included
        self._send_template_kwargs = disable_thinking
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            headers={"Authorization": f"Bearer {api_key}"},
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: "Settings", **overrides: Any) -> "OpenAIWriter":
        kwargs: dict[str, Any] = dict(
            api_key=settings.llm_api_key,
            sampling=Sampling.from_settings(settings),
            timeout_s=settings.llm_timeout_s,
            concurrency=settings.llm_concurrency,
        )
        kwargs.update(overrides)
        return cls(settings.llm_base_url, settings.resolved_llm_model(), **kwargs)

    # --- one request -----------------------------------------------------------

    def _payload(self, prompt: str) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            **self.sampling.as_kwargs(),
        }
        if self._send_template_kwargs:
            payload[_TEMPLATE_KWARGS] = {"enable_thinking": False}
        return payload

    def _post(self, prompt: str) -> str:
        """One attempt: the completion text, or _Retryable / LLMError."""
        with self._lock:
            self.attempts += 1
        try:
            response = self._client.post(self.url, json=self._payload(prompt))
        except httpx.TimeoutException as e:
            raise _Retryable(f"timed out ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise _Retryable(f"could not connect ({type(e).__name__}: {e})") from e

        status = response.status_code
        if status >= 500 or status in _RETRY_STATUS:
            raise _Retryable(f"answered {status} {response.reason_phrase}", _retry_after(response))
        if status in (400, 422) and self._send_template_kwargs and _TEMPLATE_KWARGS in response.text:
            logger.info("%s does not accept %s; sending requests without it", self.url, _TEMPLATE_KWARGS)
            self._send_template_kwargs = False
            return self._post(prompt)  # at once, and not as a retry: nothing was wrong with the server
        if status in (401, 403):
            raise LLMError(
                f"{self.url} answered {status} {response.reason_phrase}: the API key was rejected "
                f"(set llm_api_key). Server said: {_excerpt(response.text)}"
            )
        if status == 404:
            raise LLMError(
                f"model {self.model!r} is not served at {self.url} (404 Not Found): check llm_model against "
                f"the server's /models list, and that llm_base_url ends in /v1. Server said: {_excerpt(response.text)}"
            )
        if status >= 400:
            raise LLMError(f"{self.url} answered {status} {response.reason_phrase}: {_excerpt(response.text)}")

        try:
            data = response.json()
            content = data["choices"][0]["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise _Retryable(f"answered {status} with an unreadable body: {_excerpt(response.text)}") from e
        return content or ""

    def _complete_one(self, prompt: str, stop: threading.Event) -> str:
        counted = False
        last: _Retryable | None = None
        for attempt in range(self.max_attempts):
            if stop.is_set():
                raise _Cancelled()
            if not counted:
                with self._lock:
                    self.requests_sent += 1
                counted = True
            try:
                return self._post(prompt)
            except _Retryable as e:
                last = e
                if attempt + 1 == self.max_attempts:
                    break
                delay = self._delay(attempt, e.retry_after)
                logger.warning(
                    "%s %s; retrying in %.1f s (attempt %d of %d)",
                    self.url, e.reason, delay, attempt + 2, self.max_attempts,
                )
                if stop.wait(delay):
                    raise _Cancelled()
        assert last is not None
        hint = " Is the server running?" if "connect" in last.reason else ""
        raise LLMError(f"{self.url} {last.reason}, after {self.max_attempts} attempts.{hint}") from last

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = min(self.backoff_s * 2**attempt, self.max_backoff_s)
        # Jitter keeps concurrent workers from retrying in lockstep against a busy server.
        return base * (0.5 + 0.5 * self._rng.random())

    # --- many requests -----------------------------------------------------------

    def complete(
        self,
        prompts: Sequence[str],
        on_progress: ProgressCallback | None = None,
        on_answer: AnswerCallback | None = None,
    ) -> list[str]:
        if not prompts:
            return []
        stop = threading.Event()
        answers: list[str | None] = [None] * len(prompts)
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts)), thread_name_prefix="llm")
        try:
            futures: dict[Future[str], int] = {
                pool.submit(self._complete_one, prompt, stop): i for i, prompt in enumerate(prompts)
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                finished = 0
                for future in done:
                    error = future.exception()
                    if error is not None and not isinstance(error, _Cancelled):
                        stop.set()
                        raise error
                    if error is None:
                        index = futures[future]
                        answers[index] = future.result()
                        finished += 1
                        if on_answer is not None:
                            on_answer(index, answers[index])
                # Progress and answers are reported here, in the caller's thread, never from a worker.
                if on_progress is not None and finished:
                    on_progress(finished)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
        return [a if a is not None else "" for a in answers]

    def close(self) -> None:
        self._client.close()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _excerpt(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
