"""Generate SocraticChat: the user simulator asks, a teacher LLM answers, for many sessions at once.

Free mode (the simulator opens every session; the paper's PlatoLM data)::

    python -m data.simulate --simulator http://127.0.0.1:8000/v1 --teacher-model gpt-3.5-turbo \\
        --mode free --num-sessions 50728 --concurrency 64 --out runs/socraticchat.jsonl

Seeded mode (each session starts from a seed's first question, and its answer when the seed has one,
verbatim; a question-only seed, such as Dolly's, is answered by the teacher first)::

    python -m data.simulate ... --mode seeded --seeds seeds.json --out runs/seeded.jsonl

Conditioned on intents (each session pursues one record's intent, ``data.intents``; the teacher never sees
it; a record with a seed question is answered first, as in seeded mode)::

    python -m data.simulate ... --intents intents.jsonl --num-sessions 1000 --out runs/intents.jsonl

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
import itertools
import random
import sys
from collections import Counter
from contextlib import AsyncExitStack
from typing import Iterable, Iterator

from core.conversation import GPT, HUMAN, BadRecord, BadRecordSummary, iter_conversations
from core.endpoint import Prices
from core.engine import DONE, FAILED, SKIPPED, Engine, Outcome, Tally, run_interruptible
from core.errors import UsageError
from core.options import MAX_RETRIES
from core.runner import command
from data.end_rules import BUDGET_COUNTS, END_RULES, EndRule
from data.intents import INTENT_MODE, read_intents
from data.session import SessionConfig, SessionSpec, session_jobs
from model.dyadic import LEARNED_ENDS, TOKENIZATIONS
from data.sessions_store import SessionStore
from data.simulators import (DEFAULT_ROLEPLAY_PROMPT, TEACHER_SYSTEM, LocalSimulator, Sampling, SimulatorSpec,
                             TeacherSpec, build_simulator, build_teacher, is_url)

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


def session_specs(mode: str, path: str | None, seed: int, strict: bool) -> tuple[Iterable[SessionSpec], int | None]:
    """The sessions of a run in the order they run (free: endless; seeded: shuffled by ``seed``; intent: the
    file's order), and how many there are (None in free mode); bad records are counted on stderr."""
    if mode == "free":
        return free_specs(), None
    summary = BadRecordSummary()
    if mode == INTENT_MODE:
        specs = [rec.spec() for rec in read_intents(path, strict, summary)]
    else:
        specs = seeded_specs(path, seed, strict, summary)
    if summary.total:
        print(summary.report(f"{mode} records"), file=sys.stderr)
    return specs, len(specs)


def run_mode(args) -> str:
    """free | seeded | intent (``--intents`` given)."""
    return INTENT_MODE if getattr(args, "intents", None) else args.mode


# -- command line ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data.simulate", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_simulator_args(p.add_argument_group("simulator (asks)"))
    add_teacher_args(p.add_argument_group("teacher (answers)"))
    add_session_args(p.add_argument_group("sessions"))
    return p


def add_simulator_args(g) -> None:
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
    g.add_argument("--tokenization", default="original", choices=TOKENIZATIONS,
                   help="how that tokenizer counts: as the trainer's --tokenization (default original)")
    g.add_argument("--budget-count", default="training", choices=BUDGET_COUNTS,
                   help="the paper rule's budget in the simulator's training tokens (default), or as the original's "
                        "server counted it: its fast tokenizer and system prompt (see data/end_rules.py)")
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


def add_teacher_args(g) -> None:
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


def add_session_args(g) -> None:
    g.add_argument("--mode", choices=["free", "seeded"], default="free")
    g.add_argument("--seeds", help="seeded mode: ShareGPT or OpenAI-messages file (JSON array or JSONL)")
    g.add_argument("--intents",
                   help="condition every session on one record's 'intent' (and 'persona'; a seed question, if "
                        "any, opens it): JSON array or JSONL, in file order (see data/intents.py)")
    g.add_argument("--seed", type=int, default=0, help="which seeds are drawn (shuffle) and sampling seeds")
    g.add_argument("--strict", action="store_true", help="stop at the first bad seed or intent record")
    g.add_argument("--num-sessions", type=int, required=True)
    g.add_argument("--end-rule", choices=END_RULES, default="paper",
                   help="when a session ends (default paper; see data/end_rules.py)")
    g.add_argument("--min-turns", type=int, default=1, help="--end-rule learned: rounds before an end is accepted")
    g.add_argument("--end-style", choices=list(LEARNED_ENDS), default="project",
                   help="--end-rule learned: the trainer's --end-style; original = the original's <e> experiment, "
                        "whose system prompt the simulator then gets (unless --simulator-system)")
    g.add_argument("--max-turns", type=int, help="most rounds per session (default: until the budget ends it)")
    g.add_argument("--concurrency", type=int, default=16, help="sessions in flight at once")
    g.add_argument("--max-retries", type=int, default=MAX_RETRIES, help="retries per request (429, 5xx, timeouts, ...)")
    g.add_argument("--retry-base-delay", type=float, help=argparse.SUPPRESS)  # the openai client's back-off now
    g.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request")
    g.add_argument("--out", required=True, help="output JSONL (side files OUT.failed.jsonl, OUT.skipped.jsonl)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_args(p: argparse.ArgumentParser, args) -> None:
    if args.mode == "seeded" and not args.seeds:
        p.error("--mode seeded needs --seeds FILE")
    if args.mode == "free" and args.seeds:
        p.error("--seeds is only used with --mode seeded")
    if args.intents and args.mode != "free":
        p.error("--intents runs conditioned sessions (a record's seed question opens its session): "
                "leave out --mode seeded and --seeds")
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
    if args.simulator_system is None:
        args.simulator_system = LEARNED_ENDS[args.end_style].system  # None: Socratic's paper prompt


# -- the two sides, from this command's flags --------------------------------------------------------
def simulator_spec(args) -> SimulatorSpec:
    return SimulatorSpec(
        tuple(args.simulator), kind=args.simulator_kind, model=args.simulator_model,
        key_env=args.simulator_api_key_env, system=args.simulator_system, tokenizer=args.simulator_tokenizer,
        tokenization=args.tokenization, budget_count=args.budget_count,
        sampling=Sampling(args.simulator_temperature, args.simulator_top_p, args.max_new_tokens),
        template=args.template, device=args.device, engine=args.engine, batch_window_s=args.batch_window_ms / 1000,
        roleplay_prompt=args.roleplay_prompt, max_retries=args.max_retries, timeout=args.request_timeout,
        conditioned=run_mode(args) == INTENT_MODE)


def teacher_spec(args) -> TeacherSpec:
    priced = args.price_in is not None or args.price_out is not None
    return TeacherSpec(
        tuple(args.teacher_base_url) if args.teacher_base_url else None, args.teacher_model,
        args.teacher_api_key_env, args.teacher_system, args.teacher_temperature, args.teacher_max_tokens,
        args.keep_truncated_answers, args.rpm, args.tpm,
        Prices(args.price_in or 0.0, args.price_out or 0.0) if priced else None, args.max_retries,
        args.request_timeout)


def run_meta(args, simulator, model: str) -> dict:
    """The run's settings, copied into every record: which simulator produced the session, and how."""
    return {"simulator": args.simulator if len(args.simulator) > 1 else args.simulator[0],
            "simulator_kind": args.simulator_kind, "simulator_model": model,
            "simulator_temperature": args.simulator_temperature, "simulator_top_p": args.simulator_top_p,
            "max_new_tokens": args.max_new_tokens, "max_context": args.max_context, "end_rule": args.end_rule,
            "budget_counted_by": "tokenizer" if getattr(simulator, "counter", None) else "server usage",
            "budget_count": args.budget_count,
            "teacher_base_url": args.teacher_base_url, "teacher_model": args.teacher_model,
            "teacher_temperature": args.teacher_temperature, "teacher_system": args.teacher_system,
            **({"intents": args.intents} if args.intents else {})}


# -- the run --------------------------------------------------------------------------------------
def plan(args, store: SessionStore) -> tuple[Iterable[SessionSpec], int | None]:
    """The candidates still to run, and how many seeds there are (None in free mode)."""
    mode = run_mode(args)
    other = store.modes() - {mode}
    if other:
        raise UsageError(f"{args.out} holds {', '.join(sorted(map(str, other)))} sessions; "
                         f"use another --out for {'--intents' if mode == INTENT_MODE else '--mode ' + mode}")
    specs, n_seeds = session_specs(mode, args.intents or args.seeds, args.seed, args.strict)
    return (s for s in specs if s.id not in store.finished and s.id not in store.skipped), n_seeds


class EndReasons:
    """How the finished sessions ended; in free mode, a long run of skipped ones stops the run (none can fit)."""

    def __init__(self, free_mode: bool):
        self.counts, self.free_mode, self.skips_in_a_row = Counter(), free_mode, 0

    def __call__(self, outcome: Outcome) -> None:
        if outcome.kind == DONE:
            self.counts[outcome.record["end_reason"]] += 1
        if outcome.kind != FAILED:
            self.skips_in_a_row = self.skips_in_a_row + 1 if outcome.kind == SKIPPED else 0
        if self.free_mode and self.skips_in_a_row >= MAX_FREE_SKIPS_IN_A_ROW:
            raise UsageError(f"{self.skips_in_a_row} sessions in a row ended before their first round; check "
                             f"--max-context, --max-new-tokens and --teacher-max-tokens")


async def main_async(args) -> int:
    if args.retry_base_delay is not None:
        print("note: --retry-base-delay is ignored: retries use the openai client's back-off", file=sys.stderr)
    rule = EndRule(args.end_rule, args.max_context, args.max_new_tokens, args.min_turns)
    store = SessionStore(args.out)
    todo, n_seeds = plan(args, store)
    have = len(store.finished)
    if store.previously_failed:
        print(f"retrying {len(store.previously_failed)} sessions that failed in the previous run", file=sys.stderr)
    if have >= args.num_sessions:
        print(f"{args.out} already holds {have} sessions (asked for {args.num_sessions}); nothing to do",
              file=sys.stderr)
        return 0
    ends = EndReasons(run_mode(args) == "free")
    async with AsyncExitStack() as stack:
        teacher = build_teacher(teacher_spec(args))
        stack.push_async_callback(teacher.close)
        simulator, model = await build_simulator(simulator_spec(args), rule, stack)
        stack.push_async_callback(simulator.close)
        cfg = SessionConfig(rule, args.max_turns, args.seed, run_meta(args, simulator, model))
        engine = Engine(args.concurrency, desc="sessions", unit="session", total=args.num_sessions, initial=have,
                        show_cost=teacher.endpoint.prices is not None, progress=not args.no_progress)
        tally = await engine.run(session_jobs(todo, simulator, teacher, cfg), need=args.num_sessions - have,
                                 sink=store, on_outcome=ends)
        report(args, tally, ends.counts, have, simulator, teacher, store)
    tally.raise_if_failed("sessions", store.failed_path)
    if have + tally.done < args.num_sessions:
        print(f"only {n_seeds} usable {'intents' if args.intents else 'seeds'}: {have + tally.done} sessions "
              f"instead of {args.num_sessions}", file=sys.stderr)
        return 1
    return 0


def report(args, tally: Tally, end_reasons: Counter, have: int, simulator, teacher, store: SessionStore) -> None:
    say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    spend = f", teacher spend ${tally.calls.cost:.2f}" if teacher.endpoint.prices is not None else ""
    say(f"finished {tally.done} sessions in {tally.seconds:.1f}s; {args.out} holds {have + tally.done}/"
        f"{args.num_sessions}; {tally.counts['rounds']} rounds, {tally.calls.tokens} tokens{spend}")
    say("sessions ended by: " + ", ".join(f"{k} {v}" for k, v in end_reasons.most_common()))
    if isinstance(simulator, LocalSimulator):
        say(f"simulator: {simulator.batcher.requests} questions generated in {simulator.batcher.batches} "
            f"batched calls")
    for side, endpoint in (("simulator", getattr(simulator, "endpoint", None)), ("teacher", teacher.endpoint)):
        if endpoint is not None and len(endpoint.base_urls) > 1:
            say(f"{side} requests per endpoint: "
                + ", ".join(f"{url} {n}" for url, n in zip(endpoint.base_urls, endpoint.calls)))
    if tally.skipped:
        noun = {"seeded": "seeds", INTENT_MODE: "intents"}.get(run_mode(args), "sessions")
        say(f"skipped {tally.skipped} {noun} that ended before a "
            f"round worth keeping, e.g. a first round that fills --max-context (listed in {store.skipped_path})")
    for reason, n in tally.failure_reasons.most_common(3):
        say(f"  {n:>5} failed: {reason}")


@command
def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    check_args(p, args)
    return run_interruptible(lambda: main_async(args), f"the finished sessions are saved in {args.out}")


if __name__ == "__main__":
    sys.exit(main())
