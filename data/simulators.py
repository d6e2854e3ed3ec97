"""The two sides of a SocraticChat session: the user simulator that asks and the teacher that answers.

Each takes the conversation so far (a list of ``Turn``). A simulator returns the next
:class:`~data.end_rules.Question` with its token counts (the session applies the end rule); the
teacher returns the next answer. Either raises :class:`~data.end_rules.EndOfSession` when the
session cannot go on. Simulators (``--simulator-kind``):

* ``socratic`` at an endpoint (:class:`SocraticEndpoint`): ``model.serve --role human``, or vLLM serving
  a Socratic checkpoint (its chat template opens a human turn). Messages are the conversation as it
  is (``user`` = the human's turns, ``assistant`` = the answers); the reply is the next human turn.
* ``socratic`` loaded here (:class:`LocalSimulator`): the next questions of all sessions waiting
  within a few milliseconds of each other are generated in one batched call (``core.batcher``).
* ``roleplay`` (:class:`RoleplaySimulator`): static role-play, the paper's baseline: a general chat
  model is told by a role-play prompt (its system message, holding the transcript so far) to write
  the human's next message.

A session's intent (``data.intents``) reaches a Socratic through its system prompt
(``model.dyadic.intent_system``: the paper's prompt, then the intent and persona) and a role-play
simulator through the ``{intent}`` placeholder of its prompt.

Commands build both sides from typed specs (:class:`SimulatorSpec`, :class:`TeacherSpec`) with
:func:`build_simulator` and :func:`build_teacher`, never from another command's parsed arguments.
"""
from __future__ import annotations

import asyncio
import re
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import openai

from core.batcher import MicroBatcher
from core.conversation import GPT, HUMAN, Conversation, Turn
from core.endpoint import DEFAULT_KEY_ENV, Endpoint, Prices, Reply, is_context_exceeded, note_usage
from core.errors import UsageError
from core.options import MAX_RETRIES
from data.end_rules import EndOfSession, EndRule, Question, TokenCounter, original_server_counter
from model.dyadic import SOCRATIC_SYSTEM, intent_system

DEFAULT_ROLEPLAY_PROMPT = Path(__file__).resolve().parent / "prompts" / "roleplay.txt"
TEACHER_SYSTEM = "You are an artificial intelligence assistant."  # the original's system message
CONVERSATION, INTENT = "{conversation}", "{intent}"
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


def transcript(turns: Sequence[Turn]) -> str:
    """The conversation as plain text, ``User: ...`` / ``Assistant: ...`` paragraphs (role-play prompts, judges)."""
    names = {HUMAN: "User", GPT: "Assistant"}
    return "\n\n".join(f"{names[t.role]}: {t.text}" for t in turns)


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

    async def ask(self, turns: Sequence[Turn], seed: int, intent: str | None = None,
                  persona: str | None = None) -> Question:
        s, window = self.sampling, self.rule.window if self.counter is not None else None
        system = intent_system(intent, persona, self.system)
        reply = await chat_or_end(self.endpoint, self.rule.context_full(), to_messages(turns, system),
                                  allow_empty=True, temperature=s.temperature, top_p=s.top_p,
                                  max_tokens=s.max_new_tokens, seed=seed,
                                  extra_body={"truncate_prompt_tokens": window} if window else None)
        served = reply.prompt_tokens or 0
        whole = (self.counter.budget_tokens(turns, self.counter.prompt_ids(turns, system=system))
                 if self.counter is not None else served)
        return Question(reply.text.strip(), whole, reply.completion_tokens or 0, reply.finish_reason, served)

    async def close(self) -> None:
        await self.endpoint.close()


