"""Generate SocraticChat: the user simulator asks, a teacher LLM answers, for many sessions at once.

Free mode (the simulator opens every session)::

    python -m data.simulate --simulator http://127.0.0.1:8000/v1 \\
        --teacher-base-url https://api.openai.com/v1 --teacher-model gpt-3.5-turbo \\
        --mode free --num-sessions 1000 --max-turns 10 --concurrency 16 --out runs/socratic_chat.jsonl

Seeded mode (each session starts from a seed conversation's first question and answer, verbatim)::

    python -m data.simulate ... --mode seeded --seeds seeds.json --seed 0 --out runs/seeded.jsonl

``--simulator`` is an OpenAI-compatible endpoint (``python -m model.serve --role human``, or vLLM
serving the simulator) or a local checkpoint path, loaded here and batched across sessions. The
teacher key is read from ``$OPENAI_API_KEY`` (or the variable named by ``--teacher-api-key-env``) and
is never printed or written. Re-running the same command continues: finished sessions are kept,
failed ones are tried again, and the run ends with exactly ``--num-sessions`` sessions in ``--out``.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import openai
from tqdm import tqdm

from model.conversation import GPT, HUMAN, BadRecord, BadRecordSummary, iter_conversations
from data.endpoints import LocalSimulator, RemoteSimulator, Sampling, Teacher
from data.retry import RateLimiter, RetryPolicy
from data.session import FATAL, Outcome, SessionConfig, SessionSpec, run_session
from data.sessions_store import CorruptStore, SessionStore

OPENAI_URL = "https://api.openai.com/v1"
TEACHER_SYSTEM = "You are an artificial intelligence assistant."
# free mode: this many skipped sessions in a row means no session can fit; stop instead of spinning
MAX_FREE_SKIPS_IN_A_ROW = 50


class UsageError(Exception):
    pass


# -- which sessions to run ------------------------------------------------------------------------
def free_specs() -> Iterator[SessionSpec]:
    for i in itertools.count():
        yield SessionSpec(f"free-{i:06d}", "free")


def seeded_specs(path: str, seed: int, strict: bool, summary: BadRecordSummary) -> list[SessionSpec]:
    """Every usable seed's first round, in the order ``--seed`` shuffles them into."""
    specs, seen = [], set()
    for conv in iter_conversations(path, strict, summary):
        t = conv.turns
        problem = None
        if len(t) < 2 or t[0].role != HUMAN or t[1].role != GPT:
            problem = "first round is not a human question followed by an answer"
        elif conv.id in seen:
            problem = "duplicate id"
        if problem:
            err = BadRecord(path, conv.id, problem)
            if strict:
                raise err
            summary.add(err)
            continue
        seen.add(conv.id)
        specs.append(SessionSpec(f"seeded-{conv.id}", "seeded", conv.id, (t[0].text, t[1].text)))
    random.Random(seed).shuffle(specs)
    return specs


