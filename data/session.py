"""One SocraticChat session: the simulator asks, the teacher answers, until the session ends.

A session is described by a :class:`SessionSpec` (a deterministic id; for seeded mode the seed's
question, and its answer when the seed has one, kept verbatim) and ends as one :class:`Outcome`:
``finished`` (a record for the output file, with the rule that ended it), ``skipped`` (no round worth
keeping: never retried) or ``failed`` (retries ran out, or the endpoint refused the request: retried
on the next run). When a session ends is the :class:`~data.end_rules.EndRule`'s business.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import openai

from core.conversation import GPT, HUMAN, Conversation, Turn
from core.endpoint import FATAL, RetriesExhausted, count_retries, describe
from data.end_rules import EndOfSession, EndRule, Question, is_end_marker

MARKER_RESAMPLES = 3  # a suppressed end marker (or, rule fit, an empty question) is asked again this many times


@dataclass
class SessionSpec:
    id: str
    mode: str  # "free" | "seeded"
    seed_id: str | None = None
    question: str | None = None  # seeded: the seed's first question, verbatim
    answer: str | None = None  # ... and its answer; None: the teacher answers the seed question


@dataclass
class Outcome:
    kind: str  # "finished" | "skipped" | "failed"
    record: dict
    rounds: int = 0
    tokens: int = 0
    teacher_tokens: tuple[int, int] = (0, 0)  # prompt, completion


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

    def total(self) -> int:
        return (self.simulator_prompt_tokens + self.simulator_completion_tokens
                + self.teacher_prompt_tokens + self.teacher_completion_tokens)

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

    An end-of-conversation marker the rule does not accept, and (rule ``fit``) an empty question, are
    asked again with another seed, a few times; under ``paper`` an empty question ends the session, as
    it did in the original.
    """
    rounds, why = len(turns) // 2, "empty_question"
    for attempt in range(MARKER_RESAMPLES + 1):
        q = await simulator.ask(turns, request_seed(cfg.seed, spec.id, rounds) + attempt)
        usage.add_question(q)
        if is_end_marker(q.text):
            if cfg.rule.accepts_end(rounds):
                raise EndOfSession("learned_end")
            usage.end_markers_suppressed += 1
            why = "end_marker_suppressed"
            continue
        cfg.rule.check(q)
        if q.text:
            return q
        if cfg.rule.name != "fit":
            raise EndOfSession("empty_question")
        why = "empty_question"
    raise EndOfSession(why)


async def answer(teacher, asked: list[Turn], usage: Usage) -> list[Turn]:
    a = await teacher.answer(asked)
    usage.teacher_prompt_tokens += a.prompt_tokens
    usage.teacher_completion_tokens += a.completion_tokens
    usage.answers_cut_at_max_tokens += a.truncated
    return [*asked, Turn(GPT, a.text)]


async def converse(spec: SessionSpec, simulator, teacher, cfg: SessionConfig, usage: Usage,
                   on_round=None) -> tuple[list[Turn], str]:
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
            before = usage.total()
            turns = await answer(teacher, [*turns, Turn(HUMAN, q.text)], usage)
            if on_round is not None:
                on_round(q.prompt_tokens + q.completion_tokens + usage.total() - before)
    except EndOfSession as end:  # an unanswered question is discarded
        if end.drop_last_round:
            turns = turns[:-2]
        return turns, end.reason


async def run_session(spec: SessionSpec, simulator, teacher, cfg: SessionConfig, on_round=None) -> Outcome:
    """Drive one session to its end; ``on_round(tokens)`` is called after every finished round."""
    usage, retries = Usage(), count_retries()
    base = {"id": spec.id, "mode": spec.mode, **({"seed_id": spec.seed_id} if spec.seed_id is not None else {})}

    def outcome(kind: str, rounds: int = 0, **fields) -> Outcome:
        return Outcome(kind, {**base, **fields}, rounds=rounds, tokens=usage.total(),
                       teacher_tokens=(usage.teacher_prompt_tokens, usage.teacher_completion_tokens))

    try:
        turns, end_reason = await converse(spec, simulator, teacher, cfg, usage, on_round)
    except FATAL:
        raise
    except (RetriesExhausted, openai.APIError) as err:
        reason = str(err) if isinstance(err, RetriesExhausted) else describe(err)
        return outcome("failed", reason=reason, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    finally:
        usage.retries = retries[0]
    rounds = len(turns) // 2
    seed_only = spec.question is not None and rounds == 1 and not cfg.rule.keeps_seed_only
    if rounds == 0 or seed_only:
        reason = (f"ended with its seed round alone ({end_reason})" if seed_only
                  else f"ended before a first round could be kept ({end_reason})")
        return outcome("skipped", reason=reason, end_reason=end_reason)
    conversations = Conversation(spec.id, turns).to_sharegpt()["conversations"]
    return outcome("finished", rounds, conversations=conversations, num_of_rounds=rounds, end_reason=end_reason,
                   meta={**cfg.meta, "usage": vars(usage).copy(),
                         "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
