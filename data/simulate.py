"""Generate SocraticChat: the user simulator asks, a teacher LLM answers, for many sessions at once.

Free mode (the simulator opens every session; the paper's PlatoLM data)::

    python -m data.simulate --simulator http://127.0.0.1:8000/v1 --teacher-model gpt-3.5-turbo \\
        --mode free --num-sessions 50728 --concurrency 64 --out runs/socraticchat.jsonl

Seeded mode (each session starts from a seed's first question, and its answer when the seed has one,
verbatim; a question-only seed, such as Dolly's, is answered by the teacher first)::

    python -m data.simulate ... --mode seeded --seeds seeds.json --out runs/seeded.jsonl

Static role-play, the paper's baseline (a chat model prompted to act as the user)::

    python -m data.simulate --simulator https://api.openai.com/v1 --simulator-model gpt-3.5-turbo \\
        --simulator-kind roleplay [--roleplay-prompt FILE] ... --out runs/roleplay.jsonl

``--simulator`` is an OpenAI-compatible endpoint (``python -m model.serve --role human``, or
``vllm serve`` of a Socratic checkpoint), repeated to spread sessions over several replicas, or a
local checkpoint path, loaded here and batched across sessions (``--engine vllm`` serves it with
vLLM on a GPU). ``--teacher-base-url`` may be repeated too. When a session ends is ``--end-rule``'s
business (``paper``, the default; ``fit``; ``learned``: see ``data/end_rules.py``); each record says
why it ended. Keys come from environment variables only and are never printed or written.
Re-running the same command continues: finished sessions are kept, failed ones are tried again,
and the run ends with exactly ``--num-sessions`` sessions in ``--out``.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import signal
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from core.conversation import GPT, HUMAN, BadRecord, BadRecordSummary, iter_conversations
from core.endpoint import Endpoint
from core.errors import UsageError
from core.runner import command
from data.end_rules import END_RULES, EndRule, TokenCounter
from data.simulators import (DEFAULT_ROLEPLAY_PROMPT, LocalSimulator, RoleplaySimulator, Sampling,
                            SocraticEndpoint, Teacher)
from data.session import Outcome, SessionConfig, SessionSpec, run_session
from data.sessions_store import SessionStore

TEACHER_SYSTEM = "You are an artificial intelligence assistant."  # the original's system message
SIMULATOR_KINDS = ("socratic", "roleplay")
# free mode: this many skipped sessions in a row means no session can fit; stop instead of spinning
MAX_FREE_SKIPS_IN_A_ROW = 50


# -- which sessions to run ------------------------------------------------------------------------
def free_specs() -> Iterator[SessionSpec]:
    for i in itertools.count():
        yield SessionSpec(f"free-{i:06d}", "free")


def seeded_specs(path: str, seed: int, strict: bool, summary: BadRecordSummary) -> list[SessionSpec]:
    """Every usable seed's first question (and answer, if it has one), in the order ``--seed`` shuffles them into."""
    specs, seen = [], set()
    for conv in iter_conversations(path, strict, summary):
        t = conv.turns
        problem = None
        if t[0].role != HUMAN:
            problem = "the seed does not start with a human question"
        elif conv.id in seen:
            problem = "duplicate id"
        if problem:
            err = BadRecord(path, conv.id, problem)
            if strict:
                raise err
            summary.add(err)
            continue
        seen.add(conv.id)
        answer = t[1].text if len(t) > 1 and t[1].role == GPT else None
        specs.append(SessionSpec(f"seeded-{conv.id}", "seeded", conv.id, t[0].text, answer))
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
    end_reasons: Counter = field(default_factory=Counter)  # of the finished sessions


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
            result.end_reasons[outcome.record["end_reason"]] += 1
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
    g.add_argument("--simulator", required=True, action="append",
                   help="http(s)://.../v1 endpoint (repeat for replicas), or one local checkpoint path")
    g.add_argument("--simulator-kind", choices=SIMULATOR_KINDS, default="socratic",
                   help="socratic: a trained simulator (default); roleplay: a chat model prompted to act as "
                        "the user (the paper's static role-play baseline)")
    g.add_argument("--roleplay-prompt", default=str(DEFAULT_ROLEPLAY_PROMPT),
                   help="role-play system prompt with a {conversation} placeholder (default data/prompts/roleplay.txt)")
    g.add_argument("--simulator-model", help="model name at the endpoint (default: the first it lists)")
    g.add_argument("--simulator-api-key-env", help="environment variable holding the simulator endpoint's key")
    g.add_argument("--simulator-system", help="system prompt of a socratic simulator (default: Socratic's)")
    g.add_argument("--simulator-tokenizer",
                   help="count the budget in this tokenizer (default: the simulator's own when it is local "
                        "or the served checkpoint is on this machine; else the server's usage figures)")
    g.add_argument("--simulator-temperature", type=float, default=0.7)
    g.add_argument("--simulator-top-p", type=float, default=1.0)
    g.add_argument("--max-new-tokens", type=int, default=512, help="longest question the simulator may write")
    g.add_argument("--max-context", type=int, default=2048,
                   help="the session's token budget in the simulator's tokens (default 2048, as in the paper)")
    g.add_argument("--template", choices=["dyadic", "chat"],
                   help="the simulator's template (local simulator, and the tokenizer that counts; default: "
                        "the one its checkpoint records, else dyadic)")
    g.add_argument("--device", default="auto", help="local simulator: auto|cpu|cuda")
    g.add_argument("--engine", choices=["hf", "vllm"], default="hf",
                   help="local simulator: HF generate in this process, or a vLLM server started here (GPU)")
    g.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="local simulator: wait this long for other sessions to join a batch")
    g = p.add_argument_group("teacher (answers)")
    g.add_argument("--teacher-base-url", action="append",
                   help="OpenAI-compatible endpoint; repeat to spread requests (default: the OpenAI API)")
    g.add_argument("--teacher-model", default="gpt-3.5-turbo")
    g.add_argument("--teacher-api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the teacher's key (default OPENAI_API_KEY)")
    g.add_argument("--teacher-system", default=TEACHER_SYSTEM)
    g.add_argument("--teacher-temperature", type=float,
                   help="sampling temperature (default: none sent, the API's default, as the original)")
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
    g.add_argument("--end-rule", choices=END_RULES, default="paper",
                   help="when a session ends (default paper; see data/end_rules.py)")
    g.add_argument("--min-turns", type=int, default=1, help="--end-rule learned: rounds before an end is accepted")
    g.add_argument("--max-turns", type=int, help="most rounds per session (default: until the budget ends it)")
    g.add_argument("--concurrency", type=int, default=16, help="sessions in flight at once")
    g.add_argument("--max-retries", type=int, default=6, help="retries per request (429, 5xx, timeouts, ...)")
    g.add_argument("--retry-base-delay", type=float, help=argparse.SUPPRESS)  # the openai client's back-off now
    g.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request")
    g.add_argument("--out", required=True, help="output JSONL (side files OUT.failed.jsonl, OUT.skipped.jsonl)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def check_args(p: argparse.ArgumentParser, args) -> None:
    if args.mode == "seeded" and not args.seeds:
        p.error("--mode seeded needs --seeds FILE")
    if args.mode == "free" and args.seeds:
        p.error("--seeds is only used with --mode seeded")
    for name in ("num_sessions", "concurrency", "max_context", "max_new_tokens", "min_turns"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_turns is not None and args.max_turns < 1:
        p.error("--max-turns must be at least 1")
    if args.max_retries < 0:
        p.error("--max-retries must be >= 0")
    remote = [is_url(s) for s in args.simulator]
    if not all(remote) and len(args.simulator) > 1:
        p.error("--simulator: several are allowed only as endpoints (http(s)://...), not local paths")
    if args.simulator_kind == "roleplay" and not all(remote):
        p.error("--simulator-kind roleplay needs an endpoint (a chat model to prompt)")


def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


# -- the two sides ---------------------------------------------------------------------------------
async def served_tokenizer(endpoint: Endpoint) -> str | None:
    """The served checkpoint's directory, when the server names one (vLLM and model.serve: ``root``) and it is here."""
    model = await endpoint.model_name()
    for entry in await endpoint.list_models():
        root = entry.get("root") or entry.get("id")
        if entry.get("id") == model and root and Path(root, "tokenizer_config.json").is_file():
            return root
    return None


async def build_simulator(args, rule: EndRule, stack: AsyncExitStack):
    """The simulator the arguments name, and the model name recorded with every session."""
    sampling = Sampling(args.simulator_temperature, args.simulator_top_p, args.max_new_tokens)
    urls, tokenizer = args.simulator, args.simulator_tokenizer
    if not is_url(urls[0]):
        if args.engine == "hf":
            from model.generate import Generator

            gen = await asyncio.to_thread(Generator, urls[0], args.template, args.device,
                                          max_context=args.max_context)
            return LocalSimulator(gen, sampling, rule, args.simulator_system, args.batch_window_ms / 1000), urls[0]
        from model.serve import vllm_server

        tokenizer = tokenizer or urls[0]
        urls = [await stack.enter_async_context(vllm_server(urls[0], "human", args.template, args.max_context))]
    endpoint = Endpoint(urls, args.simulator_model, args.simulator_api_key_env, args.max_retries,
                        args.request_timeout, what="simulator")
    model = await endpoint.model_name()
    if not tokenizer and args.simulator_kind == "socratic":
        tokenizer = await served_tokenizer(endpoint)
    counter = TokenCounter.load(tokenizer, args.template, args.simulator_system) if tokenizer else None
    if args.simulator_kind == "roleplay":
        return RoleplaySimulator.from_file(endpoint, sampling, args.roleplay_prompt, counter), model
    if counter is None:
        print("note: the simulator's tokenizer is unknown (pass --simulator-tokenizer): the budget is counted "
              "from the server's usage figures and the simulator sees the whole conversation", file=sys.stderr)
    return SocraticEndpoint(endpoint, sampling, rule, counter, args.simulator_system), model


def build_teacher(args) -> Teacher:
    endpoint = Endpoint(args.teacher_base_url, args.teacher_model, args.teacher_api_key_env, args.max_retries,
                        args.request_timeout, args.rpm, args.tpm, what="teacher")
    return Teacher(endpoint, args.teacher_system, args.teacher_temperature, args.teacher_max_tokens,
                   args.keep_truncated_answers)


def run_meta(args, simulator, model: str) -> dict:
    """The run's settings, copied into every record: which simulator produced the session, and how."""
    return {"simulator": args.simulator if len(args.simulator) > 1 else args.simulator[0],
            "simulator_kind": args.simulator_kind, "simulator_model": model,
            "simulator_temperature": args.simulator_temperature, "simulator_top_p": args.simulator_top_p,
            "max_new_tokens": args.max_new_tokens, "max_context": args.max_context, "end_rule": args.end_rule,
            "budget_counted_by": "tokenizer" if getattr(simulator, "counter", None) else "server usage",
            "teacher_base_url": args.teacher_base_url, "teacher_model": args.teacher_model,
            "teacher_temperature": args.teacher_temperature, "teacher_system": args.teacher_system}


# -- the run --------------------------------------------------------------------------------------
def plan(args, store: SessionStore) -> tuple[Iterable[SessionSpec], int | None]:
    """The candidates still to run, and how many seeds there are (None in free mode)."""
    other = store.modes() - {args.mode}
    if other:
        raise UsageError(f"{args.out} holds {', '.join(sorted(map(str, other)))} sessions; "
                         f"use another --out for --mode {args.mode}")
    if args.mode == "free":
        specs, n_seeds = free_specs(), None
    else:
        summary = BadRecordSummary()
        specs = seeded_specs(args.seeds, args.seed, args.strict, summary)
        n_seeds = len(specs)
        if summary.total:
            print(summary.report("seed records"), file=sys.stderr)
    return (s for s in specs if s.id not in store.finished and s.id not in store.skipped), n_seeds


async def main_async(args) -> int:
    if args.retry_base_delay is not None:
        print("note: --retry-base-delay is ignored: retries use the openai client's back-off", file=sys.stderr)
    rule = EndRule(args.end_rule, args.max_context, args.max_new_tokens, args.min_turns)
    store = SessionStore(args.out)
    todo, n_seeds = plan(args, store)
    have = len(store.finished)
    need = max(0, args.num_sessions - have)
    if store.previously_failed:
        print(f"retrying {len(store.previously_failed)} sessions that failed in the previous run", file=sys.stderr)
    if need == 0:
        print(f"{args.out} already holds {have} sessions (asked for {args.num_sessions}); nothing to do",
              file=sys.stderr)
        return 0
    async with AsyncExitStack() as stack:
        teacher = build_teacher(args)
        stack.push_async_callback(teacher.close)
        simulator, model = await build_simulator(args, rule, stack)
        stack.push_async_callback(simulator.close)
        cfg = SessionConfig(rule, args.max_turns, args.seed, run_meta(args, simulator, model))
        progress = Progress(args.num_sessions, have, args.price_in, args.price_out, args.no_progress)
        stack.callback(progress.close)
        started = time.monotonic()
        result = await run_sessions(todo, need, args.concurrency, simulator, teacher, cfg, store, progress,
                                    free_mode=args.mode == "free")
        report(args, result, have, progress, simulator, teacher, store, time.monotonic() - started)
    if result.failed:
        return 1
    if have + result.finished < args.num_sessions:
        print(f"only {n_seeds} usable seeds: {have + result.finished} sessions instead of {args.num_sessions}",
              file=sys.stderr)
        return 1
    return 0


def report(args, result: RunResult, have: int, progress: Progress, simulator, teacher, store: SessionStore,
           seconds: float) -> None:
    total = have + result.finished
    say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    say(f"finished {result.finished} sessions in {seconds:.1f}s; {args.out} holds {total}/{args.num_sessions}; "
        f"{progress.rounds} rounds, {progress.tokens} tokens"
        + (f", teacher spend ${progress.spend:.2f}" if progress.spend is not None else ""))
    say("sessions ended by: " + ", ".join(f"{k} {v}" for k, v in result.end_reasons.most_common()))
    if isinstance(simulator, LocalSimulator):
        say(f"simulator: {simulator.requests} questions generated in {simulator.batches} batched calls")
    for side, endpoint in (("simulator", getattr(simulator, "endpoint", None)), ("teacher", teacher.endpoint)):
        if endpoint is not None and len(endpoint.base_urls) > 1:
            say(f"{side} requests per endpoint: "
                + ", ".join(f"{url} {n}" for url, n in zip(endpoint.base_urls, endpoint.calls)))
    if result.skipped:
        say(f"skipped {result.skipped} {'seeds' if args.mode == 'seeded' else 'sessions'} that ended before a "
            f"round worth keeping, e.g. a first round that fills --max-context (listed in {store.skipped_path})")
    if result.failed:
        say(f"{result.failed} sessions failed (reasons in {store.failed_path}); re-run the same command to "
            f"retry them")
        for reason, n in result.failure_reasons.most_common(3):
            say(f"  {n:>5}  {reason}")


@command
def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    check_args(p, args)

    async def runner():
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
        return await main_async(args)

    try:
        return asyncio.run(runner())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"interrupted: the finished sessions are saved in {args.out}; re-run the same command to "
              f"continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
