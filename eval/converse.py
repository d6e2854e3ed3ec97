"""Evaluate any OpenAI-compatible assistant by talking to it: a user simulator holds conversations with each
assistant, a judge rates them, and the report ranks the assistants with bootstrap intervals.

``run``: the simulator (Socratic at an endpoint or loaded here, or a chat model playing the user) talks to
every ``--assistant NAME=URL[#MODEL]`` on the session engine ``data.simulate`` uses, the assistant in the
teacher's place. Every assistant meets the same users (a paired design): the same intents (``--intents``),
seed questions (``--seeds``) or free openings, the same conversation ids and the same simulator sampling seed
per conversation and turn, so where two assistants answer alike their users ask alike, and differences come
from the assistants. Conversations go to one append log per assistant (a rerun continues: none lost or written
twice); each records why it ended, its tokens and cost (``calls``), and the simulator's failures, counted
apart from the assistant's: an empty user turn, one the detector (``--detector``, default the offline one of
``eval.detector``) judges written as an assistant, one that repeats the previous user turn. An assistant
that errors or times out fails that conversation (counted, retried by the next run, never half-written).

``judge``: ``--mode turn`` rates every assistant turn in its context (1-10; per conversation the mean and the
minimum), ``conversation`` every whole conversation, ``pairwise`` two assistants' conversations with the same
user, in both orders (position bias counted); verdicts go into the run folder (layout:
``eval.converse_judge``), resumable; a reply without a verdict is an error entry, never a score.

``show``: per assistant the mean rating with its 95 % bootstrap interval, the win rate against the baseline
with its interval, the Bradley-Terry strength, turns, end reasons, simulator failures, tokens and cost per
conversation (Markdown, or ``--json``), and a bar chart with the intervals; ``eval.tables`` includes it.

``agreement``: a judge rates conversations people had and rated (records with ``conversations`` or
``messages``, ``model`` and a 1-10 ``rating``); Spearman and Kendall between judge and people per
conversation and between the two rankings of the models, each with a bootstrap interval.

Usage::

    python -m eval.converse run --simulator http://127.0.0.1:8000/v1 \\
        --assistant platolm=http://127.0.0.1:8001/v1 --assistant gpt35=https://api.openai.com/v1#gpt-3.5-turbo \\
        --intents intents.jsonl --num-conversations 100 --max-turns 6 --out runs/converse
    python -m eval.converse judge --run runs/converse --judge-model gpt-4o --mode conversation
    python -m eval.converse judge --run runs/converse --judge-model gpt-4o --mode pairwise --baseline gpt35
    python -m eval.converse show --run runs/converse [--json]
    python -m eval.converse agreement --human rated.jsonl --judge-model gpt-4o --out agreement.jsonl --json
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from core.conversation import HUMAN, BadRecordSummary, iter_conversations
from core.endpoint import Prices, current_calls
from core.engine import DONE, FAILED, Engine, Job, JobLog, Tally, run_interruptible, run_jobs
from core.errors import UsageError
from core.options import MAX_RETRIES, add_endpoint_args
from core.runner import command
from data.end_rules import END_RULES, EndRule
from data.intents import INTENT_MODE
from data.session import SessionConfig, SessionSpec, run_session
from data.sessions_store import SessionStore
from data.simulate import EndReasons, add_simulator_args, free_specs, session_specs, simulator_spec
from data.simulators import TeacherSpec, build_simulator, build_teacher, is_url
from eval import converse_judge as judging
from eval import converse_report as report

MODES = ("free", "seeded", INTENT_MODE)


# -- run ------------------------------------------------------------------------------------------------
def parse_assistant(value: str) -> tuple[str, str, str | None]:
    """``NAME=URL[#MODEL]`` -> (name, url, model or None); UsageError naming the flag otherwise."""
    name, _, rest = value.partition("=")
    url, _, model = rest.partition("#")
    if not judging.NAME.match(name) or not is_url(url):
        raise UsageError(f"--assistant {value!r}: expected NAME=URL[#MODEL], e.g. platolm=http://127.0.0.1:8001/v1 "
                         f"(NAME: letters, digits, '.', '_', '-'; URL: http(s)://...)")
    return name, url, model or None


def answerer_named(text: str) -> str:
    """The session machinery calls the answering side the teacher; here it is the assistant under test."""
    return "assistant_" + text[len("teacher_"):] if text.startswith("teacher_") else text


async def simulator_failures(rec: dict, spec: SessionSpec, detector) -> dict:
    """The simulator's failures in one conversation: an empty user turn (it ended the conversation), turns the
    detector judges written as an assistant, and turns that repeat the previous user turn."""
    asked = [c["value"] for c in rec["conversations"] if c["from"] == HUMAN]
    written = asked[1:] if spec.question is not None else asked  # a seed question is not the simulator's
    assistant_like = 0
    if detector is not None and written:
        assistant_like = int((~await asyncio.to_thread(detector.is_human, written)).sum())
    same = [" ".join(a.lower().split()) for a in asked]
    return {"empty": int(rec["end_reason"] == "empty_question"), "assistant_like": assistant_like,
            "repeated": sum(a == b for a, b in zip(same, same[1:]))}


async def conversation(spec: SessionSpec, simulator, assistant, cfg: SessionConfig, name: str, detector):
    """One conversation of the assistant ``name`` (a ``core.engine`` job): the session record, renamed for an
    evaluation, with the simulator's failures and the calls' tokens and cost."""
    result = await run_session(spec, simulator, assistant, cfg)
    rec = {**result.record, "assistant": name, "end_reason": answerer_named(result.record["end_reason"])}
    meta = rec.pop("meta", None)
    if meta is not None:
        rec["usage"] = {answerer_named(k): v for k, v in meta["usage"].items()}
        rec["finished_at"] = meta["finished_at"]
    if result.kind == DONE:
        rec["simulator_failures"] = await simulator_failures(rec, spec, detector)
    calls = current_calls()
    rec["calls"] = {"prompt_tokens": calls.prompt_tokens, "completion_tokens": calls.completion_tokens,
                    "tokens": calls.tokens, "cost": round(calls.cost, 6), "retries": calls.retries}
    result.record = rec
    return result


def users(args, simulator_model: str) -> dict:
    """What makes the users the same for every assistant: a rerun or a later assistant must match it."""
    source = args.intents or args.seeds
    return {"simulator_model": simulator_model, "simulator_kind": args.simulator_kind, "mode": args.mode,
            "source": str(Path(source).resolve()) if source else None, "seed": args.seed,
            "max_turns": args.max_turns, "end_rule": args.end_rule, "max_context": args.max_context,
            "max_new_tokens": args.max_new_tokens, "simulator_temperature": args.simulator_temperature,
            "simulator_top_p": args.simulator_top_p, "simulator_system": args.simulator_system,
            **({"roleplay_prompt": args.roleplay_prompt} if args.simulator_kind == "roleplay" else {})}


def check_manifest(folder: judging.RunFolder, args, simulator_model: str, assistants: dict[str, dict]) -> None:
    """Write ``run.json``, or check that this run meets the same users as the earlier ones (and that a name
    keeps naming the same model): otherwise the comparison would not be paired."""
    old, new = folder.manifest(), users(args, simulator_model)
    changed = [f"{k}: {old['users'].get(k)!r} then, {v!r} now" for k, v in new.items()
               if old and old["users"].get(k) != v]
    changed += [f"assistant {n}: model {old['assistants'][n]['model']!r} then, {a['model']!r} now"
                for n, a in assistants.items() if n in old.get("assistants", {})
                and old["assistants"][n]["model"] != a["model"]]
    if changed:
        raise UsageError(f"{folder.path} was run with other settings ({'; '.join(changed)}); the assistants "
                         f"would not meet the same users: use another --out")
    folder.write_manifest({"users": new, "simulator": args.simulator, "detector": args.detector,
                           "assistants": {**old.get("assistants", {}), **assistants}})


def assistant_spec(args, name: str, url: str, model: str | None) -> TeacherSpec:
    priced = args.price_in is not None or args.price_out is not None
    return TeacherSpec((url,), model, args.api_key_env, args.assistant_system, args.assistant_temperature,
                       args.assistant_max_tokens, keep_truncated=True,
                       prices=Prices(args.price_in or 0.0, args.price_out or 0.0) if priced else None,
                       max_retries=args.max_retries, timeout=args.request_timeout, what=f"assistant {name}")


async def run_assistant(args, folder: judging.RunFolder, name: str, assistant, simulator, rule: EndRule,
                        plan: list[SessionSpec] | None, detector) -> tuple[int, Tally, EndReasons]:
    """Hold the missing conversations of one assistant; (conversations it had before, this run's tally, ends)."""
    store = SessionStore(folder.log_path(name))
    have, need = len(store.finished), args.num_conversations - len(store.finished)
    ends = EndReasons(plan is None)
    if need <= 0:
        return have, Tally(), ends
    if store.previously_failed:
        print(f"{name}: retrying {len(store.previously_failed)} conversations that failed in the previous run",
              file=sys.stderr)
    cfg = SessionConfig(rule, args.max_turns, args.seed)
    todo = (s for s in (free_specs() if plan is None else plan) if s.id not in store.done and s.id not in store.skipped)
    jobs = (Job(s.id, functools.partial(conversation, s, simulator, assistant, cfg, name, detector),
                {**s.stub(), "assistant": name}) for s in todo)
    engine = Engine(args.concurrency, desc=name, unit="conversation", total=args.num_conversations, initial=have,
                    show_cost=assistant.endpoint.prices is not None, progress=not args.no_progress)
    return have, await engine.run(jobs, need=need, sink=store, on_outcome=ends), ends


async def run_async(args) -> int:
    assistants = [parse_assistant(a) for a in args.assistant]
    if len({a[0] for a in assistants}) < len(assistants):
        raise UsageError("--assistant: each assistant needs a name of its own")
    folder = judging.RunFolder(args.out, must_exist=False)
    rule = EndRule(args.end_rule, args.max_context, args.max_new_tokens, args.min_turns)
    specs, available = session_specs(args.mode, args.intents or args.seeds, args.seed, args.strict)
    plan = list(specs) if available is not None else None
    detector = None
    if args.detector != "none":
        from eval.detector import load_detector

        detector = load_detector(args.detector)
    results = {}
    async with AsyncExitStack() as stack:
        simulator, simulator_model = await build_simulator(simulator_spec(args), rule, stack)
        stack.push_async_callback(simulator.close)
        answerers = {}
        for name, url, model in assistants:
            answerers[name] = build_teacher(assistant_spec(args, name, url, model))
            stack.push_async_callback(answerers[name].close)
        served = {n: {"url": url, "model": await answerers[n].endpoint.model_name()} for n, url, _ in assistants}
        check_manifest(folder, args, simulator_model, served)
        for name, assistant in answerers.items():
            results[name] = await run_assistant(args, folder, name, assistant, simulator, rule, plan, detector)
    return summarize_run(args, folder, results, available)


def summarize_run(args, folder: judging.RunFolder, results: dict, available: int | None) -> int:
    """Per assistant what this run did; the simulator's failures apart; the one message for failed ones."""
    say = functools.partial(print, file=sys.stderr)
    failed, short = Tally(), []
    for name, (have, tally, ends) in results.items():
        total = have + tally.done
        ended = ", ".join(f"{k} {v}" for k, v in ends.counts.most_common()) or "-"
        say(f"{name}: {total}/{args.num_conversations} conversations in {folder.log_path(name)} "
            f"(+{tally.done} now, ended by: {ended}); {tally.calls.tokens} tokens"
            + (f", ${tally.calls.cost:.4f}" if tally.calls.cost else "") + (f"; {tally.failed} failed" if tally.failed else ""))
        failed.failed += tally.failed
        short += [name] if total < args.num_conversations else []
    counts = {}
    for recs in folder.conversations().values():
        for rec in recs.values():
            for kind, n in rec.get("simulator_failures", {}).items():
                counts[kind] = counts.get(kind, 0) + n
    say("simulator failures (the simulator's, not the assistants'): "
        + (", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none"))
    failed.raise_if_failed("conversations", folder.path / "conversations")
    if short:
        say(f"only {available} usable {'intents' if args.mode == INTENT_MODE else 'seeds'}: fewer than "
            f"{args.num_conversations} conversations for {', '.join(short)}")
        return 1
    say(f"next: python -m eval.converse judge --run {folder.path} --judge-model MODEL --mode conversation")
    return 0


def check_run_args(p: argparse.ArgumentParser, args) -> None:
    given = {"seeded": args.seeds, INTENT_MODE: args.intents}
    if args.seeds and args.intents:
        p.error("give --intents or --seeds, not both")
    args.mode = args.mode or next((m for m, f in given.items() if f), "free")
    if args.mode != "free" and not given[args.mode]:
        p.error(f"--mode {args.mode} needs {'--seeds' if args.mode == 'seeded' else '--intents'} FILE")
    if args.mode == "free" and (args.seeds or args.intents):
        p.error("--mode free takes neither --seeds nor --intents")
    for flag in ("num_conversations", "concurrency", "max_context", "max_new_tokens", "min_turns"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.max_turns is not None and args.max_turns < 1:
        p.error("--max-turns must be at least 1")
    if len(args.simulator) > 1 and not all(map(is_url, args.simulator)):
        p.error("--simulator: several are allowed only as endpoints (http(s)://...), not local paths")
    if args.simulator_kind == "roleplay" and not is_url(args.simulator[0]):
        p.error("--simulator-kind roleplay needs an endpoint (a chat model to prompt)")


def cmd_run(args, parser: argparse.ArgumentParser) -> int:
    check_run_args(parser, args)
    return run_interruptible(lambda: run_async(args), f"the finished conversations are saved in {args.out}")


# -- judge, show, agreement --------------------------------------------------------------------------------
def judge_endpoint(args):
    priced = args.price_in is not None or args.price_out is not None
    return judging.judge_endpoint(args.judge_model, args.judge_base_url, args.api_key_env, args.max_retries,
                                  Prices(args.price_in or 0.0, args.price_out or 0.0) if priced else None)


def judge_run(jobs: list[Job], log: JobLog, args, noun: str) -> Tally:
    return run_jobs(jobs, args.concurrency, sink=log, desc=noun, unit=noun.rstrip("s"),
                    show_cost=args.price_in is not None or args.price_out is not None, progress=not args.no_progress)


def cmd_judge(args) -> int:
    folder = judging.RunFolder(args.run)
    names = folder.assistants()
    if args.baseline is not None and args.baseline not in names:
        raise UsageError(f"--baseline {args.baseline!r} is not an assistant of {folder.path} ({', '.join(names)})")
    if args.mode == "pairwise" and len(names) < 2:
        raise UsageError(f"{folder.path}: pairwise verdicts need two assistants; it has {len(names)}")
    prompt = judging.load_prompt(args.mode, args.prompt_file, args.judge_model)
    convs = folder.conversations()
    items = judging.make_items(args.mode, convs, args.baseline)
    path = folder.judgment_path(args.judge_model, args.mode)
    log = JobLog(path, judging.verdict_key, side_files=True)
    todo = [i for i in items if i.key not in log.done]
    calls = len(todo) * (2 if args.mode == "pairwise" else 1)
    print(f"{len(items)} {args.mode} verdicts, {len(items) - len(todo)} already in {path}; {calls} calls to the "
          f"judge {args.judge_model}", file=sys.stderr)
    if not todo:
        return 0
    tally = judge_run(judging.judge_jobs(judge_endpoint(args), prompt, todo, convs), log, args, "verdicts")
    errors = sum(r["error"] is not None for r in log.done.values())
    print(f"{len(log.done)} verdicts in {path}: {errors} replies without a verdict (kept as errors, never scored); "
          f"{tally.calls.tokens} judge tokens" + (f", ${tally.calls.cost:.4f}" if tally.calls.cost else ""),
          file=sys.stderr)
    tally.raise_if_failed("verdicts", log.paths[FAILED])
    return 0


def cmd_show(args) -> int:
    summary = report.summarize(judging.RunFolder(args.run), args.judge_model, args.baseline, args.seed)
    png = Path(args.plot) if args.plot else Path(args.run) / "converse.png"
    report.plot(summary, png)
    if png.is_file():
        print(f"chart written to {png}", file=sys.stderr)
    print(json.dumps(summary) if args.json else "\n".join(report.markdown(summary)))
    return 0


def read_rated(path: str, strict: bool) -> list[dict]:
    """The rated conversations of ``--human``; bad records counted; none usable is a one-line error."""
    if not Path(path).is_file():
        raise UsageError(f"{path}: human-ratings file not found")
    summary = BadRecordSummary()
    records = list(iter_conversations(path, strict, summary, parse=judging.parse_rated))
    if not records:
        raise UsageError(f"{path}: no conversation with a 'model' and a 1-10 'rating' "
                         f"({summary.total} records skipped)")
    if summary.total:
        print(summary.report("rated conversations"), file=sys.stderr)
    if len({r["id"] for r in records}) < len(records):
        raise UsageError(f"{path}: conversation ids repeat; each rated conversation needs an id of its own")
    return records


def cmd_agreement(args) -> int:
    records = read_rated(args.human, args.strict)
    prompt = judging.load_prompt("conversation", args.prompt_file, args.judge_model)
    log = JobLog(args.out, "id", side_files=True)
    todo = [r for r in records if r["id"] not in log.done]
    if todo:
        ep = judge_endpoint(args)
        jobs = [Job(r["id"], functools.partial(judging.judge_rated, ep, prompt, r),
                    {"id": r["id"], "model": r["model"], "human": r["human"]}) for r in todo]
        judge_run(jobs, log, args, "ratings").raise_if_failed("ratings", log.paths[FAILED])
    wanted = {r["id"] for r in records}
    result = report.agreement_report([r for k, r in log.done.items() if k in wanted], args.seed)
    print(json.dumps({"judge": args.judge_model, **result}) if args.json
          else report.agreement_text(result, args.judge_model))
    return 0


# -- command line -------------------------------------------------------------------------------------------
def add_run_parser(sub) -> None:
    r = sub.add_parser("run", help="hold conversations between the simulator and every assistant (resumable)",
                       description="Hold conversations between the simulator and every assistant (resumable).")
    add_simulator_args(r.add_argument_group("simulator (the user)"))
    a = r.add_argument_group("assistants (answer)")
    a.add_argument("--assistant", action="extend", nargs="+", required=True, metavar="NAME=URL[#MODEL]",
                   help="OpenAI-compatible assistants to evaluate (several after one flag, or the flag repeated; "
                        "MODEL default: the first it lists)")
    a.add_argument("--assistant-system", help="system prompt sent to every assistant (default: none)")
    a.add_argument("--assistant-temperature", type=float, help="sampling temperature (default: none sent)")
    a.add_argument("--assistant-max-tokens", type=int, default=1024,
                   help="longest answer (default 1024); a cut answer is kept and counted")
    a.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable with the assistants' key")
    a.add_argument("--price-in", type=float, help="assistant USD per 1M prompt tokens (cost per conversation)")
    a.add_argument("--price-out", type=float, help="assistant USD per 1M completion tokens")
    u = r.add_argument_group("users (the same for every assistant)")
    u.add_argument("--intents", help="one conversation per intent record (data/intents.py), in file order")
    u.add_argument("--seeds", help="one conversation per seed question (ShareGPT / OpenAI messages), shuffled by --seed")
    u.add_argument("--mode", choices=MODES, help="default: intent with --intents, seeded with --seeds, else free")
    u.add_argument("--num-conversations", type=int, required=True, help="conversations per assistant")
    u.add_argument("--max-turns", type=int, help="most rounds per conversation (default: until the budget ends it)")
    u.add_argument("--seed", type=int, default=0, help="seeds' order and the simulator's sampling seeds")
    u.add_argument("--end-rule", choices=END_RULES, default="paper", help="when a conversation ends (data/end_rules.py)")
    u.add_argument("--min-turns", type=int, default=1, help="--end-rule learned: rounds before an end is accepted")
    u.add_argument("--strict", action="store_true", help="stop at the first bad seed or intent record")
    u.add_argument("--detector", default="default",
                   help="judges user turns written as an assistant: default | PATH | judge:MODEL[@URL] | none")
    u.add_argument("--concurrency", type=int, default=8, help="conversations in flight at once")
    u.add_argument("--max-retries", type=int, default=MAX_RETRIES, help="retries per request")
    u.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request")
    u.add_argument("--out", required=True, help="the run folder (layout: eval/converse_judge.py)")
    u.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=functools.partial(cmd_run, parser=r))


def add_judge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge-model", required=True,
                   help=f"the judge, e.g. gpt-4o; {judging.STAND_IN}: an offline stand-in, not a judge")
    p.add_argument("--judge-base-url", help="OpenAI-compatible endpoint (default: the OpenAI API)")
    p.add_argument("--prompt-file", help="another judge prompt (its placeholders are checked)")
    p.add_argument("--price-in", type=float, help="judge USD per 1M prompt tokens (shows the spend)")
    p.add_argument("--price-out", type=float, help="judge USD per 1M completion tokens")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_endpoint_args(p)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.converse", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    add_run_parser(sub)
    j = sub.add_parser("judge", help="rate turns or conversations, or compare assistants pairwise (resumable)")
    j.add_argument("--run", required=True, help="the folder `run` wrote; verdicts are written there")
    j.add_argument("--mode", choices=judging.MODES, required=True)
    j.add_argument("--baseline", help="pairwise: compare every assistant with this one (default: every pair)")
    add_judge_args(j)
    j.set_defaults(func=cmd_judge)
    s = sub.add_parser("show", help="the assistants ranked, with bootstrap intervals; a bar chart")
    s.add_argument("--run", required=True)
    s.add_argument("--judge-model", help="whose verdicts (default: the only judge of the run)")
    s.add_argument("--baseline", help="win rates against this assistant (default: the judge's baseline, if any)")
    s.add_argument("--plot", help="the bar chart (default RUN/converse.png)")
    s.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    s.add_argument("--json", action="store_true", help='one object: {"assistants": [{"name", "mean", "ci", ...}]}')
    s.set_defaults(func=cmd_show)
    g = sub.add_parser("agreement", help="how far a judge agrees with people's ratings of conversations")
    g.add_argument("--human", required=True, help="records with conversations/messages, 'model', 1-10 'rating'")
    g.add_argument("--out", required=True, help="one line per conversation: id, model, human, judge (resumable)")
    g.add_argument("--strict", action="store_true", help="stop at the first bad record")
    g.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    g.add_argument("--json", action="store_true")
    add_judge_args(g)
    g.set_defaults(func=cmd_agreement)
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
