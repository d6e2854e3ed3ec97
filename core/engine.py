"""The one async engine: many calls or sessions at once, bounded, resumable, counted.

Every command that fans out work (simulated sessions, judgments, answers at an endpoint, embeddings)
hands it here as :class:`Job` objects: a key and a coroutine function. :meth:`Engine.run` keeps at most
``concurrency`` jobs in flight (the tree's one Semaphore-style limiter; request and token rates and the
``openai`` client's retries stay with each call's ``core.endpoint.Endpoint``) and sorts how each ends:

* **done**: the job returned a value, or a :class:`Result` (a record, and figures such as rounds);
* **skipped**: it returned ``Result(..., kind=SKIPPED)``: no record can come of it, now or later;
* **failed**: it raised ``RetriesExhausted``, a non-fatal ``openai.APIError`` or :class:`JobFailed`:
  counted, the first few named on stderr, tried again by the next run;
* **fatal**: ``core.endpoint.FATAL`` (a wrong key, model or URL) or any other exception stops the run at
  once; what finished before it is kept.

A sink (:class:`JobLog`: ``core.appendlog`` files keyed by job) receives every outcome, written by one
task off the event loop, so a run killed at any moment loses only the jobs in flight, and the next run
does only the keys not yet done. Each job's calls are metered (``core.endpoint.CallStats``: retries,
tokens, cost at the endpoint's prices); a progress bar shows jobs done and those figures, and
:meth:`Tally.raise_if_failed` is the one "N failed; run the same command again to retry them".
"""
from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Awaitable, Callable, Hashable, Iterable, Iterator, Protocol

import openai
from tqdm import tqdm

from core.appendlog import AppendLog
from core.endpoint import FATAL, CallStats, RetriesExhausted, describe, track_calls

DONE, SKIPPED, FAILED = "done", "skipped", "failed"
SHOW_FAILURES = 3  # failures named on stderr as they happen; the rest are counted


class JobFailed(Exception):
    """Raised by a job that cannot finish this time (e.g. a model returned nothing usable): counted, retried
    by the next run."""


class JobsFailed(Exception):
    """The end of a run in which some jobs failed; ``core.runner`` prints it and exits 1."""

    def __init__(self, n: int, noun: str, where: str | Path | None = None):
        self.n = n
        reasons = f" (reasons in {where})" if where else ""
        super().__init__(f"{n} {noun} failed{reasons}; run the same command again to retry them")


@dataclass
class Job:
    key: Hashable
    work: Callable[[], Awaitable[Any]]
    stub: dict | None = None  # the fields a failure record starts with (default: {"id": key})


@dataclass
class Result:
    """What a job returns when its outcome is more than a value."""
    record: Any
    kind: str = DONE  # DONE | SKIPPED
    counts: dict = field(default_factory=dict)  # figures summed over the run and shown on the bar (rounds, ...)


@dataclass
class Outcome:
    key: Hashable
    kind: str  # DONE | SKIPPED | FAILED
    record: Any  # the job's record; for a failure its stub with "reason" and "time"
    calls: CallStats
    counts: dict = field(default_factory=dict)


@dataclass
class Tally:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failure_reasons: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    calls: CallStats = field(default_factory=CallStats)
    seconds: float = 0.0

    def add(self, outcome: Outcome) -> None:
        setattr(self, outcome.kind, getattr(self, outcome.kind) + 1)
        if outcome.kind == FAILED:
            self.failure_reasons[outcome.record["reason"]] += 1
        self.counts.update(outcome.counts)
        self.calls.add(outcome.calls)

    def raise_if_failed(self, noun: str, where: str | Path | None = None) -> None:
        """The one message for failed jobs: "N NOUN failed; run the same command again to retry them"."""
        if self.failed:
            raise JobsFailed(self.failed, noun, where)


class Sink(Protocol):
    def start(self) -> asyncio.Task | None: ...
    def put(self, outcome: Outcome) -> None: ...
    async def close(self) -> None: ...


