"""Conversation files in the three formats the data tools read and write.

* ShareGPT: ``{"id", "conversations": [{"from", "value"}]}`` as a JSON array (``.json``) or JSONL (``.jsonl``)
* OpenAI messages: ``{"id", "messages": [{"role", "content"}]}``, JSONL (or a JSON array for ``.json``)
* a Hugging Face ``datasets`` directory (``Dataset.save_to_disk``), rows in ShareGPT shape

Files are read through :func:`core.conversation.iter_conversations` (streaming, cut-off tolerant);
a datasets directory is memory-mapped by ``load_from_disk`` and read row by row. Writing is atomic
and streaming (``write_json_array`` / ``write_jsonl``; ``Dataset.from_generator`` for ``hf``).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from core.conversation import (BadRecord, BadRecordSummary, Conversation, iter_conversations, parse_record,
                                write_json_array, write_jsonl)

FORMATS = ("sharegpt", "messages", "hf")


def is_hf_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists())


def iter_input(path: str | os.PathLike, strict: bool = False, summary: BadRecordSummary | None = None,
               hf_split: str = "train") -> Iterator[Conversation]:
    """Conversations from a ShareGPT/messages file or a datasets directory; bad records skipped into summary."""
    if not is_hf_dir(path):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file (or not a datasets directory)")
        yield from iter_conversations(path, strict, summary)
        return
    yield from _iter_hf(path, strict, summary if summary is not None else BadRecordSummary(), hf_split)


def _iter_hf(path, strict: bool, summary: BadRecordSummary, hf_split: str) -> Iterator[Conversation]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if hf_split not in ds:
            raise BadRecord(path, "-", "no such split", f"{hf_split!r} not in {sorted(ds)}")
        ds = ds[hf_split]
    for index, row in enumerate(ds):
        try:
            yield parse_record(row, index, path)
        except BadRecord as err:
            if strict:
                raise
            summary.add(err)


def _hf_rows(records: list) -> Iterator[dict]:
    for conv in records[0]:
        yield {"id": conv.id, "conversations": conv.to_sharegpt()["conversations"]}


def write_output(path: str | os.PathLike, convs: Iterable[Conversation], to: str = "sharegpt") -> int:
    """Write conversations atomically in format ``to``; JSONL when the path ends in .jsonl. Returns the count.

    ``hf`` keeps ``id`` and ``conversations`` (a system prompt stays as a leading ``system`` turn);
    other top-level fields are dropped because a datasets table needs one schema for every row.
    """
    if to not in FORMATS:
        raise ValueError(f"unknown format {to!r}; choose one of {FORMATS}")
    if to == "hf":
        return _write_hf(path, convs)
    shape = (lambda c: c.to_sharegpt()) if to == "sharegpt" else (lambda c: c.to_messages())
    return write_rows(path, (shape(c) for c in convs), jsonl=to == "messages" and not str(path).endswith(".json"))


def write_rows(path: str | os.PathLike, rows: Iterable[dict], jsonl: bool = False) -> int:
    """Write records atomically: JSONL when the path ends in .jsonl (or ``jsonl``), else a JSON array."""
    if jsonl or str(path).endswith(".jsonl"):
        return write_jsonl(path, rows)
    return write_json_array(path, rows)


def _write_hf(path, convs: Iterable[Conversation]) -> int:
    import datasets

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        features = datasets.Features({"id": datasets.Value("string"), "conversations": datasets.List(
            {"from": datasets.Value("string"), "value": datasets.Value("string")})})
        # a fresh cache dir and an explicit fingerprint: datasets must not try to hash the input stream
        ds = datasets.Dataset.from_generator(_hf_rows, features=features, gen_kwargs={"records": [iter(convs)]},
                                             cache_dir=str(work / "cache"), fingerprint=uuid.uuid4().hex)
        ds.save_to_disk(str(work / "ds"))
        count = len(ds)
        if out.exists():
            shutil.rmtree(out)
        os.replace(work / "ds", out)
        return count
    finally:
        shutil.rmtree(work, ignore_errors=True)


def iter_converted(path: str | os.PathLike, convert: Callable[[Any, int, str], Conversation], strict: bool = False,
                   summary: BadRecordSummary | None = None) -> Iterator[Conversation]:
    """Stream raw records of a JSON array/JSONL file through ``convert`` (which raises BadRecord to skip one)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return iter_conversations(path, strict, summary, parse=lambda raw, i, f: convert(raw, i, str(f)))
