"""Resumable output for the long streaming commands (clean, split): finished work survives a crash or Ctrl-C.

Output goes first to ``OUT.partial.jsonl``; every chunk of input is followed by a checkpoint,
``OUT.partial.json``, that records how many input conversations are done, the byte size of the
partial file at that point and the command's counters. Rerunning the same command (same input file,
same options) truncates the partial file to the last checkpoint, skips the input already done and
appends. When the input is exhausted, the partial file is streamed into ``OUT`` (atomically) and both
partial files are removed.
"""
from __future__ import annotations

import json
import os
import sys
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

from model.conversation import Conversation, atomic_write, iter_conversations

from data.formats import write_output


class ResumableOutput:
    def __init__(self, out: str | os.PathLike, inp: str | os.PathLike, options: dict, fresh: bool = False):
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial.jsonl")
        self.state_path = self.out.with_name(self.out.name + ".partial.json")
        src = Path(inp)
        stat = src.stat()
        self.key = {"input": str(src.resolve()), "size": stat.st_size, "mtime": stat.st_mtime, **options}
        self.done, self.counters = 0, {}
        state = self._load_state()
        if state is not None and not fresh and state["key"] == self.key:
            self.done, self.counters = state["done"], state["counters"]
            with open(self.partial, "r+b") as f:
                f.truncate(state["bytes"])
            print(f"resuming: {self.done} input conversations already done ({self.partial})", file=sys.stderr)
        else:
            if state is not None and not fresh:
                print(f"warning: {self.partial} was made with other input or options; starting again",
                      file=sys.stderr)
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.partial.write_bytes(b"")
            self.state_path.unlink(missing_ok=True)

    def _load_state(self) -> dict | None:
        if not (self.state_path.exists() and self.partial.exists()):
            return None
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def written(self) -> Iterator[Conversation]:
        """The conversations already in the partial file (to rebuild duplicate filters)."""
        if self.partial.stat().st_size:
            yield from iter_conversations(self.partial, strict=True)

    def run(self, convs: Iterable[Conversation], process: Callable[[list[Conversation]], Iterable[Conversation]],
            counters: Callable[[], dict], chunk: int = 1000) -> None:
        """Skip what is done, then process the rest chunk by chunk, checkpointing after each chunk."""
        it = iter(convs)
        for _ in islice(it, self.done):
            pass
        with open(self.partial, "a", encoding="utf-8") as f:
            while True:
                batch = list(islice(it, chunk))
                if not batch:
                    break
                # a chunk is written whole or not at all: the partial file ends at a checkpoint
                f.write("".join(json.dumps(c.to_sharegpt(), ensure_ascii=False) + "\n" for c in process(batch)))
                f.flush()
                os.fsync(f.fileno())
                self.done += len(batch)
                state = {"key": self.key, "done": self.done, "bytes": f.tell(), "counters": counters()}
                atomic_write(self.state_path, lambda g: json.dump(state, g))

    def finish(self) -> int:
        """Stream the partial file into OUT and remove the partial files; returns the record count."""
        n = write_output(self.out, self.written())
        self.partial.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)
        return n