def failure_reason(err: BaseException) -> str:
    return str(err) if isinstance(err, (RetriesExhausted, JobFailed)) else describe(err)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Engine:
    """Runs jobs with bounded concurrency (see the module docstring); one instance per run.

    ``unit`` names a job on the bar and in failure lines ("session", "judgment"); ``total`` and
    ``initial`` are the bar's (default: the number of jobs, 0); ``show_cost`` adds the spend.
    """

    def __init__(self, concurrency: int = 8, *, desc: str = "jobs", unit: str = "job", total: int | None = None,
                 initial: int = 0, show_cost: bool = False, progress: bool | None = None):
        self.concurrency, self.unit, self.show_cost = max(1, concurrency), unit, show_cost
        self.bar_args = dict(desc=desc, unit=unit, total=total, initial=initial, file=sys.stderr,
                             dynamic_ncols=True, disable=None if progress is None else not progress)
        self.tally = Tally()
        self._running: dict[asyncio.Task, CallStats] = {}

    async def run(self, jobs: Iterable[Job], *, need: int | None = None, sink: Sink | None = None,
                  on_done: Callable[[Any], None] | None = None,
                  on_outcome: Callable[[Outcome], None] | None = None) -> Tally:
        """Run ``jobs`` (taken from the iterable only as slots free up) until they run out or ``need`` of
        them are done or failed (skipped ones are replaced). ``on_done(record)`` gets each done record and
        ``on_outcome`` every outcome, in completion order; an exception from either stops the run."""
        if self.bar_args["total"] is None and hasattr(jobs, "__len__"):
            self.bar_args["total"] = len(jobs)
        pending, started = iter(jobs), time.monotonic()
        writer = sink.start() if sink is not None else None
        bar = tqdm(**self.bar_args)
        ticker = asyncio.create_task(self._tick(bar)) if not bar.disable else None

        def settle(outcome: Outcome) -> None:
            self.tally.add(outcome)
            if sink is not None:
                sink.put(outcome)
            if outcome.kind == DONE:
                bar.update(1)
            elif outcome.kind == FAILED and self.tally.failed <= SHOW_FAILURES:
                bar.write(f"{self.unit} {outcome.key} failed: {outcome.record['reason']}", file=sys.stderr)
            self._show(bar)
            if on_outcome is not None:
                on_outcome(outcome)
            if on_done is not None and outcome.kind == DONE:
                on_done(outcome.record)

        try:
            while self._fill(pending, need):
                done, _ = await asyncio.wait({*self._running, *([writer] if writer else [])},
                                             return_when=asyncio.FIRST_COMPLETED)
                if writer in done:
                    writer.result()  # raises the write error
                    raise RuntimeError("the log writer stopped")
                self._settle_all(done, settle)
        finally:
            await self._stop(settle, ticker)
            if sink is not None:
                await sink.close()  # everything finished so far reaches the disk, even on Ctrl-C
            bar.close()
            self.tally.seconds = time.monotonic() - started
        return self.tally

    def _fill(self, pending: Iterator[Job], need: int | None) -> bool:
        """Start jobs while there is room; False when nothing is left running."""
        t = self.tally
        while len(self._running) < self.concurrency and (need is None or len(self._running) + t.done + t.failed < need):
            job = next(pending, None)
            if job is None:
                break
            stats = CallStats()
            self._running[asyncio.create_task(self._attempt(job, stats), name=str(job.key))] = stats
        return bool(self._running)

    def _settle_all(self, done: set[asyncio.Task], settle: Callable[[Outcome], None]) -> None:
        """Settle every finished job, then raise the first error (a fatal call, or a callback's): none is lost."""
        errors = []
        for task in [t for t in self._running if t in done]:  # in start order: the log's order is reproducible
            self._running.pop(task)
            if task.exception() is not None:
                errors.append(task.exception())
                continue
            try:
                settle(task.result())
            except Exception as err:  # noqa: BLE001 - raised below, once every outcome is settled
                errors.append(err)
        if errors:
            raise errors[0]

    @staticmethod
    async def _attempt(job: Job, stats: CallStats) -> Outcome:
        track_calls(stats)
        try:
            result = await job.work()
        except FATAL:
            raise
        except (RetriesExhausted, openai.APIError, JobFailed) as err:
            stub = {"id": job.key} if job.stub is None else job.stub
            return Outcome(job.key, FAILED, {**stub, "reason": failure_reason(err), "time": now()}, stats)
        if not isinstance(result, Result):
            result = Result(result)
        return Outcome(job.key, result.kind, result.record, stats, result.counts)

    async def _stop(self, settle: Callable[[Outcome], None], ticker: asyncio.Task | None) -> None:
        """Cancel what still runs; a job that finished just as the run stopped is kept."""
        running, self._running = list(self._running), {}
        for task in [*running, *([ticker] if ticker else [])]:
            task.cancel()
        for outcome in await asyncio.gather(*running, return_exceptions=True):
            if isinstance(outcome, Outcome) and outcome.kind == DONE:
                settle(outcome)
        if ticker is not None:
            await asyncio.gather(ticker, return_exceptions=True)

    async def _tick(self, bar: tqdm) -> None:
        """Refresh the bar's figures twice a second: sessions take long, their tokens add up meanwhile."""
        while True:
            await asyncio.sleep(0.5)
            self._show(bar)

    def _show(self, bar: tqdm) -> None:
        t, live = self.tally, CallStats()
        live.add(t.calls)
        for stats in self._running.values():
            live.add(stats)
        post = {**t.counts, "tokens": live.tokens}
        if self.show_cost:
            post["spend"] = f"${live.cost:.2f}"
        post.update({k: v for k, v in (("skipped", t.skipped), ("failed", t.failed)) if v})
        bar.set_postfix(post, refresh=True)


