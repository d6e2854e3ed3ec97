"""One SocraticChat session: the simulator asks, the teacher answers, until the session ends.

A session is described by a :class:`SessionSpec` (a deterministic id; for seeded mode the seed's
question, and its answer when the seed has one, kept verbatim) and is one ``core.engine`` job
(:func:`session_jobs`): it ends finished (a record for the output file, with the rule that ended it) or
skipped (no round worth keeping: never retried); a call whose retries ran out fails it, and the engine
counts it for the next run to retry. When a session ends is the :class:`~data.end_rules.EndRule`'s
business; either side (the simulator, and the teacher or an assistant under test) is anything with
``ask(turns, seed, intent, persona)`` / ``answer(turns)``: a session's intent (``data.intents``) goes to the
simulator only, never to the side that answers.
"""
from __future__ import annotations

import functools
import time
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from core.conversation import GPT, HUMAN, Conversation, Turn
from core.endpoint import current_calls
from core.engine import SKIPPED, Job, Result
from data.end_rules import EndOfSession, EndRule, Question

MARKER_RESAMPLES = 3  # a suppressed end marker (or, rule fit, an empty question) is asked again this many times


@dataclass
class SessionSpec:
    id: str
    mode: str  # "free" | "seeded" | "intent"
    seed_id: str | None = None
    question: str | None = None  # seeded: the seed's first question, verbatim
    answer: str | None = None  # ... and its answer; None: the teacher answers the seed question
    intent: str | None = None  # what the simulated person wants (data.intents): the simulator's only
    persona: str | None = None  # ... and how they write

    def stub(self) -> dict:
        """The fields every record of this session starts with (finished, skipped or failed)."""
        given = {"seed_id": self.seed_id, "intent": self.intent, "persona": self.persona}
        return {"id": self.id, "mode": self.mode, **{k: v for k, v in given.items() if v is not None}}


@dataclass
class Usage:
    simulator_prompt_tokens: int = 0
    simulator_completion_tokens: int = 0
    simulator_input_tokens_max: int = 0  # the most the simulator was given at once (the window caps it)
    teacher_prompt_tokens: int = 0
    teacher_completion_tokens: int = 0
    retries: int = 0
    questions_cut_at_max_new_tokens: int = 0
    answers_cut_at_max_tokens: int = 0
    end_markers_suppressed: int = 0

    def add_question(self, q: Question) -> None:
        given = q.prompt_tokens if q.input_tokens is None else q.input_tokens
        self.simulator_prompt_tokens += given
        self.simulator_completion_tokens += q.completion_tokens
        self.simulator_input_tokens_max = max(self.simulator_input_tokens_max, given)
        self.questions_cut_at_max_new_tokens += q.truncated


@dataclass
class SessionConfig:
    rule: EndRule
    max_turns: int | None
    seed: int
    meta: dict = field(default_factory=dict)  # run settings copied into every record


def request_seed(base: int, session_id: str, round_no: int) -> int:
    """A sampling seed per (run seed, session, round): reruns of a session ask the same way."""
    return zlib.crc32(f"{base}:{session_id}:{round_no}".encode()) & 0x3FFFFFFF


async def next_question(simulator, turns: list[Turn], spec: SessionSpec, cfg: SessionConfig,
                        usage: Usage) -> Question:
    """The simulator's next question under the end rule; EndOfSession when the session ends here.

    What the rule says to ask again (``EndRule.resample_reason``) is asked again with another seed, a few
    times; then the session ends for that reason.
    """
    rounds, why = len(turns) // 2, "empty_question"
    for attempt in range(MARKER_RESAMPLES + 1):
        q = await simulator.ask(turns, request_seed(cfg.seed, spec.id, rounds) + attempt, spec.intent, spec.persona)
        usage.add_question(q)
        why = cfg.rule.resample_reason(q, rounds)
        if why is None:
            return q
        usage.end_markers_suppressed += why == "end_marker_suppressed"
    raise EndOfSession(why)


async def answer(teacher, asked: list[Turn], usage: Usage) -> list[Turn]:
    a = await teacher.answer(asked)
    usage.teacher_prompt_tokens += a.prompt_tokens
    usage.teacher_completion_tokens += a.completion_tokens
    usage.answers_cut_at_max_tokens += a.truncated
    return [*asked, Turn(GPT, a.text)]


async def converse(spec: SessionSpec, simulator, teacher, cfg: SessionConfig,
                   usage: Usage) -> tuple[list[Turn], str]:
    """The session's turns and the reason it ended."""
    turns: list[Turn] = []
    try:
        if spec.question is not None:
            seed_round = [Turn(HUMAN, spec.question)]
            turns = seed_round + [Turn(GPT, spec.answer)] if spec.answer is not None \
                else await answer(teacher, seed_round, usage)
        while True:
            if cfg.max_turns is not None and len(turns) // 2 >= cfg.max_turns:
                return turns, "max_turns"
            q = await next_question(simulator, turns, spec, cfg, usage)
            turns = await answer(teacher, [*turns, Turn(HUMAN, q.text)], usage)
    except EndOfSession as end:  # an unanswered question is discarded
        if end.drop_last_round:
            turns = turns[:-2]
        return turns, end.reason


async def run_session(spec: SessionSpec, simulator, teacher, cfg: SessionConfig) -> Result:
    """Drive one session to its end: a finished record (``counts``: its rounds), or a skipped one."""
    usage = Usage()
    turns, end_reason = await converse(spec, simulator, teacher, cfg, usage)
    usage.retries = current_calls().retries
    rounds = len(turns) // 2
    seed_only = spec.question is not None and rounds == 1 and not cfg.rule.keeps_seed_only
    if rounds == 0 or seed_only:
        reason = (f"ended with its seed round alone ({end_reason})" if seed_only
                  else f"ended before a first round could be kept ({end_reason})")
        return Result({**spec.stub(), "reason": reason, "end_reason": end_reason}, SKIPPED)
    conversations = Conversation(spec.id, turns).to_sharegpt()["conversations"]
    return Result({**spec.stub(), "conversations": conversations, "num_of_rounds": rounds, "end_reason": end_reason,
                   "meta": {**cfg.meta, "usage": vars(usage).copy(),
                            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}},
                  counts={"rounds": rounds})


def session_jobs(specs: Iterable[SessionSpec], simulator, teacher, cfg: SessionConfig) -> Iterator[Job]:
    """One ``core.engine`` job per session, keyed by its id."""
    return (Job(spec.id, functools.partial(run_session, spec, simulator, teacher, cfg), spec.stub())
            for spec in specs)