class RoleplaySimulator:
    """Static role-play: a chat model prompted (system message) to write the human's next message.

    The prompt's ``{conversation}`` is replaced by the transcript so far; its ``{intent}`` by the session's
    intent (then its persona, if any); in a session without an intent the line holding ``{intent}`` is left
    out. ``conditioned``: the sessions carry intents, so the prompt must have the placeholder.
    """

    def __init__(self, endpoint: Endpoint, sampling: Sampling, prompt: str, counter: TokenCounter | None = None,
                 source: str = "the role-play prompt", conditioned: bool = False):
        for placeholder, needed, what in ((CONVERSATION, True, "the transcript so far"),
                                          (INTENT, conditioned, "each session's intent (--intents)")):
            if needed and placeholder not in prompt:
                raise UsageError(f"{source}: the role-play prompt needs a {placeholder} placeholder where "
                                 f"{what} goes")
        self.endpoint, self.sampling, self.prompt, self.counter = endpoint, sampling, prompt, counter

    @classmethod
    def from_file(cls, endpoint: Endpoint, sampling: Sampling, path: str | Path,
                  counter: TokenCounter | None = None, conditioned: bool = False) -> "RoleplaySimulator":
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"{path}: role-play prompt file not found")
        return cls(endpoint, sampling, path.read_text(encoding="utf-8"), counter, str(path), conditioned)

    def render(self, turns: Sequence[Turn], intent: str | None = None, persona: str | None = None) -> str:
        if intent is None:  # the line that states the intent goes with it
            prompt = "".join(line for line in self.prompt.splitlines(keepends=True) if INTENT not in line)
        else:
            prompt = self.prompt.replace(INTENT, " ".join(x.strip() for x in (intent, persona) if x))
        return prompt.replace(CONVERSATION, transcript(turns) or "(The conversation has not started yet.)")

    async def ask(self, turns: Sequence[Turn], seed: int, intent: str | None = None,
                  persona: str | None = None) -> Question:
        s, system = self.sampling, self.render(turns, intent, persona)
        reply = await self.endpoint.chat([{"role": "system", "content": system}], allow_empty=True,
                                         temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens,
                                         seed=seed)
        text = _SPEAKER_LABEL.sub("", reply.text.strip(), count=1).strip()
        if self.counter is not None:  # the budget in a named tokenizer, e.g. to match a Socratic run
            return Question(text, self.counter.budget_tokens(turns), self.counter.text_tokens(text),
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
    """A Socratic loaded in this process (``model.generate``), batched across waiting sessions (``core.batcher``)."""

    def __init__(self, generator, sampling: Sampling, rule: EndRule, system: str | None = None,
                 window_s: float = 0.005):
        self.generator, self.sampling, self.rule = generator, sampling, rule
        self.counter = TokenCounter(generator.tokenizer, generator.template,
                                    generator.system_for(HUMAN) if system is None else system)
        self.batcher = MicroBatcher(self._generate, wait_s=window_s)  # its counts are reported at the end

    async def ask(self, turns: Sequence[Turn], seed: int, intent: str | None = None,
                  persona: str | None = None) -> Question:
        q = await self.batcher.submit((list(turns), seed, intent_system(intent, persona, self.counter.system)))
        note_usage(q.input_tokens or 0, q.completion_tokens)
        return q

    def _generate(self, batch: list[tuple[list[Turn], int, str]]) -> list[Question | EndOfSession]:
        """The next question of every waiting session (each after its own system prompt), in one generate
        call with one seed: the first one's."""
        s, rule = self.sampling, self.rule
        results: list[Question | EndOfSession | None] = [None] * len(batch)
        prompts, wholes, where = [], [], []
        for i, (turns, _, system) in enumerate(batch):
            whole = self.counter.prompt_ids(turns, system=system)
            given = rule.visible(whole)
            try:
                rule.check_prompt(len(whole))
                if len(given) >= self.generator.max_context:  # the model's own context is full
                    raise rule.context_full()
            except EndOfSession as end:
                results[i] = end
                continue
            prompts.append(given)
            wholes.append(self.counter.budget_tokens(turns, whole))
            where.append(i)
        outs = self.generator.generate_ids(prompts, temperature=s.temperature, top_p=s.top_p,
                                           max_new_tokens=s.max_new_tokens, seed=batch[0][1])
        for i, whole, out in zip(where, wholes, outs):
            results[i] = Question(out.text.strip(), whole, out.completion_tokens, out.finish_reason, out.prompt_tokens)
        return results

    async def close(self) -> None:
        await self.batcher.close()


# -- building them from typed specs --------------------------------------------------------------
def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


@dataclass(frozen=True)
class SimulatorSpec:
    """Which simulator asks, and how: what ``data.simulate``, ``eval.simulator`` (and any command that
    drives sessions) build from their own flags. The session budget is the ``EndRule``'s, not the spec's."""
    source: tuple[str, ...]  # endpoint URLs (replicas of one model), or one local checkpoint path
    kind: str = "socratic"  # socratic | roleplay
    model: str | None = None  # the served model's name (default: the first the endpoint lists)
    key_env: str | None = None  # the environment variable holding the endpoint's key
    system: str | None = None  # a socratic simulator's system prompt (default: Socratic's)
    tokenizer: str | None = None  # count the budget in this tokenizer (default: the simulator's own, if known)
    tokenization: str = "original"  # how it counts: as the trainer's --tokenization
    budget_count: str = "training"  # training | original-server (data/end_rules.py)
    sampling: Sampling = field(default_factory=Sampling)
    template: str = "dyadic"
    device: str = "auto"  # a local simulator's
    engine: str = "hf"  # a local simulator: HF generate here, or a vLLM server started for the run
    batch_window_s: float = 0.005  # a local simulator: how long a batch waits for more sessions
    roleplay_prompt: str = str(DEFAULT_ROLEPLAY_PROMPT)
    max_retries: int = MAX_RETRIES
    timeout: float = 600.0
    conditioned: bool = False  # the sessions carry intents (a role-play prompt then needs its {intent})

    @property
    def local(self) -> bool:
        return not is_url(self.source[0])


@dataclass(frozen=True)
class TeacherSpec:
    """The model that answers: the teacher (or, in a conversation-based evaluation, the assistant under test)."""
    base_urls: tuple[str, ...] | None = None  # default: the OpenAI API
    model: str = "gpt-3.5-turbo"
    key_env: str = DEFAULT_KEY_ENV
    system: str | None = TEACHER_SYSTEM
    temperature: float | None = None  # None: not sent (the API's default, as the original)
    max_tokens: int | None = None
    keep_truncated: bool = False  # keep an answer cut at max_tokens (counted) instead of ending the session
    rpm: float | None = None
    tpm: float | None = None
    prices: Prices | None = None  # for the spend (core.endpoint.CallStats.cost)
    max_retries: int = MAX_RETRIES
    timeout: float = 600.0
    what: str = "teacher"  # how its errors name it ("assistant NAME" in an evaluation)


async def served_tokenizer(endpoint: Endpoint) -> str | None:
    """The served checkpoint's directory, when the server names one (vLLM and model.serve: ``root``) and it is here."""
    model = await endpoint.model_name()
    for entry in await endpoint.list_models():
        root = entry.get("root") or entry.get("id")
        if entry.get("id") == model and root and Path(root, "tokenizer_config.json").is_file():
            return root
    return None


async def build_simulator(spec: SimulatorSpec, rule: EndRule, stack: AsyncExitStack):
    """The simulator ``spec`` names, and the model name recorded with every session; servers it starts
    stop with ``stack``."""
    urls, tokenizer = list(spec.source), spec.tokenizer
    if spec.local:
        if spec.engine == "hf":
            from model.generate import Generator

            gen = await asyncio.to_thread(Generator, urls[0], spec.template, spec.device)
            local = LocalSimulator(gen, spec.sampling, rule, spec.system, spec.batch_window_s)
            if spec.budget_count == "original-server":
                local.counter.budget = original_server_counter(urls[0], spec.template)
            return local, urls[0]
        from model.serve import vllm_server

        tokenizer = tokenizer or urls[0]
        urls = [await stack.enter_async_context(vllm_server(urls[0], HUMAN, spec.template, rule.max_context))]
    endpoint = Endpoint(urls, spec.model, spec.key_env, spec.max_retries, spec.timeout, what="simulator")
    model = await endpoint.model_name()
    if not tokenizer and spec.kind == "socratic":
        tokenizer = await served_tokenizer(endpoint)
    counter = TokenCounter.load(tokenizer, spec.template, spec.system, spec.tokenization,
                                spec.budget_count) if tokenizer else None
    if counter is None and spec.budget_count != "training":
        raise UsageError("--budget-count original-server counts with the simulator's tokenizer: give "
                         "--simulator-tokenizer")
    if spec.kind == "roleplay":
        return RoleplaySimulator.from_file(endpoint, spec.sampling, spec.roleplay_prompt, counter,
                                           spec.conditioned), model
    if counter is None:
        print("note: the simulator's tokenizer is unknown (pass --simulator-tokenizer): the budget is counted "
              "from the server's usage figures and the simulator sees the whole conversation", file=sys.stderr)
    return SocraticEndpoint(endpoint, spec.sampling, rule, counter, spec.system), model


def build_teacher(spec: TeacherSpec) -> Teacher:
    endpoint = Endpoint(spec.base_urls, spec.model, spec.key_env, spec.max_retries, spec.timeout, spec.rpm, spec.tpm,
                        what=spec.what, prices=spec.prices)
    return Teacher(endpoint, spec.system, spec.temperature, spec.max_tokens, spec.keep_truncated)
