"""Calling an OpenAI-compatible model many times: one client, bounded concurrency and retries, resumable logs.

Every paid evaluation (MT-Bench answers and judgments, question-quality judgments) goes through here:

* :func:`make_client` builds an :class:`Endpoint`: an ``openai.AsyncOpenAI`` client (API key from an
  environment variable only) whose calls are retried by ``data.retry`` (the project's one retry
  policy: 429/5xx/timeouts/dropped connections/malformed replies, exponential back-off with jitter,
  honouring ``Retry-After``) at most ``max_retries`` times.
* :func:`run_jobs` runs coroutines with at most ``concurrency`` in flight, a tqdm bar, and hands each
  result to a callback as soon as it is done, so finished work is written before the next one ends;
  a job that still fails after its retries is counted and reported, never retried forever.
* :class:`JsonlLog` is an append-only JSONL file: each finished record is one flushed line, so a crash
  or Ctrl-C loses at most the line being written, and a torn last line is cut off on the next read (`model.conversation.read_append_log`).
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

from data.retry import MalformedResponse, RetryPolicy, call_with_retries
from model.conversation import BadRecord, atomic_write, read_append_log

DEFAULT_KEY_ENV = "OPENAI_API_KEY"


def run_command(parser, argv: list[str] | None = None) -> int:
    """Run an eval CLI's chosen sub-command; a SetupError (missing input, no package) is one line, exit 2."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


class SetupError(RuntimeError):
    """Something is missing before any request is made (files, key, ...); the message says what."""


@dataclass
class Endpoint:
    client: Any  # openai.AsyncOpenAI, built without its own retries
    policy: RetryPolicy

    async def chat(self, model: str, messages: list[dict], temperature: float = 0.0,
                   max_tokens: int = 2048) -> str:
        """One chat completion's text, retried per the policy."""
        async def attempt(_):
            resp = await self.client.chat.completions.create(model=model, messages=messages,
                                                             temperature=temperature, max_tokens=max_tokens)
            if not resp.choices or resp.choices[0].message is None or resp.choices[0].message.content is None:
                raise MalformedResponse("a reply without message text")
            return resp.choices[0].message.content
        return await call_with_retries(attempt, self.policy, f"{model} chat completion")

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """Embeddings of ``texts``, in order, retried per the policy."""
        async def attempt(_):
            resp = await self.client.embeddings.create(model=model, input=texts)
            if len(resp.data) != len(texts):
                raise MalformedResponse(f"{len(resp.data)} embeddings for {len(texts)} inputs")
            return [d.embedding for d in sorted(resp.data, key=lambda d: d.index)]
        return await call_with_retries(attempt, self.policy, f"{model} embeddings")


def make_client(base_url: str | None, api_key_env: str = DEFAULT_KEY_ENV, max_retries: int = 5,
                timeout: float = 600.0) -> Endpoint:
    """An Endpoint; a local ``base_url`` may run without a key, the OpenAI API may not."""
    from openai import AsyncOpenAI

    key = os.environ.get(api_key_env)
    if not key:
        if base_url is None:
            raise SetupError(f"no API key: set ${api_key_env}, or give a base URL option that points at "
                             f"a local OpenAI-compatible server")
        key = "EMPTY"
    client = AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout)
    return Endpoint(client, RetryPolicy(max_retries=max_retries))


def run_jobs(jobs: Iterable[Callable[[], Awaitable[Any]]], on_result: Callable[[Any], None],
             concurrency: int = 8, desc: str = "requests", total: int | None = None) -> list[BaseException]:
    """Run every job (a no-argument coroutine function) with bounded concurrency.

    ``on_result`` is called in the event loop's thread for each successful result, in completion
    order. Returns the API errors of the jobs that failed (retries exhausted, or not retryable such
    as a 400); any other exception is a bug and propagates.
    """
    import openai
    from tqdm import tqdm

    from data.retry import RetriesExhausted

    jobs = list(jobs)
    failures: list[BaseException] = []

    async def main() -> None:
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(job):
            async with sem:
                return await job()

        tasks = [asyncio.ensure_future(one(job)) for job in jobs]
        try:
            with tqdm(total=total or len(tasks), desc=desc, unit="req", file=sys.stderr,
                      disable=None) as bar:
                for fut in asyncio.as_completed(tasks):
                    try:
                        result = await fut
                    except (RetriesExhausted, openai.OpenAIError) as err:
                        failures.append(err)
                        if len(failures) <= 3:
                            print(f"\nfailed: {type(err).__name__}: {err}", file=sys.stderr)
                    else:
                        on_result(result)
                    bar.update(1)
        finally:
            for t in tasks:
                t.cancel()

    asyncio.run(main())
    return failures


class JsonlLog:
    """An append-only JSONL results file that survives crashes (see module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> list[dict]:
        """All complete records; a torn last line left by a crash is removed from the file."""
        try:
            return read_append_log(self.path)
        except BadRecord as err:
            raise SetupError(str(err)) from None

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rewrite(self, records: Iterable[dict]) -> None:
        atomic_write(self.path, lambda f: f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
