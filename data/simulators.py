"""The two sides of a SocraticChat session: the user simulator that asks and the teacher that answers.

Each takes the conversation so far (a list of ``Turn``). A simulator returns the next
:class:`~data.end_rules.Question` with its token counts (the session applies the end rule); the
teacher returns the next answer. Either raises :class:`~data.end_rules.EndOfSession` when the
session cannot go on. Simulators (``--simulator-kind``):

* ``socratic`` at an endpoint (:class:`SocraticEndpoint`): ``model.serve --role human``, or vLLM serving
  a Socratic checkpoint (its chat template opens a human turn). Messages are the conversation as it
  is (``user`` = the human's turns, ``assistant`` = the answers); the reply is the next human turn.
* ``socratic`` loaded here (:class:`LocalSimulator`): the next questions of all sessions waiting
  within a few milliseconds of each other are generated in one batched call, in a worker thread.
* ``roleplay`` (:class:`RoleplaySimulator`): static role-play, the paper's baseline: a general chat
  model is told by a role-play prompt (its system message, holding the transcript so far) to write
  the human's next message.
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import openai

from core.conversation import GPT, HUMAN, Conversation, Turn
from model.dyadic import SOCRATIC_SYSTEM
from core.endpoint import Endpoint, Reply, is_context_exceeded
from core.errors import UsageError
from data.end_rules import EndOfSession, EndRule, Question, TokenCounter

DEFAULT_ROLEPLAY_PROMPT = Path(__file__).resolve().parent / "prompts" / "roleplay.txt"
CONVERSATION = "{conversation}"
_SPEAKER_LABEL = re.compile(r"^\s*(?:human|user)\s*:\s*", re.IGNORECASE)


@dataclass
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 512


@dataclass
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    truncated: bool = False  # cut at the teacher's max_tokens and kept (--keep-truncated-answers)


def to_messages(turns: Sequence[Turn], system: str | None) -> list[dict]:
    return Conversation("", list(turns), system).to_messages()["messages"]


async def chat_or_end(endpoint: Endpoint, end: EndOfSession, messages: list[dict], **params) -> Reply:
    """``endpoint.chat``; a prompt the endpoint says does not fit its context ends the session with ``end``."""
    try:
        return await endpoint.chat(messages, **params)
    except openai.BadRequestError as err:
        if is_context_exceeded(err):
            raise end from None
        raise


class SocraticEndpoint:
    """A Socratic simulator behind an OpenAI-compatible endpoint (one or several base URLs)."""

    def __init__(self, endpoint: Endpoint, sampling: Sampling, rule: EndRule, counter: TokenCounter | None,
                 system: str | None = None):
        self.endpoint, self.sampling, self.rule, self.counter = endpoint, sampling, rule, counter
        # the served checkpoint's trained prompt (what its chat template and model.serve use when a request has
        # none), else Socratic's; sending it always gives a free-mode opening a message to send
        self.system = system if system is not None else counter.system if counter is not None else SOCRATIC_SYSTEM

    async def ask(self, turns: Sequence[Turn], seed: int) -> Question:
        s, window = self.sampling, self.rule.window if self.counter is not None else None
        reply = await chat_or_end(self.endpoint, self.rule.context_full(), to_messages(turns, self.system),
                                  allow_empty=True, temperature=s.temperature, top_p=s.top_p,
                                  max_tokens=s.max_new_tokens, seed=seed,
                                  extra_body={"truncate_prompt_tokens": window} if window else None)
        served = reply.prompt_tokens or 0
        whole = len(self.counter.prompt_ids(turns)) if self.counter is not None else served
        return Question(reply.text.strip(), whole, reply.completion_tokens or 0, reply.finish_reason, served)

    async def close(self) -> None:
        await self.endpoint.close()


class RoleplaySimulator:
    """Static role-play: a chat model prompted (system message) to write the human's next message."""

    def __init__(self, endpoint: Endpoint, sampling: Sampling, prompt: str, counter: TokenCounter | None = None,
                 source: str = "the role-play prompt"):
        if CONVERSATION not in prompt:
            raise UsageError(f"{source}: the role-play prompt needs a {CONVERSATION} placeholder where the "
                             f"transcript so far goes")
        self.endpoint, self.sampling, self.prompt, self.counter = endpoint, sampling, prompt, counter

    @classmethod
    def from_file(cls, endpoint: Endpoint, sampling: Sampling, path: str | Path,
                  counter: TokenCounter | None = None) -> "RoleplaySimulator":
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"{path}: role-play prompt file not found")
        return cls(endpoint, sampling, path.read_text(encoding="utf-8"), counter, source=str(path))

    def render(self, turns: Sequence[Turn]) -> str:
        names = {HUMAN: "User", GPT: "Assistant"}
        transcript = "\n\n".join(f"{names[t.role]}: {t.text}" for t in turns)
        return self.prompt.replace(CONVERSATION, transcript or "(The conversation has not started yet.)")

    async def ask(self, turns: Sequence[Turn], seed: int) -> Question:
        s = self.sampling
        reply = await self.endpoint.chat([{"role": "system", "content": self.render(turns)}], allow_empty=True,
                                         temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens,
                                         seed=seed)
        text = _SPEAKER_LABEL.sub("", reply.text.strip(), count=1).strip()
        if self.counter is not None:  # the budget in a named tokenizer, e.g. to match a Socratic run
            return Question(text, len(self.counter.prompt_ids(turns)), self.counter.text_tokens(text),
                            reply.finish_reason, reply.prompt_tokens)
        return Question(text, reply.prompt_tokens or 0, reply.completion_tokens or 0, reply.finish_reason,
                        reply.prompt_tokens)

    async def close(self) -> None:
        await self.endpoint.close()


