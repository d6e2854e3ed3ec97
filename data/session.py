"""One SocraticChat session: the simulator asks, the teacher answers, until the session ends.

A session is described by a :class:`SessionSpec` (a deterministic id, and for seeded mode the seed's
first round, kept verbatim) and ends as one :class:`Outcome`: ``finished`` (a record for the output
file), ``skipped`` (no round fits the context: never retried) or ``failed`` (retries ran out, or the
endpoint refused the request: retried on the next run).
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import openai

from model.conversation import GPT, HUMAN, Turn
from data.endpoints import EndOfSession
from data.retry import RetriesExhausted, describe

# Errors that no session can get past: stop the whole run instead of failing every session.
FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)


@dataclass
class SessionSpec:
    id: str
    mode: str  # "free" | "seeded"
    seed_id: str | None = None
    first_round: tuple[str, str] | None = None  # seeded: the seed's question and answer, verbatim


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
    teacher_prompt_tokens: int = 0
    teacher_completion_tokens: int = 0
    retries: int = 0
    questions_cut_at_max_new_tokens: int = 0
    answers_cut_at_max_tokens: int = 0

    def total(self) -> int:
        return (self.simulator_prompt_tokens + self.simulator_completion_tokens
                + self.teacher_prompt_tokens + self.teacher_completion_tokens)


@dataclass
class SessionConfig:
    max_turns: int | None
    seed: int
    meta: dict = field(default_factory=dict)  # run settings copied into every record


def request_seed(base: int, session_id: str, round_no: int) -> int:
    """A sampling seed per (run seed, session, round): reruns of a session ask the same way."""
    return zlib.crc32(f"{base}:{session_id}:{round_no}".encode()) & 0x3FFFFFFF


async def run_session(spec: SessionSpec, simulator, teacher, cfg: SessionConfig,
                      on_round=None) -> Outcome:
    """Drive one session to its end; ``on_round(tokens)`` is called after every finished round."""
    turns: list[Turn] = []
    if spec.first_round is not None:
        turns = [Turn(HUMAN, spec.first_round[0]), Turn(GPT, spec.first_round[1])]
    usage = Usage()

    def retried(err):
        usage.retries += 1

    def base_record() -> dict:
        rec = {"id": spec.id, "mode": spec.mode}
        if spec.seed_id is not None:
            rec["seed_id"] = spec.seed_id
        return rec

    try:
        while True:
            if cfg.max_turns is not None and len(turns) // 2 >= cfg.max_turns:
                end_reason = "max_turns"
                break
            try:
                q = await simulator.ask(turns, request_seed(cfg.seed, spec.id, len(turns) // 2), retried)
            except EndOfSession as end:
                if end.drop_last_round:
                    turns = turns[:-2]
                end_reason = end.reason
                break
            usage.simulator_prompt_tokens += q.prompt_tokens
            usage.simulator_completion_tokens += q.completion_tokens
            usage.questions_cut_at_max_new_tokens += q.truncated
            asked = [*turns, Turn(HUMAN, q.text)]
            try:
                a = await teacher.answer(asked, retried)
            except EndOfSession as end:  # the unanswered question is discarded
                end_reason = end.reason
                break
            usage.teacher_prompt_tokens += a.prompt_tokens
            usage.teacher_completion_tokens += a.completion_tokens
            usage.answers_cut_at_max_tokens += a.truncated
            turns = [*asked, Turn(GPT, a.text)]
            if on_round is not None:
                on_round(q.prompt_tokens + q.completion_tokens + a.prompt_tokens + a.completion_tokens)
    except FATAL:
        raise
    except (RetriesExhausted, openai.APIError) as err:
        reason = str(err) if isinstance(err, RetriesExhausted) else describe(err)
        return Outcome("failed", {**base_record(), "reason": reason, "rounds_done": len(turns) // 2,
                                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                       tokens=usage.total(),
                       teacher_tokens=(usage.teacher_prompt_tokens, usage.teacher_completion_tokens))

    teacher_tokens = (usage.teacher_prompt_tokens, usage.teacher_completion_tokens)
    if not turns:  # e.g. a seed whose first round fills the context, or an opening answer cut short
        reason = f"ended before a first round could be kept ({end_reason})"
        return Outcome("skipped", {**base_record(), "reason": reason, "end_reason": end_reason},
                       tokens=usage.total(), teacher_tokens=teacher_tokens)
    record = {
        **base_record(),
        "conversations": [{"from": t.role, "value": t.text} for t in turns],
        "num_of_rounds": len(turns) // 2,
        "end_reason": end_reason,
        "meta": {**cfg.meta, "usage": vars(usage).copy(),
                 "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }
    return Outcome("finished", record, rounds=len(turns) // 2, tokens=usage.total(),
                   teacher_tokens=teacher_tokens)
