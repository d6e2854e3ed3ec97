"""The paper's baseline corpora in ShareGPT format, sampled to N sessions for the 10K comparisons.

* ``ultrachat``: UltraChat JSONL, ``{"id", "data": [question, answer, question, ...]}``
  (alternating strings, human first); OpenAI-messages records (ultrachat_200k) are read too
* ``baize``: Baize self-chat, ``{"topic"?, "input": "The conversation between human and AI assistant.
  [|Human|] ... [|AI|] ... [|Human|] "}`` (the trailing empty human turn is dropped)
* ``sharegpt``: ShareGPT / Vicuna records, passed through
"""
from __future__ import annotations

import re
from typing import Any

from model.conversation import GPT, HUMAN, BadRecord, BadRecordSummary, Conversation, Turn, parse_record

from data.formats import iter_converted
from data.sampling import reservoir

SOURCES = ("ultrachat", "baize", "sharegpt")
_BAIZE_TAG = re.compile(r"\[\|(Human|AI)\|\]")


def parse_baize(text: str, file: str, rid: str) -> list[Turn]:
    parts = _BAIZE_TAG.split(text)  # [header, role, text, role, text, ...]
    turns = [Turn(HUMAN if role == "Human" else GPT, body.strip()) for role, body in zip(parts[1::2], parts[2::2])]
    while turns and not turns[-1].text:
        turns.pop()
    if not turns or any(not t.text for t in turns):
        raise BadRecord(file, rid, "empty turn" if turns else "no [|Human|]/[|AI|] turns")
    return turns


def to_conversation(raw: Any, index: int, file: str, source: str) -> Conversation:
    if not isinstance(raw, dict):
        raise BadRecord(file, index, "not an object")
    rid = str(raw.get("id", f"{source}_{index}"))
    if source == "ultrachat" and "data" in raw:
        data = raw["data"]
        if not isinstance(data, list) or not data or not all(isinstance(x, str) and x.strip() for x in data):
            raise BadRecord(file, rid, "bad 'data'", "expected a list of non-empty strings")
        turns = [Turn((HUMAN, GPT)[i % 2], x) for i, x in enumerate(data)]
        return Conversation(rid, turns, None, {"source": source})
    if source == "baize":
        text = raw.get("input")
        if not isinstance(text, str):
            raise BadRecord(file, rid, "missing 'input'", "expected the self-chat transcript string")
        extra = {"source": source, **({"topic": raw["topic"]} if isinstance(raw.get("topic"), str) else {})}
        return Conversation(rid, parse_baize(text, file, rid), None, extra)
    conv = parse_record({**raw, "id": rid}, index, file)
    conv.extra.setdefault("source", source)
    return conv


def sample_baseline(path: str, source: str, n: int, seed: int, strict: bool = False,
                    summary: BadRecordSummary | None = None) -> list[Conversation]:
    if source not in SOURCES:
        raise ValueError(f"unknown baseline source {source!r}; choose one of {SOURCES}")

    def convert(raw, index, file):
        return to_conversation(raw, index, file, source)

    return reservoir(iter_converted(path, convert, strict, summary), n, seed)
