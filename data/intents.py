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

:func:`leakage` says how much of an intent's wording a turn already states verbatim (the share of its content
words, and of its word 3-grams): of the data (``data.prepare intents`` reports it for each conversation's first
human turn) and of a simulator (``eval.simulator goal-leakage``).
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.conversation import HUMAN, BadRecord, BadRecordSummary, iter_conversations, parse_record
from core.errors import UsageError
from data.session import SessionSpec
from model.dyadic import record_intent

INTENT_MODE = "intent"  # the mode of a conditioned session (records: "mode": "intent")
_WORD = re.compile(r"\w+")
# function words, and the wording every intent shares ("You want to ..."): what is left names the goal
STOPWORDS = frozenset("""
a an the and or but if then so of to in on at by for with about from into onto over under as is are was were be
been being am do does did doing have has had having it its this that these those there here i me my we us our you
your yours he she they them their his her him what which who whom whose when where why how not no nor too very
can could will would shall should may might must just also than some any all each both more most other such own
same only want wants wanted wanting need needs like know get help way ways something someone after before while
""".split())
LEAKAGE_BINS = ("0", "(0, 0.25]", "(0.25, 0.5]", "(0.5, 0.75]", "(0.75, 1]")


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
    intent, persona = record_intent(raw, rid, file)
    if intent is None:
        raise BadRecord(file, rid, "no intent", "expected a string 'intent'")
    return IntentRecord(rid, intent, persona, seed_question(raw, index, rid, file))


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


# -- leakage: how much of an intent's wording a turn already holds verbatim ---------------------------------
def words(text: str) -> list[str]:
    """Lower-cased ``\\w+`` words."""
    return _WORD.findall(text.lower())


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOPWORDS}


def trigrams(text: str) -> set[tuple[str, ...]]:
    w = words(text)
    return set(zip(w, w[1:], w[2:]))


def leakage(intent: str, text: str) -> tuple[float | None, float | None]:
    """(the share of the intent's content words that ``text`` holds, the share of its word 3-grams that
    ``text`` holds); None where the intent has none. 1.0: the turn states the intent's wording outright."""
    shares = []
    for units in (content_words, trigrams):
        own = units(intent)
        shares.append(len(own & units(text)) / len(own) if own else None)
    return shares[0], shares[1]


def leakage_summary(shares: Sequence[float | None]) -> dict:
    """Mean, median and a five-bin distribution (counts) of leakage shares; None shares are left out."""
    kept = sorted(x for x in shares if x is not None)
    bins = Counter(LEAKAGE_BINS[0 if x == 0 else min(4, math.ceil(x * 4))] for x in kept)
    middle = (kept[(len(kept) - 1) // 2] + kept[len(kept) // 2]) / 2 if kept else None
    return {"mean": round(sum(kept) / len(kept), 4) if kept else None,
            "median": None if middle is None else round(middle, 4), "n": len(kept),
            "distribution": {b: bins[b] for b in LEAKAGE_BINS}}
