"""The two sides of a SocraticChat session: the user simulator that asks and the teacher that answers.

Both take the conversation so far (a list of ``Turn``) and return a :class:`Reply`. The simulator is
either an OpenAI-compatible endpoint (``model.serve --role human``, or vLLM) or a model loaded in
this process, whose next questions for all waiting sessions are generated in one batch. When the
next turn no longer fits, they raise :class:`EndOfSession` instead of returning text.

The context-budget rule (the paper's session end): the simulator's next question must fit in
``max_context`` tokens together with the conversation. If it does not, the question is discarded;
if even the conversation so far (the prompt) does not fit, the last round goes too, so that every
kept conversation fits the budget.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable, Sequence

import openai

from model.conversation import HUMAN, TO_OPENAI_ROLE, Turn
from model.generate import ContextOverflow
from data.retry import MalformedResponse, RateLimiter, RetryPolicy, call_with_retries


@dataclass
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    truncated: bool = False  # cut at max_new_tokens (not by the context): kept, but counted


class EndOfSession(Exception):
    """The session ends here; ``drop_last_round`` when the conversation itself no longer fits."""

    def __init__(self, reason: str, drop_last_round: bool = False):
        self.reason, self.drop_last_round = reason, drop_last_round
        super().__init__(reason)


def to_messages(turns: Sequence[Turn], system: str | None) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system is not None else []
    return msgs + [{"role": TO_OPENAI_ROLE[t.role], "content": t.text} for t in turns]


def is_context_exceeded(err: BaseException) -> bool:
    """A 400 saying the prompt does not fit: OpenAI's code, or vLLM's message (vLLM sends no code)."""
    return isinstance(err, openai.BadRequestError) and (
        getattr(err, "code", None) == "context_length_exceeded"
        or "maximum context length" in str(getattr(err, "message", "")).lower())


def parse_completion(resp) -> tuple[str, str | None, int | None, int | None]:
    """(text, finish_reason, prompt_tokens, completion_tokens) of a chat completion, or MalformedResponse."""
    try:
        choice = resp.choices[0]
        text, finish = choice.message.content, choice.finish_reason
    except (AttributeError, IndexError, TypeError, KeyError):
        raise MalformedResponse("the reply has no choices[0].message") from None
    if not isinstance(text, str) or not text.strip():
        raise MalformedResponse("the reply's message has no text")
    usage = getattr(resp, "usage", None)
    return text, finish, getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)


def judge_question(text: str, finish: str | None, prompt_tokens: int | None, completion_tokens: int | None,
                   max_new_tokens: int, max_context: int) -> Reply:
    """Apply the context-budget rule to a generated question (see the module docstring)."""
    if prompt_tokens is not None and prompt_tokens >= max_context:
        raise EndOfSession("context_full", drop_last_round=True)
    if finish == "length" and (completion_tokens is None or completion_tokens < max_new_tokens):
        raise EndOfSession("context_full")  # the server's context, not max_new_tokens, cut it
    if prompt_tokens is not None and completion_tokens is not None \
            and prompt_tokens + completion_tokens > max_context:
        raise EndOfSession("context_full")
    return Reply(text.strip(), prompt_tokens or 0, completion_tokens or 0, truncated=finish == "length")


@dataclass
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 512
    max_context: int = 2048


class RemoteSimulator:
    """The simulator behind an OpenAI-compatible endpoint: ``user`` = its questions, ``assistant`` = answers."""

    def __init__(self, client: openai.AsyncOpenAI, model: str, sampling: Sampling, policy: RetryPolicy,
                 system: str | None = None):
        self.client, self.model, self.sampling, self.policy, self.system = client, model, sampling, policy, system

    async def ask(self, turns: Sequence[Turn], seed: int, on_retry: Callable | None = None) -> Reply:
        s = self.sampling
        messages = to_messages(turns, self.system)

        async def attempt(k: int) -> Reply:
            resp = await self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=s.temperature, top_p=s.top_p,
                max_tokens=s.max_new_tokens, seed=seed + k)
            return judge_question(*parse_completion(resp), s.max_new_tokens, s.max_context)

        try:
            return await call_with_retries(attempt, self.policy, "simulator", on_retry)
        except openai.BadRequestError as err:
            if is_context_exceeded(err):
                raise EndOfSession("context_full", drop_last_round=True) from None
            raise

    async def close(self) -> None:
        await self.client.close()


class LocalSimulator:
    """The simulator loaded in this process (``model.generate``): the next questions of all sessions
    waiting within a few milliseconds of each other are generated in one batched call, in a worker
    thread, so the event loop keeps driving the teacher requests meanwhile."""

    def __init__(self, generator, sampling: Sampling, policy: RetryPolicy, system: str | None = None,
                 window_s: float = 0.005, seed: int = 0):
        self.generator, self.sampling, self.policy, self.system = generator, sampling, policy, system
        self.window_s, self.seed = window_s, seed
        self.batches = self.requests = 0  # reported at the end: how well the batching worked
        self.model = getattr(generator, "model_name", "local")
        self._pending: list[tuple[list[Turn], asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task | None = None

    async def ask(self, turns: Sequence[Turn], seed: int, on_retry: Callable | None = None) -> Reply:
        async def attempt(k: int) -> Reply:
            fut = asyncio.get_running_loop().create_future()
            self._pending.append((list(turns), fut))
            self._wakeup.set()
            if self._loop_task is None:
                self._loop_task = asyncio.create_task(self._batch_loop(), name="simulator-batches")
            return await fut

        return await call_with_retries(attempt, self.policy, "simulator", on_retry)

    async def _batch_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(self.window_s)  # let the other sessions' requests join this batch
            batch, self._pending = self._pending, []
            if not batch:
                continue
            self.batches += 1
            self.requests += len(batch)
            try:
                results = await asyncio.to_thread(self._generate, [t for t, _ in batch],
                                                  self.seed + self.batches)
            except Exception as err:  # noqa: BLE001 - handed to every waiting session
                results = [err] * len(batch)
            for (_, fut), res in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def _generate(self, conversations: list[list[Turn]], seed: int) -> list[Reply | Exception]:
        s = self.sampling
        results: list[Reply | Exception | None] = [None] * len(conversations)
        prompts, where = [], []
        for i, turns in enumerate(conversations):
            try:
                prompts.append(self.generator.prompt_ids(turns, HUMAN, self.system))
                where.append(i)
            except ContextOverflow:
                results[i] = EndOfSession("context_full", drop_last_round=True)
        if prompts:
            outs = self.generator.generate_ids(prompts, temperature=s.temperature, top_p=s.top_p,
                                               max_new_tokens=s.max_new_tokens, seed=seed)
            for i, out in zip(where, outs):
                try:
                    if not out.text.strip():
                        raise MalformedResponse("the simulator wrote an empty question")
                    results[i] = judge_question(out.text, out.finish_reason, out.prompt_tokens,
                                                out.completion_tokens, s.max_new_tokens, s.max_context)
                except (EndOfSession, MalformedResponse) as err:
                    results[i] = err
        return results

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass


class Teacher:
    """Any OpenAI-compatible chat endpoint; it sees the whole conversation, after its system prompt."""

    def __init__(self, client: openai.AsyncOpenAI, model: str, system: str | None, temperature: float | None,
                 max_tokens: int | None, policy: RetryPolicy, limiter: RateLimiter, keep_truncated: bool = False):
        self.client, self.model, self.system = client, model, system
        self.temperature, self.max_tokens, self.policy, self.limiter = temperature, max_tokens, policy, limiter
        self.keep_truncated = keep_truncated  # keep answers cut at max_tokens (counted) instead of ending

    async def answer(self, turns: Sequence[Turn], on_retry: Callable | None = None) -> Reply:
        messages = to_messages(turns, self.system)
        # the rate limiter needs a guess before the call: ~4 characters a token, plus the answer
        estimate = sum(len(m["content"]) for m in messages) // 4 + (self.max_tokens or 512)
        extra = {}
        if self.temperature is not None:
            extra["temperature"] = self.temperature
        if self.max_tokens is not None:
            extra["max_tokens"] = self.max_tokens

        async def attempt(k: int) -> Reply:
            await self.limiter.acquire(estimate)
            used = estimate
            try:
                resp = await self.client.chat.completions.create(model=self.model, messages=messages, **extra)
                usage = getattr(resp, "usage", None)
                used = getattr(usage, "total_tokens", None) or used
                text, finish, p, c = parse_completion(resp)
            finally:
                self.limiter.settle(estimate, used)
            truncated = finish == "length" and self.keep_truncated and bool(text.strip())
            if finish not in (None, "stop") and not truncated:  # "length", "content_filter": not usable
                raise EndOfSession(f"teacher_{finish}")
            return Reply(text, p or 0, c or 0, truncated=truncated)

        try:
            return await call_with_retries(attempt, self.policy, "teacher", on_retry)
        except openai.BadRequestError as err:
            if is_context_exceeded(err):
                raise EndOfSession("teacher_context_full") from None
            raise

    async def close(self) -> None:
        await self.client.close()
