"""The resumable output of ``data.simulate``: finished sessions in one JSONL file plus two side files.

* ``OUT.jsonl``: one line per finished session, the training data.
* ``OUT.skipped.jsonl``: candidates that can never make a session (a seed whose first round leaves
  no room in the context), so a re-run does not try them again.
* ``OUT.failed.jsonl``: sessions of the latest run that ran out of retries, with the reason; they are
  not finished, so the next run tries them again.

All three are ``core.appendlog.AppendLog`` files, appended by one writer task (the fsync stays off
the event loop), so a crash (even ``kill -9``) loses at most the line being written; a torn last line
is cut off when the store is opened, and everything before it counts as done.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from core.appendlog import AppendLog
from core.conversation import BadRecord
from core.errors import UsageError


class CorruptStore(UsageError):
    pass


def side_file(out: Path, kind: str) -> Path:
    """``runs/x.jsonl`` -> ``runs/x.failed.jsonl``."""
    return out.with_suffix(f".{kind}.jsonl") if out.suffix else out.with_name(f"{out.name}.{kind}.jsonl")


def read_records(path: Path) -> list[dict]:
    """The records of one of the store's files (a torn last line is cut off); each needs a string id."""
    try:
        records = AppendLog(path).read()
    except BadRecord as err:
        raise CorruptStore(f"{err}; this file was not written by data.simulate or was edited; "
                           f"fix or move it") from None
    for lineno, rec in enumerate(records, 1):
        if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
            raise CorruptStore(f"{path}: record {lineno}: expected an object with a string 'id'")
    return records


class SessionStore:
    """What is finished, skipped and failed, and the one writer that appends to those files."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.skipped_path = side_file(self.out, "skipped")
        self.failed_path = side_file(self.out, "failed")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        finished = read_records(self.out)
        self.finished: dict[str, dict] = {}
        for rec in finished:
            if rec["id"] in self.finished:
                raise CorruptStore(f"{self.out}: session {rec['id']!r} appears twice")
            self.finished[rec["id"]] = rec
        self.skipped = {rec["id"]: rec for rec in read_records(self.skipped_path)}
        # failures of the previous run: not finished, so they are simply tried again now
        self.previously_failed = {rec["id"]: rec for rec in read_records(self.failed_path)
                                  if rec["id"] not in self.finished}
        self.failed_path.unlink(missing_ok=True)
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._logs = {path: AppendLog(path) for path in (self.out, self.skipped_path, self.failed_path)}

    def modes(self) -> set[str]:
        return {rec.get("mode") for rec in self.finished.values()}

    # -- the writer ------------------------------------------------------------------------------
    def start(self) -> asyncio.Task:
        """Start the writer; the returned task only ends early if writing fails."""
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._write_loop(), name="session-writer")
        return self._task

    def add_finished(self, record: dict) -> None:
        self._put(self.out, record)

    def add_skipped(self, record: dict) -> None:
        self._put(self.skipped_path, record)

    def add_failed(self, record: dict) -> None:
        self._put(self.failed_path, record)

    def _put(self, path: Path, record: dict) -> None:
        self._queue.put_nowait((path, record))

    async def _write_loop(self) -> None:
        while True:
            path, record = await self._queue.get()
            try:
                # fsync can take milliseconds: keep it off the event loop that drives the sessions
                await asyncio.to_thread(self._logs[path].append, record)
            finally:
                self._queue.task_done()

    async def close(self) -> None:
        """Write everything queued, then stop the writer and close the files."""
        if self._task is not None:
            joined = asyncio.ensure_future(self._queue.join())
            await asyncio.wait({joined, self._task}, return_when=asyncio.FIRST_COMPLETED)
            if self._task.done():  # the writer died (disk full, ...): say why
                joined.cancel()
                self._task.result()
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for log in self._logs.values():
            log.close()
