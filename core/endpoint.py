"""The one client for OpenAI-compatible endpoints: the simulator, the teacher, every judge and embedder.

:class:`Endpoint` wraps ``openai.AsyncOpenAI`` and relies on the client's own retries (429 with its
``Retry-After``, 408/409/5xx, timeouts, dropped connections; exponential back-off with jitter) for
``max_retries`` attempts. It adds only what the client lacks:

* malformed replies (a 200 whose body is not JSON, or has no message text) are retried too;
* request and token budgets per minute (:class:`RateLimiter`), for providers' RPM/TPM limits;
* what the calls of each asyncio task cost (:class:`CallStats`: retries, tokens, and money at the
  endpoint's :class:`Prices`), so each job of ``core.engine`` (a session, a judgment) reports its own;
* several base URLs serving the same model (vLLM replicas, one per GPU): each call goes to the one
  with the fewest calls in flight, so a large run uses them all;
* keys only from environment variables: the OpenAI API without a key is an error, a local server
  without one gets a placeholder.

Many calls at once (bounded concurrency, resume, failures counted) are ``core.engine``'s business.
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

import openai

from core.errors import UsageError

OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
MAX_RETRIES = 6  # retries per request, in every command (core.options' --max-retries)
# Errors no retry can get past: a whole run stops on them instead of failing every request.
FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)


class MalformedResponse(Exception):
    """A 200 reply that carries no usable message (not JSON, no choices, no text)."""


class RetriesExhausted(Exception):
    """Every attempt failed with a retryable error; ``last`` is the final one."""

    def __init__(self, what: str, attempts: int, last: BaseException):
        self.what, self.attempts, self.last = what, attempts, last
        super().__init__(f"{what}: gave up after {attempts} attempts; last error: {describe(last)}")


@dataclass
class Reply:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


def describe(err: BaseException) -> str:
    """A one-line description of an API error, without request headers (they carry the key)."""
    if isinstance(err, openai.APIStatusError):
        return f"HTTP {err.status_code}: {str(err.message)[:200]}"
    return f"{type(err).__name__}: {str(err)[:200]}"


# A 200 reply without a usable message: retried here (the openai client does not).
MALFORMED = (MalformedResponse, openai.APIResponseValidationError, json.JSONDecodeError)


def is_retryable(err: BaseException) -> bool:
    """What the openai client itself retries (it has already, when this is raised), plus malformed replies."""
    if isinstance(err, (openai.APIConnectionError, *MALFORMED)):
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code >= 500 or err.status_code in (408, 409, 429)
    return False


def is_context_exceeded(err: BaseException) -> bool:
    """A 400 saying the prompt does not fit: OpenAI's code, or vLLM's message (vLLM sends no code)."""
    return isinstance(err, openai.BadRequestError) and (
        getattr(err, "code", None) == "context_length_exceeded"
        or "maximum context length" in str(getattr(err, "message", "")).lower())


@dataclass
class Prices:
    """USD per million prompt and completion tokens (a provider's price list)."""
    prompt: float = 0.0
    completion: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1e6


@dataclass
class CallStats:
    """What the calls made from one asyncio task took: retries, tokens, and cost at the endpoints' prices."""
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: "CallStats") -> None:
        self.retries += other.retries
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost += other.cost


_CALLS: contextvars.ContextVar[CallStats | None] = contextvars.ContextVar("platolm_calls", default=None)


def track_calls(stats: CallStats | None = None) -> CallStats:
    """Count the calls made from this task on (``core.engine`` starts one count per job); returns the count."""
    stats = stats or CallStats()
    _CALLS.set(stats)
    return stats


def current_calls() -> CallStats:
    """This task's count (a new one if nothing is counting yet)."""
    return _CALLS.get() or track_calls()


def note_usage(prompt_tokens: int, completion_tokens: int, prices: Prices | None = None) -> None:
    """Add one call's tokens (and their cost) to this task's count; a local model's calls use it too."""
    stats = _CALLS.get()
    if stats is not None:
        stats.prompt_tokens += prompt_tokens
        stats.completion_tokens += completion_tokens
        stats.cost += prices.cost(prompt_tokens, completion_tokens) if prices else 0.0


async def _note_retry(request) -> None:
    """httpx request hook: the openai client numbers its attempts in ``x-stainless-retry-count``."""
    if request.headers.get("x-stainless-retry-count", "0") != "0":
        _bump()


def _bump() -> None:
    stats = _CALLS.get()
    if stats is not None:
        stats.retries += 1


def api_key(key_env: str | None, base_url: str | None, what: str) -> str:
    key = os.environ.get(key_env) if key_env else None
    if key:
        return key
    if base_url is None or base_url.rstrip("/") == OPENAI_URL:
        raise UsageError(f"{what}: no API key; set the environment variable {key_env or DEFAULT_KEY_ENV}, "
                         f"or point the base URL option at a local OpenAI-compatible server")
    return "EMPTY"  # local servers without auth


