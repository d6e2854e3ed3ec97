"""The resumable output of ``data.simulate``: finished sessions in one JSONL file plus two side files.

* ``OUT.jsonl``: one line per finished session, the training data.
* ``OUT.skipped.jsonl``: candidates that can never make a session (a seed whose first round leaves
  no room in the context), so a re-run does not try them again.
* ``OUT.failed.jsonl``: sessions of the latest run that ran out of retries, with the reason; they are
  not finished, so the next run tries them again.

All three are ``core.appendlog.AppendLog`` files kept by ``core.engine.JobLog`` (one writer task, the
fsync off the event loop), so a crash (even ``kill -9``) loses at most the line being written; a torn
last line is cut off when the store is opened, and everything before it counts as done. The store adds
what a session file must be: objects with a string id, each finished id once.
"""
from __future__ import annotations

from pathlib import Path

from core.appendlog import AppendLog
from core.conversation import BadRecord
from core.engine import FAILED, SKIPPED, JobLog
from core.errors import UsageError


class CorruptStore(UsageError):
    pass


def read_records(path: Path) -> list[dict]:
    """The records of one of the store's files (a torn last line is cut off); each has a string id, once."""
    try:
        records = AppendLog(path).read()
    except BadRecord as err:
        raise CorruptStore(f"{err}; this file was not written by data.simulate or was edited; "
                           f"fix or move it") from None
    seen = set()
    for lineno, rec in enumerate(records, 1):
        if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
            raise CorruptStore(f"{path}: record {lineno}: expected an object with a string 'id'")
        if rec["id"] in seen:
            raise CorruptStore(f"{path}: session {rec['id']!r} appears twice")
        seen.add(rec["id"])
    return records


class SessionStore(JobLog):
    """What is finished, skipped and failed (``core.engine.JobLog`` with side files), read strictly."""

    def __init__(self, out: str | Path):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(out, "id", side_files=True, read=read_records)
        self.skipped_path, self.failed_path = self.paths[SKIPPED], self.paths[FAILED]

    @property
    def finished(self) -> dict[str, dict]:
        return self.done

    def modes(self) -> set[str]:
        return {rec.get("mode") for rec in self.done.values()}
