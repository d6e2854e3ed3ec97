"""Seed sets for seeded simulation: the first human question and its first answer, as ShareGPT records.

Sources (the record formats they are published in):

* ``wizardlm``: WizardLM evol-instruct, ``{"instruction", "output"}`` (70K file) or ShareGPT-style
  ``{"idx", "conversations"}`` (V2 196K file)
* ``sharegpt``: ShareGPT / OpenAI-messages records
* ``dolly``: databricks-dolly-15k JSONL, ``{"instruction", "context", "response", "category"}``;
  the context, when present, follows the instruction after a blank line, and the sample is
  stratified by category (each category keeps its share of the file)

Every seed is ``{"id", "conversations": [human, gpt], "source", ["category"]}``.
"""
from __future__ import annotations

from typing import Any

from model.conversation import GPT, HUMAN, BadRecord, BadRecordSummary, Conversation, Turn, parse_record

from data.formats import iter_converted
from data.sampling import reservoir, stratified

SOURCES = ("wizardlm", "sharegpt", "dolly")


def _text(raw: dict, key: str, file: str, rid) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRecord(file, rid, f"missing {key!r}", "expected a non-empty string")
    return value.strip()


def _first_round(conv: Conversation, file: str) -> tuple[str, str]:
    turns = conv.turns
    for i in range(len(turns) - 1):
        if turns[i].role == HUMAN and turns[i + 1].role == GPT:
            return turns[i].text, turns[i + 1].text
    raise BadRecord(file, conv.id, "no answered human turn")


def to_seed(raw: Any, index: int, file: str, source: str) -> Conversation:
    """One raw record of ``source`` -> a two-turn seed Conversation, or BadRecord."""
    if not isinstance(raw, dict):
        raise BadRecord(file, index, "not an object")
    rid = str(raw.get("id", raw.get("idx", index)))
    extra: dict = {"source": source}
    if source == "dolly":
        question = _text(raw, "instruction", file, rid)
        context = raw.get("context")
        if isinstance(context, str) and context.strip():
            question = f"{question}\n\n{context.strip()}"
        answer = _text(raw, "response", file, rid)
        extra["category"] = str(raw.get("category") or "unknown")
        rid = f"dolly_{index}" if "id" not in raw else rid
    elif source == "wizardlm" and "instruction" in raw:
        question, answer = _text(raw, "instruction", file, rid), _text(raw, "output", file, rid)
        rid = f"wizardlm_{index}" if "id" not in raw and "idx" not in raw else rid
    else:
        conv = parse_record({**raw, "id": rid}, index, file)
        question, answer = _first_round(conv, file)
    return Conversation(rid, [Turn(HUMAN, question), Turn(GPT, answer)], None, extra)


def sample_seeds(path: str, source: str, n: int, seed: int, strict: bool = False,
                 summary: BadRecordSummary | None = None) -> list[Conversation]:
    if source not in SOURCES:
        raise ValueError(f"unknown seed source {source!r}; choose one of {SOURCES}")
    summary = summary if summary is not None else BadRecordSummary()

    def convert(raw, index, file):
        return to_seed(raw, index, file, source)

    if source == "dolly":  # two passes: the first (counting) one reports nothing
        summaries = iter([BadRecordSummary(show_first=0), summary])
        return stratified(lambda: iter_converted(path, convert, strict, next(summaries)),
                          key=lambda c: c.extra["category"], n=n, seed=seed)
    return reservoir(iter_converted(path, convert, strict, summary), n, seed)
