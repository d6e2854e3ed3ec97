"""The one append-only JSONL log behind every resumable job (simulation, judging, answering, clean, split).

A job appends one record per finished piece of work, flushed and fsynced, so a crash or Ctrl-C loses
at most the line being written. Reading a log repairs it: a torn last line (no newline: the process
died while writing it) is cut off, and everything before it counts as done; any other unreadable
line is an error naming the file and line (the file was edited or damaged).

:class:`CheckpointedOutput` builds the resumable output of the streaming data commands on the same
log: output records and checkpoint records (input consumed so far, the command's counters) are
appended chunk by chunk; a rerun cuts the log back to its last checkpoint and carries on.
"""
from __future__ import annotations

import json
import os
import sys
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from core.conversation import BadRecord, atomic_write


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


class AppendLog:
    """An append-only JSONL file: ``read``/``iter`` (with torn-line repair), ``append``, ``rewrite``."""

    def __init__(self, path: str | os.PathLike, warn: Callable[[str], None] = _warn):
        self.path, self.warn = Path(path), warn
        self._file = None

    def repair(self) -> None:
        """Cut a torn last line left by an interrupted writer."""
        if not self.path.exists():
            return
        with open(self.path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            pos = size
            while pos > 0:  # scan back to the last newline, a block at a time
                step = min(65536, pos)
                f.seek(pos - step)
                cut = f.read(step).rfind(b"\n")
                if cut >= 0:
                    pos = pos - step + cut + 1
                    break
                pos -= step
            self.warn(f"{self.path}: removing a torn last line ({size - pos} bytes) left by an interrupted run")
            f.truncate(pos)
            f.flush()
            os.fsync(f.fileno())

    def iter(self) -> Iterator[Any]:
        """Stream the complete records (after repair); memory holds one line at a time."""
        self.repair()
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise BadRecord(self.path, f"line {lineno}", "not JSON",
                                        f"{err}; the file was edited or damaged") from None

    def read(self) -> list[Any]:
        return list(self.iter())

    def append(self, record: Any) -> None:
        self.append_many([record])

    def append_many(self, records: Iterable[Any]) -> None:
        """Append records as one write, flushed and fsynced."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def rewrite(self, records: Iterable[Any]) -> None:
        """Replace the whole file atomically (e.g. one record per key, sorted)."""
        self.close()
        atomic_write(self.path, lambda f: f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def truncate(self, size: int) -> None:
        self.close()
        with open(self.path, "r+b") as f:
            f.truncate(size)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


CHECKPOINT = "__checkpoint__"


class CheckpointedOutput:
    """Resumable output of a streaming command: ``OUT.partial.jsonl`` holds finished output records and
    checkpoints; when the input is exhausted the records are streamed into ``OUT`` and the log removed.

    A checkpoint records the input consumed, the command's counters and a key (input file, size, mtime,
    options): a rerun with the same key skips what is done; with another key it starts again.
    """

    def __init__(self, out: str | os.PathLike, inp: str | os.PathLike, options: dict, fresh: bool = False):
        self.out = Path(out)
        self.log = AppendLog(self.out.with_name(self.out.name + ".partial.jsonl"))
        stat = Path(inp).stat()
        self.key = {"input": str(Path(inp).resolve()), "size": stat.st_size, "mtime": stat.st_mtime, **options}
        self.done, self.counters = 0, {}
        last = None if fresh else self._last_checkpoint()
        if last is not None and last[0]["key"] == self.key:
            state, size = last
            self.done, self.counters = state["done"], state["counters"]
            self.log.truncate(size)  # records after the last checkpoint belong to an unfinished chunk
            print(f"resuming: {self.done} input conversations already done ({self.log.path})", file=sys.stderr)
        else:
            if last is not None:
                _warn(f"{self.log.path} was made with other input or options; starting again")
            self.log.rewrite([])

    def _last_checkpoint(self) -> tuple[dict, int] | None:
        if not self.log.path.exists():
            return None
        last, size = None, 0
        self.log.repair()
        with open(self.log.path, "rb") as f:
            for line in f:
                size += len(line)
                if line.startswith(b'{"' + CHECKPOINT.encode()):
                    last = (json.loads(line)[CHECKPOINT], size)
        return last

    def written(self) -> Iterator[dict]:
        """The output records already in the log (to rebuild duplicate filters)."""
        return (r for r in self.log.iter() if CHECKPOINT not in r)

    def run(self, items: Iterable, process: Callable[[list], Iterable[dict]], counters: Callable[[], dict],
            chunk: int = 1000) -> None:
        """Skip what is done, then process the rest chunk by chunk, each chunk followed by a checkpoint."""
        it = iter(items)
        for _ in islice(it, self.done):
            pass
        while batch := list(islice(it, chunk)):
            records = list(process(batch))
            self.done += len(batch)
            checkpoint = {CHECKPOINT: {"key": self.key, "done": self.done, "counters": counters()}}
            self.log.append_many([*records, checkpoint])  # a chunk and its checkpoint land together
        self.log.close()

    def finish(self, write: Callable[[Iterable[dict]], int]) -> int:
        """Stream the records into OUT with ``write`` and remove the log; returns the record count."""
        n = write(self.written())
        self.log.path.unlink(missing_ok=True)
        return n
