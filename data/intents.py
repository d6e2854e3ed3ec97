"""Intents: what the simulated person wants from a conversation, read from a file for conditioned sessions.

An intents file is JSON (an array) or JSONL of records, in ShareGPT, OpenAI-messages or plain form, each with:

* ``intent`` (required): one or two sentences in the second person saying what the person wants, at a high
  level ("You want to write a sincere apology to a friend after a family disagreement.");
* ``persona`` (optional): how the person writes and behaves ("You write short, informal messages.");
* a seed question (optional): the first human turn of ``conversations`` / ``messages``, or a ``question``
  field; a session with one starts from it as seeded mode does (the answerer answers it first);
* ``id`` (optional; default the record's position): the session id is ``intent-<id>``.

A record whose intent is missing, empty or not a string (or whose persona, question or turns are unusable)
is skipped with the file, the record and the reason (``core.conversation.BadRecord``, counted; ``--strict``
stops at it); a file with no usable record is one error naming the file. The simulator gets the intent
(Socratic through its system prompt, ``model.dyadic.intent_system``; role-play through the ``{intent}``
placeholder of its prompt); the answering side never sees it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.conversation import HUMAN, BadRecord, BadRecordSummary, iter_conversations, parse_record
from core.errors import UsageError
from data.session import SessionSpec

INTENT_MODE = "intent"  # the mode of a conditioned session (records: "mode": "intent")


@dataclass(frozen=True)
class IntentRecord:
    id: str
    intent: str
    persona: str | None = None
    question: str | None = None  # the seed question, verbatim

    def spec(self) -> SessionSpec:
        """The session this intent conditions: ``intent-<id>``, seeded with the question if there is one."""
        return SessionSpec(f"{INTENT_MODE}-{self.id}", INTENT_MODE, question=self.question, intent=self.intent,
                           persona=self.persona)


def _optional_text(raw: dict, field: str, rid: str, file) -> str | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRecord(file, rid, f"{field} not a string", type(value).__name__)
    if not value.strip():
        raise BadRecord(file, rid, f"empty {field}")
    return value


def seed_question(raw: dict, index: int, rid: str, file) -> str | None:
    """The record's first human turn (ShareGPT or OpenAI messages), else its ``question`` field, else None."""
    if "conversations" in raw or "messages" in raw:
        conv = parse_record(raw, index, file)
        first = next((t.text for t in conv.turns if t.role == HUMAN), None)
        if first is None:
            raise BadRecord(file, rid, "no human turn", "its conversation has no human turn to seed from")
        return first
    return _optional_text(raw, "question", rid, file)


def parse_intent(raw: Any, index: int, file: str | os.PathLike = "<memory>") -> IntentRecord:
    """One raw record as an :class:`IntentRecord`, or BadRecord naming the file, record and reason."""
    if not isinstance(raw, dict):
        raise BadRecord(file, index, "not an object")
    rid = str(raw["id"]) if raw.get("id") is not None else str(index)
    intent = raw.get("intent")
    if intent is None:
        raise BadRecord(file, rid, "no intent", "expected a string 'intent'")
    if not isinstance(intent, str):
        raise BadRecord(file, rid, "intent not a string", type(intent).__name__)
    if not intent.strip():
        raise BadRecord(file, rid, "empty intent")
    persona = _optional_text(raw, "persona", rid, file)
    return IntentRecord(rid, intent.strip(), persona and persona.strip(), seed_question(raw, index, rid, file))


def read_intents(path: str | os.PathLike, strict: bool = False,
                 summary: BadRecordSummary | None = None) -> list[IntentRecord]:
    """Every usable intent record of ``path``, in file order (bad ones counted in ``summary``, or raised
    under ``strict``); UsageError when the file is missing or holds no usable record."""
    if not Path(path).is_file():
        raise UsageError(f"{path}: intents file not found")
    summary = summary if summary is not None else BadRecordSummary()
    records, seen = [], set()
    for rec in iter_conversations(path, strict, summary, parse=parse_intent):
        if rec.id in seen:
            err = BadRecord(path, rec.id, "duplicate id")
            if strict:
                raise err
            summary.add(err)
            continue
        seen.add(rec.id)
        records.append(rec)
    if not records:
        reasons = ", ".join(f"{n} {reason}" for reason, n in summary.counts.most_common()) or "it is empty"
        raise UsageError(f"{path}: no usable intent record ({reasons}); each needs a non-empty string 'intent'")
    return records