# -- progress -------------------------------------------------------------------------------------
class Progress:
    """tqdm bar over sessions, with rounds kept, tokens used and (when prices are given) the teacher spend."""

    def __init__(self, total: int, initial: int, price_in: float | None, price_out: float | None,
                 disable: bool = False):
        self.bar = tqdm(total=total, initial=initial, unit="session", dynamic_ncols=True,
                        desc="sessions", disable=disable)
        self.rounds = self.tokens = 0
        self.spend = 0.0 if price_in is not None or price_out is not None else None
        self.price_in, self.price_out = price_in or 0.0, price_out or 0.0
        self.skipped = self.failed = 0
        self._shown = 0.0

    def on_round(self, tokens: int) -> None:
        self.tokens += tokens
        if time.monotonic() - self._shown > 0.5:
            self._refresh()

    def on_outcome(self, outcome: Outcome) -> None:
        if self.spend is not None:
            p, c = outcome.teacher_tokens
            self.spend += (p * self.price_in + c * self.price_out) / 1e6
        if outcome.kind == "finished":
            self.rounds += outcome.rounds
            self.bar.update(1)
        elif outcome.kind == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
        self._refresh()

    def _refresh(self) -> None:
        self._shown = time.monotonic()
        post = {"rounds": self.rounds, "tokens": self.tokens}
        if self.spend is not None:
            post["spend"] = f"${self.spend:.2f}"
        if self.skipped:
            post["skipped"] = self.skipped
        if self.failed:
            post["failed"] = self.failed
        self.bar.set_postfix(post, refresh=True)

    def write(self, msg: str) -> None:
        self.bar.write(msg, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


# -- the run --------------------------------------------------------------------------------------
@dataclass
class RunResult:
    finished: int = 0
    skipped: int = 0
    failed: int = 0
    failure_reasons: Counter = field(default_factory=Counter)


async def run_sessions(specs: Iterable[SessionSpec], need: int, concurrency: int, simulator, teacher,
                       cfg: SessionConfig, store: SessionStore, progress: Progress,
                       free_mode: bool = False) -> RunResult:
    """Keep ``concurrency`` sessions in flight until ``need`` more have finished (or failed) or the
    candidates run out; a skipped candidate is replaced by the next one, a failed one is not (the
    next run retries it)."""
    result = RunResult()
    writer = store.start()
    running: set[asyncio.Task] = set()
    candidates = iter(specs)
    skips_in_a_row = 0

    def record(outcome: Outcome) -> None:
        nonlocal skips_in_a_row
        progress.on_outcome(outcome)
        if outcome.kind == "finished":
            store.add_finished(outcome.record)
            result.finished += 1
            skips_in_a_row = 0
        elif outcome.kind == "skipped":
            store.add_skipped(outcome.record)
            result.skipped += 1
            skips_in_a_row += 1
        else:
            store.add_failed(outcome.record)
            result.failed += 1
            result.failure_reasons[outcome.record["reason"]] += 1
            if result.failed <= 3:
                progress.write(f"session {outcome.record['id']} failed: {outcome.record['reason']}")

    try:
        while True:
            while len(running) + result.finished + result.failed < need and len(running) < concurrency:
                spec = next(candidates, None)
                if spec is None:
                    break
                running.add(asyncio.create_task(run_session(spec, simulator, teacher, cfg, progress.on_round),
                                                name=spec.id))
            if not running:
                break
            done, _ = await asyncio.wait({*running, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer in done:
                writer.result()  # raises the write error
                raise RuntimeError("the session writer stopped")
            running -= done
            errors = [t.exception() for t in done if t.exception() is not None]
            for task in done:  # record every outcome before raising any error (fatal API errors)
                if task.exception() is None:
                    record(task.result())
            if errors:
                raise errors[0]
            if free_mode and skips_in_a_row >= MAX_FREE_SKIPS_IN_A_ROW:
                raise UsageError(f"{skips_in_a_row} sessions in a row ended before their first round; check "
                                 f"--max-context, --max-new-tokens and --teacher-max-tokens")
    finally:
        for task in running:
            task.cancel()
        for outcome in await asyncio.gather(*running, return_exceptions=True):
            if isinstance(outcome, Outcome) and outcome.kind == "finished":
                record(outcome)  # finished just as the run was stopped: keep it
        await store.close()  # everything finished so far reaches the disk, even on Ctrl-C
    return result


# -- command line ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data.simulate", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("simulator (asks)")
    g.add_argument("--simulator", required=True, help="http(s)://.../v1 endpoint, or a local checkpoint path")
    g.add_argument("--simulator-model", help="model name at the endpoint (default: the first it lists)")
    g.add_argument("--simulator-api-key-env", help="environment variable holding the simulator endpoint's key")
    g.add_argument("--simulator-system", help="system prompt sent to the simulator (default: the server's, "
                                              "or Socratic's paper prompt for a local model)")
    g.add_argument("--simulator-temperature", type=float, default=0.7)
    g.add_argument("--simulator-top-p", type=float, default=1.0)
    g.add_argument("--max-new-tokens", type=int, default=512, help="longest question the simulator may write")
    g.add_argument("--max-context", type=int, default=2048,
                   help="token budget of a session in the simulator's tokens: the session ends when the "
                        "next question no longer fits (default 2048, as in the paper)")
    g.add_argument("--template", choices=["dyadic", "chat"], default="dyadic", help="local simulator's template")
    g.add_argument("--device", default="auto", help="local simulator: auto|cpu|cuda")
    g.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="local simulator: HF generate or vLLM")
    g.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="local simulator: wait this long for other sessions to join a batch")
    g = p.add_argument_group("teacher (answers)")
    g.add_argument("--teacher-base-url", default=OPENAI_URL)
    g.add_argument("--teacher-model", default="gpt-3.5-turbo")
    g.add_argument("--teacher-api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the teacher's key (default OPENAI_API_KEY)")
    g.add_argument("--teacher-system", default=TEACHER_SYSTEM)
    g.add_argument("--teacher-temperature", type=float, default=0.7)
    g.add_argument("--teacher-max-tokens", type=int, help="cap on an answer (default: the endpoint's)")
    g.add_argument("--keep-truncated-answers", action="store_true",
                   help="keep an answer cut at --teacher-max-tokens (counted in meta.usage) instead of ending "
                        "the session there")
    g.add_argument("--rpm", type=float, help="teacher requests per minute limit")
    g.add_argument("--tpm", type=float, help="teacher tokens per minute limit")
    g.add_argument("--price-in", type=float, help="teacher USD per 1M prompt tokens (shows spend)")
    g.add_argument("--price-out", type=float, help="teacher USD per 1M completion tokens (shows spend)")
    g = p.add_argument_group("sessions")
    g.add_argument("--mode", choices=["free", "seeded"], default="free")
    g.add_argument("--seeds", help="seeded mode: ShareGPT or OpenAI-messages file (JSON array or JSONL)")
    g.add_argument("--seed", type=int, default=0, help="which seeds are drawn (shuffle) and sampling seeds")
    g.add_argument("--strict", action="store_true", help="stop at the first bad seed record")
    g.add_argument("--num-sessions", type=int, required=True)
    g.add_argument("--max-turns", type=int, help="most rounds per session (default: until the context is full)")
    g.add_argument("--concurrency", type=int, default=16, help="sessions in flight at once")
    g.add_argument("--max-retries", type=int, default=6, help="retries per request (429, 5xx, timeouts, ...)")
    g.add_argument("--retry-base-delay", type=float, default=0.5, help="first backoff in seconds (doubles)")
    g.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request")
    g.add_argument("--out", required=True, help="output JSONL (side files OUT.failed.jsonl, OUT.skipped.jsonl)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def check_args(p: argparse.ArgumentParser, args) -> None:
    if args.mode == "seeded" and not args.seeds:
        p.error("--mode seeded needs --seeds FILE")
    if args.mode == "free" and args.seeds:
        p.error("--seeds is only used with --mode seeded")
    for name in ("num_sessions", "concurrency", "max_context", "max_new_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_turns is not None and args.max_turns < 1:
        p.error("--max-turns must be at least 1")
    if args.max_retries < 0:
        p.error("--max-retries must be >= 0")


def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def api_key(var: str | None, base_url: str, what: str) -> str:
    """The key from the environment; local endpoints without auth get a placeholder."""
    key = os.environ.get(var) if var else None
    if key:
        return key
    if var and base_url.rstrip("/") == OPENAI_URL:
        raise UsageError(f"{what}: set the environment variable {var} to your API key")
    return "EMPTY"


async def main_async(args, progress_disable: bool) -> int:
    policy = RetryPolicy(max_retries=args.max_retries, base_delay=args.retry_base_delay)
    sampling = Sampling(args.simulator_temperature, args.simulator_top_p, args.max_new_tokens, args.max_context)
    store = SessionStore(args.out)
    other = store.modes() - {args.mode}
    if other:
        raise UsageError(f"{args.out} holds {', '.join(sorted(map(str, other)))} sessions; "
                         f"use another --out for --mode {args.mode}")

    summary = BadRecordSummary()
    if args.mode == "seeded":
        specs: Iterable[SessionSpec] = seeded_specs(args.seeds, args.seed, args.strict, summary)
        n_seeds = len(specs)
        if summary.total:
            print(summary.report("seed records"), file=sys.stderr)
    else:
        specs, n_seeds = free_specs(), None
    todo = (s for s in specs if s.id not in store.finished and s.id not in store.skipped)
    have = len(store.finished)
    need = max(0, args.num_sessions - have)
    if store.previously_failed:
        print(f"retrying {len(store.previously_failed)} sessions that failed in the previous run",
              file=sys.stderr)
    if need == 0:
        print(f"{args.out} already holds {have} sessions (asked for {args.num_sessions}); nothing to do",
              file=sys.stderr)
        return 0

    timeout = openai.Timeout(args.request_timeout, connect=min(30.0, args.request_timeout))
    teacher = Teacher(
        openai.AsyncOpenAI(base_url=args.teacher_base_url, max_retries=0, timeout=timeout,
                           api_key=api_key(args.teacher_api_key_env, args.teacher_base_url, "teacher")),
        args.teacher_model, args.teacher_system, args.teacher_temperature, args.teacher_max_tokens,
        policy, RateLimiter(args.rpm, args.tpm), keep_truncated=args.keep_truncated_answers)
    if is_url(args.simulator):
        client = openai.AsyncOpenAI(base_url=args.simulator, max_retries=0, timeout=timeout,
                                    api_key=api_key(args.simulator_api_key_env, args.simulator, "simulator"))
        model = args.simulator_model or await first_model(client, args.simulator)
        simulator = RemoteSimulator(client, model, sampling, policy, args.simulator_system)
    else:
        from model.generate import load_generator

        generator = await asyncio.to_thread(load_generator, args.engine, model_path=args.simulator,
                                            template=args.template, device=args.device,
                                            max_context=args.max_context)
        simulator = LocalSimulator(generator, sampling, policy, args.simulator_system,
                                   window_s=args.batch_window_ms / 1000, seed=args.seed)
        model = args.simulator

    meta = {"simulator": args.simulator, "simulator_model": model,
            "simulator_temperature": args.simulator_temperature, "simulator_top_p": args.simulator_top_p,
            "max_new_tokens": args.max_new_tokens, "max_context": args.max_context,
            "teacher_base_url": args.teacher_base_url, "teacher_model": args.teacher_model,
            "teacher_temperature": args.teacher_temperature, "teacher_system": args.teacher_system}
    cfg = SessionConfig(args.max_turns, args.seed, meta)
    progress = Progress(args.num_sessions, have, args.price_in, args.price_out, progress_disable)
    started = time.monotonic()
    try:
        result = await run_sessions(todo, need, args.concurrency, simulator, teacher, cfg, store, progress,
                                    free_mode=args.mode == "free")
    finally:
        progress.close()
        await simulator.close()
        await teacher.close()
    total = have + result.finished
    print(f"finished {result.finished} sessions in {time.monotonic() - started:.1f}s; {args.out} holds "
          f"{total}/{args.num_sessions}; {progress.rounds} rounds, {progress.tokens} tokens"
          + (f", teacher spend ${progress.spend:.2f}" if progress.spend is not None else ""), file=sys.stderr)
    if isinstance(simulator, LocalSimulator):
        print(f"simulator: {simulator.requests} questions generated in {simulator.batches} batched calls",
              file=sys.stderr)
    if result.skipped:
        print(f"skipped {result.skipped} {'seeds' if args.mode == 'seeded' else 'sessions'} that ended before "
              f"a first round could be kept, e.g. a first round that fills --max-context (listed in "
              f"{store.skipped_path})", file=sys.stderr)
    if result.failed:
        print(f"{result.failed} sessions failed (reasons in {store.failed_path}); re-run the same command to "
              f"retry them", file=sys.stderr)
        for reason, n in result.failure_reasons.most_common(3):
            print(f"  {n:>5}  {reason}", file=sys.stderr)
        return 1
    if total < args.num_sessions:
        print(f"only {n_seeds} usable seeds: {total} sessions instead of {args.num_sessions}", file=sys.stderr)
        return 1
    return 0


async def first_model(client: openai.AsyncOpenAI, url: str) -> str:
    try:
        page = await client.models.list()
    except openai.APIError as err:
        raise UsageError(f"could not list the models at {url} ({type(err).__name__}); "
                         f"pass --simulator-model") from None
    if not page.data:
        raise UsageError(f"{url} lists no models; pass --simulator-model")
    return page.data[0].id


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    check_args(p, args)
    disable = True if args.no_progress else False

    async def runner():
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
        return await main_async(args, disable)

    try:
        return asyncio.run(runner())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"interrupted: the finished sessions are saved in {args.out}; re-run the same command to "
              f"continue", file=sys.stderr)
        return 130
    except FATAL as err:
        print(f"error: the endpoint refused the request ({type(err).__name__}, HTTP {err.status_code}); "
              f"check the base URL, model name and key variable", file=sys.stderr)
        return 1
    except (UsageError, CorruptStore, BadRecord, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
