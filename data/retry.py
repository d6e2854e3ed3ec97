"""Bounded retries with exponential backoff and full jitter, and request/token rate limits, for API calls.

The ``openai`` clients are built with ``max_retries=0`` so that this module is the one place that
decides what is retried: rate limits (429), server errors (5xx, 408, 409), timeouts, dropped
connections and malformed replies (a body that is not JSON, or JSON without a usable message).
Everything else (a bad request, a wrong key) is raised at once: retrying cannot fix it.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

import openai

T = TypeVar("T")
RETRYABLE_STATUS = {408, 409, 429}


class MalformedResponse(Exception):
    """A 200 reply that carries no usable message (no choices, no text, missing fields)."""


class RetriesExhausted(Exception):
    """Every attempt failed with a retryable error; ``last`` is the final one."""

    def __init__(self, what: str, attempts: int, last: BaseException):
        self.what, self.attempts, self.last = what, attempts, last
        super().__init__(f"{what}: gave up after {attempts} attempts; last error: {describe(last)}")


def describe(err: BaseException) -> str:
    """A one-line description of an API error, without request headers (they carry the key)."""
    if isinstance(err, openai.APIStatusError):
        return f"HTTP {err.status_code}: {str(err.message)[:200]}"
    return f"{type(err).__name__}: {str(err)[:200]}"


def is_retryable(err: BaseException) -> bool:
    if isinstance(err, (openai.APIConnectionError, MalformedResponse, json.JSONDecodeError,
                        openai.APIResponseValidationError)):
        return True  # APITimeoutError is an APIConnectionError
    if isinstance(err, openai.APIStatusError):
        return err.status_code >= 500 or err.status_code in RETRYABLE_STATUS
    return False


def retry_after(err: BaseException) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``retry-after``), if it said."""
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                return None  # an HTTP date: fall back to our own backoff
    return None


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, asked: float | None = None) -> float:
        """Full jitter: uniform in [0, base * 2**attempt], capped; never less than the server asked."""
        wait = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** attempt))
        if asked is not None:
            wait = max(wait, min(asked, self.max_delay))
        return wait


async def call_with_retries(fn: Callable[[int], Awaitable[T]], policy: RetryPolicy, what: str,
                            on_retry: Callable[[BaseException], None] | None = None) -> T:
    """``await fn(attempt)`` until it succeeds, a non-retryable error is raised, or retries run out."""
    for attempt in range(policy.max_retries + 1):
        try:
            return await fn(attempt)
        except Exception as err:
            if not is_retryable(err):
                raise
            if attempt == policy.max_retries:
                raise RetriesExhausted(what, attempt + 1, err) from None
            if on_retry is not None:
                on_retry(err)
            await asyncio.sleep(policy.delay(attempt, retry_after(err)))
    raise AssertionError("unreachable")


class RateLimiter:
    """Requests-per-minute and tokens-per-minute token buckets, each holding one minute's allowance.

    ``acquire(estimate)`` waits (in arrival order) until a request and ``estimate`` tokens are
    available; ``settle(estimate, actual)`` corrects the token bucket once the usage is known, so
    an underestimate is paid back by the next requests.
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None, clock=time.monotonic):
        self.rpm, self.tpm, self.clock = rpm, tpm, clock
        self.requests = float(rpm or 0)
        self.tokens = float(tpm or 0)
        self.updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        elapsed, self.updated = now - self.updated, now
        if self.rpm:
            self.requests = min(self.rpm, self.requests + elapsed * self.rpm / 60)
        if self.tpm:
            self.tokens = min(self.tpm, self.tokens + elapsed * self.tpm / 60)

    def _wait_needed(self, estimate: int) -> float:
        waits = [0.0]
        if self.rpm and self.requests < 1:
            waits.append((1 - self.requests) * 60 / self.rpm)
        if self.tpm:
            need = min(estimate, self.tpm)  # a request bigger than the bucket waits for a full one
            if self.tokens < need:
                waits.append((need - self.tokens) * 60 / self.tpm)
        return max(waits)

    async def acquire(self, estimate: int = 0) -> None:
        if not (self.rpm or self.tpm):
            return
        async with self._lock:
            while True:
                self._refill()
                wait = self._wait_needed(estimate)
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self.rpm:
                self.requests -= 1
            if self.tpm:
                self.tokens -= estimate

    def settle(self, estimate: int, actual: int) -> None:
        if self.tpm:
            self.tokens -= actual - estimate