class Endpoint:
    """One model behind one or more OpenAI-compatible base URLs (see the module docstring)."""

    def __init__(self, base_url: str | Sequence[str] | None, model: str | None = None,
                 key_env: str | None = DEFAULT_KEY_ENV, max_retries: int = MAX_RETRIES, timeout: float = 600.0,
                 rpm: float | None = None, tpm: float | None = None, what: str = "endpoint",
                 prices: Prices | None = None):
        urls = [base_url] if base_url is None or isinstance(base_url, str) else list(base_url)
        self.base_urls, self.model, self.max_retries, self.what = urls, model, max_retries, what
        self.prices = prices
        self.limiter = RateLimiter(rpm, tpm)
        self.clients = [openai.AsyncOpenAI(
            api_key=api_key(key_env, url, what), base_url=url or OPENAI_URL, max_retries=max_retries,
            timeout=openai.Timeout(timeout, connect=min(30.0, timeout)),
            http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [_note_retry]})) for url in urls]
        self.in_flight = [0] * len(urls)
        self.calls = [0] * len(urls)  # finished calls per base URL, to show that every replica was used

    @property
    def base_url(self) -> str | None:
        return self.base_urls[0]

    async def model_name(self) -> str:
        """The model asked for, else the first one the (first) endpoint lists."""
        if self.model is None:
            self.model = (await self.list_models())[0]["id"]
        return self.model

    async def list_models(self) -> list[dict]:
        """The first endpoint's ``/v1/models`` entries (vLLM and model.serve add the checkpoint path as ``root``)."""
        try:
            page = await self.clients[0].models.list()
        except openai.APIError as err:
            raise UsageError(f"could not list the models at {self.base_url} ({describe(err)}); "
                             f"name the model") from None
        if not page.data:
            raise UsageError(f"{self.base_url} lists no models; name the model")
        return [m.model_dump() for m in page.data]

    async def _call(self, fn: Callable[[openai.AsyncOpenAI], Awaitable[Any]], estimate: int = 0) -> Any:
        """``fn(client)`` on the least busy base URL, with malformed replies retried; a retryable error
        left over means the client's own retries ran out."""
        for attempt in range(self.max_retries + 1):
            await self.limiter.acquire(estimate)
            i = min(range(len(self.clients)), key=lambda k: (self.in_flight[k], self.calls[k]))
            self.in_flight[i] += 1
            try:
                result = await fn(self.clients[i])
                self.calls[i] += 1
                return result
            except MALFORMED as err:
                if attempt == self.max_retries:
                    raise RetriesExhausted(self.what, attempt + 1, err) from None
                _bump()
                await asyncio.sleep(min(8.0, 0.5 * 2 ** attempt))
            except openai.APIError as err:
                if is_retryable(err):  # the client has used up its own retries on it
                    raise RetriesExhausted(self.what, self.max_retries + 1, err) from None
                raise
            finally:
                self.in_flight[i] -= 1
        raise AssertionError("unreachable")

    async def chat(self, messages: Sequence[dict], allow_empty: bool = False, **params) -> Reply:
        """One chat completion; ``params`` left as None are not sent (the endpoint's defaults apply).

        An empty message is malformed (retried) unless ``allow_empty``: a simulator's empty question is news.
        """
        model = await self.model_name()
        sent = {k: v for k, v in params.items() if v is not None}
        estimate = sum(len(str(m.get("content", ""))) for m in messages) // 4 + (sent.get("max_tokens") or 512)

        async def attempt(client) -> Reply:
            resp = await client.chat.completions.create(model=model, messages=list(messages), **sent)
            try:
                choice = resp.choices[0]
                text, finish = choice.message.content, choice.finish_reason
            except (AttributeError, IndexError, TypeError):
                raise MalformedResponse("the reply has no choices[0].message") from None
            if not isinstance(text, str) or not (text.strip() or allow_empty):
                raise MalformedResponse("the reply's message has no text")
            usage = getattr(resp, "usage", None)
            used = getattr(usage, "total_tokens", None)
            self.limiter.settle(estimate, used or estimate)
            reply = Reply(text, finish, getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None))
            note_usage(reply.prompt_tokens or 0, reply.completion_tokens or 0, self.prices)
            return reply

        return await self._call(attempt, estimate)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Embeddings of ``texts``, in order."""
        model = await self.model_name()

        async def attempt(client):
            resp = await client.embeddings.create(model=model, input=texts)
            if len(resp.data) != len(texts):
                raise MalformedResponse(f"{len(resp.data)} embeddings for {len(texts)} inputs")
            note_usage(getattr(getattr(resp, "usage", None), "prompt_tokens", None) or 0, 0, self.prices)
            return [d.embedding for d in sorted(resp.data, key=lambda d: d.index)]

        return await self._call(attempt, sum(len(t) for t in texts) // 4)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


class RateLimiter:
    """Requests-per-minute and tokens-per-minute token buckets, each holding one minute's allowance.

    ``acquire(estimate)`` waits (in arrival order) until a request and ``estimate`` tokens are
    available; ``settle(estimate, actual)`` corrects the token bucket once the usage is known, so
    an underestimate is paid back by the next requests.
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None, clock=time.monotonic):
        self.rpm, self.tpm, self.clock = rpm, tpm, clock
        self.requests, self.tokens = float(rpm or 0), float(tpm or 0)
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