def run_jobs(jobs: Iterable[Job], concurrency: int, *, sink: Sink | None = None,
             on_done: Callable[[Any], None] | None = None, on_outcome: Callable[[Outcome], None] | None = None,
             **bar) -> Tally:
    """:meth:`Engine.run` from synchronous code (a new event loop); ``bar`` as :class:`Engine` takes it."""
    jobs = list(jobs)
    return asyncio.run(Engine(concurrency, **bar).run(jobs, sink=sink, on_done=on_done, on_outcome=on_outcome))


def run_interruptible(main: Callable[[], Awaitable[int]], interrupted: str) -> int:
    """``asyncio.run(main())`` where SIGTERM stops the run as Ctrl-C does; an interrupted run prints
    ``interrupted: <interrupted>; run the same command again to continue`` and returns 130."""
    async def runner() -> int:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
        return await main()

    try:
        return asyncio.run(runner())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"interrupted: {interrupted}; run the same command again to continue", file=sys.stderr)
        return 130


# -- the sink: keyed append logs -------------------------------------------------------------------
def side_file(out: Path, kind: str) -> Path:
    """``runs/x.jsonl`` -> ``runs/x.failed.jsonl``."""
    return out.with_suffix(f".{kind}.jsonl") if out.suffix else out.with_name(f"{out.name}.{kind}.jsonl")


class JobLog:
    """The resumable output of a run: done records in ``path``, one per key, appended (fsynced) as jobs end.

    ``key`` is a record field or a function of the record. With ``side_files``, skipped jobs go to
    ``PATH.skipped.jsonl`` (never tried again) and failed ones to ``PATH.failed.jsonl`` (the reasons;
    the next run tries them again). ``read`` reads one of the files (default: ``AppendLog.read``, which
    cuts a torn last line); the last record of a key wins.
    """

    def __init__(self, path: str | Path, key: str | Callable[[Any], Hashable] = "id", side_files: bool = False,
                 read: Callable[[Path], list] | None = None):
        self.path = Path(path)
        self.key = itemgetter(key) if isinstance(key, str) else key
        self.paths = {DONE: self.path}
        if side_files:
            self.paths |= {SKIPPED: side_file(self.path, SKIPPED), FAILED: side_file(self.path, FAILED)}
        read = read or (lambda p: AppendLog(p).read())
        self.done = self.index(read(self.path))
        self.skipped = self.index(read(self.paths[SKIPPED])) if side_files else {}
        self.previously_failed = {}
        if side_files:  # failures of the previous run: not done, so they are simply tried again now
            failed = self.index(read(self.paths[FAILED]))
            self.previously_failed = {k: r for k, r in failed.items() if k not in self.done}
            self.paths[FAILED].unlink(missing_ok=True)
        self.logs = {kind: AppendLog(p) for kind, p in self.paths.items()}
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    @property
    def file(self) -> AppendLog:
        """The done records' log, for a command that also writes it directly (e.g. batched local generation)."""
        return self.logs[DONE]

    def index(self, records: Iterable) -> dict:
        return {self.key(r): r for r in records}

    def todo(self, jobs: Iterable[Job]) -> Iterator[Job]:
        """The jobs whose key is neither done nor skipped."""
        return (job for job in jobs if job.key not in self.done and job.key not in self.skipped)

    def start(self) -> asyncio.Task:
        """Start the writer; the returned task only ends early if writing fails."""
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._write_loop(), name="job-log-writer")
        return self._task

    def put(self, outcome: Outcome) -> None:
        if outcome.kind == DONE:
            self.done[outcome.key] = outcome.record
        if outcome.kind in self.logs:
            self._queue.put_nowait((outcome.kind, outcome.record))

    async def _write_loop(self) -> None:
        while True:
            kind, record = await self._queue.get()
            try:
                # fsync can take milliseconds: keep it off the event loop that drives the jobs
                await asyncio.to_thread(self.logs[kind].append, record)
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
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for log in self.logs.values():
            log.close()