class Teacher:
    """Any OpenAI-compatible chat endpoint; it sees the whole conversation, after its system prompt."""

    def __init__(self, endpoint: Endpoint, system: str | None, temperature: float | None,
                 max_tokens: int | None, keep_truncated: bool = False):
        self.endpoint, self.system, self.temperature, self.max_tokens = endpoint, system, temperature, max_tokens
        self.keep_truncated = keep_truncated  # keep answers cut at max_tokens (counted) instead of ending

    async def answer(self, turns: Sequence[Turn]) -> Answer:
        reply = await chat_or_end(self.endpoint, EndOfSession("teacher_context_full"),
                                  to_messages(turns, self.system), temperature=self.temperature,
                                  max_tokens=self.max_tokens)
        truncated = reply.finish_reason == "length" and self.keep_truncated
        if reply.finish_reason not in (None, "stop") and not truncated:  # "length", "content_filter"
            raise EndOfSession(f"teacher_{reply.finish_reason}")
        return Answer(reply.text, reply.prompt_tokens or 0, reply.completion_tokens or 0, truncated)

    async def close(self) -> None:
        await self.endpoint.close()


class LocalSimulator:
    """A Socratic loaded in this process (``model.generate``), batched across waiting sessions."""

    def __init__(self, generator, sampling: Sampling, rule: EndRule, system: str | None = None,
                 window_s: float = 0.005):
        self.generator, self.sampling, self.rule, self.window_s = generator, sampling, rule, window_s
        self.counter = TokenCounter(generator.tokenizer, generator.template,
                                    generator.system_for(HUMAN) if system is None else system)
        self.batches = self.requests = 0  # reported at the end: how well the batching worked
        self._pending: list[tuple[list[Turn], int, asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task | None = None

    async def ask(self, turns: Sequence[Turn], seed: int) -> Question:
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((list(turns), seed, fut))
        self._wakeup.set()
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._batch_loop(), name="simulator-batches")
        return await fut

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
            try:  # one seed per batch: the first waiting session's
                results = await asyncio.to_thread(self._generate, [t for t, _, _ in batch], batch[0][1])
            except Exception as err:  # noqa: BLE001 - handed to every waiting session
                results = [err] * len(batch)
            for (_, _, fut), res in zip(batch, results):
                if not fut.done():
                    fut.set_exception(res) if isinstance(res, BaseException) else fut.set_result(res)

    def _generate(self, conversations: list[list[Turn]], seed: int) -> list[Question | Exception]:
        s, rule, limit = self.sampling, self.rule, self.generator.max_context
        results: list[Question | Exception | None] = [None] * len(conversations)
        prompts, wholes, where = [], [], []
        for i, turns in enumerate(conversations):
            whole = self.counter.prompt_ids(turns)
            given = whole[-rule.window:] if rule.window else whole
            if len(given) >= limit or (rule.name == "fit" and len(whole) >= rule.max_context):
                results[i] = rule.context_full()
                continue
            prompts.append(given)
            wholes.append(len(whole))
            where.append(i)
        if prompts:
            outs = self.generator.generate_ids(prompts, temperature=s.temperature, top_p=s.top_p,
                                               max_new_tokens=s.max_new_tokens, seed=seed)
            for i, whole, out in zip(where, wholes, outs):
                results[i] = Question(out.text.strip(), whole, out.completion_tokens, out.finish_reason,
                                      out.prompt_tokens)
        return results

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
