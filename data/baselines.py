"""The paper's baseline corpora in ShareGPT format, sampled to N sessions as the original notebooks did.

* ``ultrachat``: UltraChat JSONL, ``{"id", "data": [question, answer, question, ...]}`` (OpenAI-messages
  records such as ultrachat_200k are read too). The release comes in three sub-corpora, one or two files
  each: ``world`` (``ultrachat_release_230407.json``), ``writing`` (``ultrachat_material_release_230412.json``
  + ``..._230417.json``) and ``materials`` (``ultrachat_existent_material_release_230420.json``); the
  notebook's own names ``s1_*``, ``s2_*``, ``s3_*`` are recognised too.
* ``baize``: Baize self-chat, ``{"topic", "input": "The conversation between human and AI assistant.
  [|Human|] ... [|AI|] ... [|Human|] "}``, one file per sub-corpus: ``medical_chat_data.json``,
  ``quora_chat_data.json``, ``stackoverflow_chat_data.json``; ``alpaca_chat_data.json`` is left out, as
  in the original.
* ``sharegpt``: the Vicuna baseline, from a split ShareGPT file: first segments (ids ending in ``_0``) only.

Each sub-corpus gets ``round(n * its share)`` sessions (the largest takes what rounding leaves over or
short), drawn by shuffling each sub-corpus in turn with one generator seeded with ``--seed`` (125) and
taking its head; the union is shuffled again with the same seed. The sub-corpus of a file is read off
its name (:func:`part_of`) or given with ``--part``.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from core.conversation import GPT, HUMAN, BadRecord, BadRecordSummary, Conversation, Turn, parse_record

from core.formats import iter_converted
from data.sampling import Draw, balance, round_quotas, shuffled_heads, take, usable

SOURCES = ("ultrachat", "baize", "sharegpt")
# sub-corpora in the order the notebooks shuffled them (the order decides the draw); name patterns
PARTS = {
    "ultrachat": (("world", r"^ultrachat_release|^s1_"), ("writing", r"^ultrachat_material|^s2_"),
                  ("materials", r"existent_material|^s3_")),
    "baize": (("medical", r"^medical"), ("quora", r"^quora"), ("stackoverflow", r"^stackoverflow"),
              ("alpaca", r"^alpaca")),
    "sharegpt": (),
}
EXCLUDED_PARTS = {"baize": ("alpaca",)}
_BAIZE_LAST_HUMAN = re.compile(r"\[\|Human\|\].*$")
_BAIZE_MARKER = re.compile(r"(\[\|Human\|\]|\[\|AI\|\] )")


def part_of(path: str | Path, source: str) -> str:
    """The sub-corpus a release file belongs to, from its name; else the file's stem."""
    name = Path(path).name
    for part, pattern in PARTS[source]:
        if re.search(pattern, name):
            return part
    return Path(path).stem


def group_parts(files: list[str], source: str, names: list[str] | None,
                excluded: tuple[str, ...]) -> dict[str, list[str]]:
    """{part: files}, parts in the notebooks' order (then the others as given), files of a part by name."""
    if names is not None and len(names) != len(files):
        raise ValueError(f"--part names {len(names)} parts for {len(files)} files; give one per file")
    parts: dict[str, list[str]] = {}
    for f, part in zip(files, names or [part_of(f, source) for f in files]):
        if part not in excluded:
            parts.setdefault(part, []).append(f)
    order = [p for p, _ in PARTS[source]]
    ranked = sorted(parts, key=lambda p: order.index(p) if p in order else len(order))  # stable: others as given
    return {p: sorted(parts[p]) for p in ranked}


def parse_baize(text: str, file: str, rid: str) -> list[Turn]:
    """The notebook's parse: cut the unanswered last ``[|Human|]`` line, split on the markers, drop the
    opening sentence, and alternate human / gpt by position."""
    pieces = [p.strip() for p in _BAIZE_MARKER.split(_BAIZE_LAST_HUMAN.sub("", text)) if p.strip()][1:]
    texts = [p for p in pieces if p not in ("[|Human|]", "[|AI|]")]
    if not texts:
        raise BadRecord(file, rid, "no [|Human|]/[|AI|] turns", "expected Baize's self-chat transcript")
    return [Turn((HUMAN, GPT)[i % 2], t) for i, t in enumerate(texts)]


def converter(source: str, part: str) -> Callable[[Any, int, str], Conversation | str]:
    """raw record -> Conversation, the reason an original filter leaves it out, or BadRecord."""
    def convert(raw, index, file):
        if not isinstance(raw, dict):
            raise BadRecord(file, index, "not an object")
        rid = str(raw.get("id", f"{source}_{part}_{index}" if part else f"{source}_{index}"))
        extra = {"source": source, **({"part": part} if part else {})}
        if source == "ultrachat" and "data" in raw:
            data = raw["data"]
            if not isinstance(data, list) or not data or not all(isinstance(x, str) and x.strip() for x in data):
                raise BadRecord(file, rid, "bad 'data'", "expected a list of non-empty strings")
            return Conversation(rid, [Turn((HUMAN, GPT)[i % 2], x) for i, x in enumerate(data)], None, extra)
        if source == "baize":
            if not isinstance(raw.get("input"), str):
                raise BadRecord(file, rid, "missing 'input'", "expected the self-chat transcript string")
            topic = {"topic": raw["topic"]} if isinstance(raw.get("topic"), str) else {}
            return Conversation(rid, parse_baize(raw["input"], file, rid), None, {**extra, **topic})
        conv = parse_record({**raw, "id": rid}, index, file)
        if source == "sharegpt" and not conv.id.endswith("_0"):
            return "later segments (not _0) left out"
        conv.extra.setdefault("source", source)
        return conv
    return convert


def sample_baseline(files: list[str], source: str, n: int, seed: int, strict: bool = False,
                    summary: BadRecordSummary | None = None, part_names: list[str] | None = None,
                    excluded: tuple[str, ...] | None = None) -> Draw:
    """Count every sub-corpus's usable records, draw the original's positions, read the files again to pick."""
    if source not in SOURCES:
        raise ValueError(f"unknown baseline source {source!r}; choose one of {SOURCES}")
    summary = summary if summary is not None else BadRecordSummary()
    left_out: Counter = Counter()
    excluded = EXCLUDED_PARTS.get(source, ()) if excluded is None else excluded
    parts = {"": files} if source == "sharegpt" else group_parts(files, source, part_names, excluded)

    def stream(part: str, report: BadRecordSummary, counts: Counter, strict_: bool):
        for f in parts[part]:
            yield from usable(iter_converted(f, converter(source, part), strict_, report), counts)

    sizes = {part: sum(1 for _ in stream(part, summary, left_out, strict)) for part in parts}
    quotas = balance(round_quotas(sizes, n), sizes, n)
    picked = shuffled_heads(sizes, quotas, seed, reshuffle=source != "sharegpt")
    quiet = BadRecordSummary(show_first=0)  # the first pass reported them
    sessions = take(picked, lambda part: stream(part, quiet, Counter(), False))
    return Draw(sessions, {p or None: k for p, k in sizes.items()}, {p or None: k for p, k in quotas.items()}, left_out)
