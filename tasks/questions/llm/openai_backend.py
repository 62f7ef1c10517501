"""Question writer for any OpenAI-compatible server: ``vllm serve``, Ollama, llama.cpp's server.

Prompts are sent as ``POST {base_url}/chat/completions``, several at once
(``llm_concurrency``), each with its own timeout. Timeouts, dropped connections,
``429`` and ``5xx`` answers and unreadable JSON are retried with exponential
backoff, a few times per prompt; anything else stops the run with an
:class:`LLMError` that names the URL, the status and what the server said.

A refused connection to a server that has answered before in this process is a
restart (``vllm serve`` reloading, a llama.cpp server brought back): every request
waits for it on one shared schedule of growing pauses, logged once per pause, for
at most ``llm_unreachable_wait_s`` in all, and no prompt counts it as a failure.
A server that never answered (not started, a wrong URL) gets only the per-prompt
attempts, so the mistake is reported within seconds. Either way, giving up raises
:class:`LLMUnreachableError`, a transient error that the questions stage retries.

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

from tasks.core.errors import LLMError, LLMUnreachableError
from tasks.questions.llm.base import AnswerCallback, BaseWriter, ProgressCallback, Sampling

if TYPE_CHECKING:
    from tasks.core.settings import Settings

__all__ = ["OpenAIWriter"]

logger = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 425, 429}  # plus every 5xx
_TEMPLATE_KWARGS = "chat_template_kwargs"
# Chat-completion URLs that have answered in this process. A refused connection to one of
# them is a restart worth waiting for, also in the stage's next try (a new writer); to any
# other URL it is most likely a server never started, which waiting would only hide.
_ANSWERED_BEFORE: set[str] = set()


class _Retryable(Exception):
    """A failure worth another attempt; carries the reason and an optional server-suggested wait."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Unreachable(_Retryable):
    """No connection could be made: the server is not (or no longer) listening."""


class _Cancelled(Exception):
    """Another prompt already failed; this one stops without sending."""


def outage_pauses(max_wait_s: float, first_s: float, longest_s: float) -> list[float]:
    """The pauses between tries while a server is unreachable: doubling from ``first_s``,
    each at most ``longest_s``, together ``max_wait_s`` (the last one cut to fit).

    >>> outage_pauses(120, 1, 30)
    [1, 2, 4, 8, 16, 30, 30, 29]
    >>> outage_pauses(0, 1, 30), outage_pauses(2.5, 1, 30)
    ([], [1, 1.5])
    """
    pauses: list[float] = []
    left, pause = max_wait_s, first_s
    while left > 1e-9:
        pauses.append(min(pause, longest_s, left))
        left -= pauses[-1]
        pause *= 2
    return pauses


class _Outage:
    """The server's unreachability, shared by the concurrent requests: one schedule of pauses
    (:func:`outage_pauses`) and one log line per pause, not one per request."""

    def __init__(self, url: str, pauses: list[float]) -> None:
        self.url = url
        self.pauses = pauses
        self._lock = threading.Lock()
        self._since: float | None = None  # first refused connection of this outage
        self._step = 0
        self._retry_at = 0.0

    def pause_s(self, reason: str) -> float | None:
        """How long a request that just found the server unreachable waits before trying again;
        None when this outage has used up its pauses."""
        with self._lock:
            now = time.monotonic()
            if self._since is None:
                self._since = now
            if now < self._retry_at:  # another request has already scheduled the next try
                return self._retry_at - now
            if self._step == len(self.pauses):
                return None
            pause = self.pauses[self._step]
            self._step += 1
            self._retry_at = now + pause
            logger.warning(
                "LLM server unreachable, retrying in %.3g s (attempt %d of %d): %s %s",
                pause, self._step + 1, len(self.pauses) + 1, self.url, reason,
            )
            return pause

    def waited_s(self) -> float:
        with self._lock:
            return 0.0 if self._since is None else time.monotonic() - self._since

    def over(self) -> None:
        """The server answered: the next outage gets the whole wait again."""
        if self._since is None:  # the common case, without the lock
            return
        with self._lock:
            if self._since is not None:
                logger.info("LLM server %s answers again, after %.0f s unreachable", self.url,
                            time.monotonic() - self._since)
                self._since, self._step, self._retry_at = None, 0, 0.0


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
        unreachable_wait_s: float = 120.0,
        disable_thinking: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``max_attempts``, ``backoff_s``, ``max_backoff_s``: the tries of one prompt whose answer
        failed; ``unreachable_wait_s``: how long all prompts wait for a server that has answered
        before and now refuses connections (pauses from ``backoff_s`` up to ``max_backoff_s``)."""
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
        self.unreachable_wait_s = unreachable_wait_s
        self._outage = _Outage(self.url, outage_pauses(unreachable_wait_s, backoff_s, max_backoff_s))
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
            unreachable_wait_s=settings.llm_unreachable_wait_s,
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
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise _Unreachable(f"could not connect ({type(e).__name__}: {e})") from e
        except httpx.TimeoutException as e:
            raise _Retryable(f"timed out ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise _Retryable(f"lost the connection ({type(e).__name__}: {e})") from e

        _ANSWERED_BEFORE.add(self.url)
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
        with self._lock:
            self.requests_sent += 1
        failures = 0
        while True:
            if stop.is_set():
                raise _Cancelled()
            try:
                answer = self._post(prompt)
            except _Unreachable as e:
                if self.url in _ANSWERED_BEFORE:
                    # A restart: wait for it, and do not count it against this prompt.
                    pause = self._outage.pause_s(e.reason)
                    if pause is None:
                        raise LLMUnreachableError(
                            f"{self.url} {e.reason}, for {self._outage.waited_s():.0f} s after it had answered "
                            f"(llm_unreachable_wait_s={self.unreachable_wait_s:g}). Is the server running? "
                            "Answers received so far are cached: once it is back, they are not asked again."
                        ) from e
                    if stop.wait(pause):
                        raise _Cancelled()
                    continue
                failures += 1
                if failures == self.max_attempts:
                    raise LLMUnreachableError(
                        f"{self.url} {e.reason}, after {self.max_attempts} attempts. Is the server running? "
                        "Does llm_base_url name it?"
                    ) from e
                self._wait_before_retry(e, failures, stop)
            except _Retryable as e:
                failures += 1
                if failures == self.max_attempts:
                    raise LLMError(f"{self.url} {e.reason}, after {self.max_attempts} attempts.") from e
                self._wait_before_retry(e, failures, stop)
            else:
                self._outage.over()
                return answer

    def _wait_before_retry(self, error: _Retryable, failures: int, stop: threading.Event) -> None:
        delay = self._delay(failures - 1, error.retry_after)
        logger.warning(
            "%s %s; retrying in %.1f s (attempt %d of %d)",
            self.url, error.reason, delay, failures + 1, self.max_attempts,
        )
        if stop.wait(delay):
            raise _Cancelled()

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
