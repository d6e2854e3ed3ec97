"""Data preparation for Socratic / PlatoLM: clean ShareGPT, split to the training length, convert formats,
build seed sets and baseline samples, cut sessions to k rounds, and describe corpora.

Usage (the paper's chain, on the raw ShareGPT dump)::

    python -m data.prepare clean --data sharegpt_raw.json --out sharegpt_clean.json [--rules default|paper]
    python -m data.prepare split --data sharegpt_clean.json --out sharegpt_2048.json \\
        --tokenizer smollm2 --max-length 2048 [--train-role human|gpt] [--no-carry-answer]
    python -m data.prepare stats --data sharegpt_2048.json --tokenizer smollm2 [--json] [--plots DIR]

Other sub-commands::

    python -m data.prepare convert --data FILE --out OUT --to sharegpt|messages|hf
    python -m data.prepare seeds --data FILE --out seeds.json --source wizardlm|sharegpt|dolly [--n 10000] [--seed 125]
    python -m data.prepare baseline --source ultrachat|baize|sharegpt --data FILE|DIR [FILE ...] --out OUT [--n 10000]
    python -m data.prepare truncate --data socraticchat.jsonl --out socraticchat_3r.jsonl --rounds 3
    python -m data.prepare stats --data a.jsonl b.jsonl c.json --name Socratic role-play ShareGPT --tokenizer smollm2
    python -m data.prepare intents --data heldout.json --out intents.json --base-url http://127.0.0.1:8000/v1 \\
        --model teacher [--prompt-file FILE] [--persona] [--concurrency 8] [--json]

Inputs are ShareGPT or OpenAI-messages JSON arrays / JSONL (read streaming; a file cut off mid-record
yields its complete records and a warning) or a Hugging Face datasets directory. Outputs are written atomically: a JSON array, or JSONL when the name ends in .jsonl. Bad
records are skipped and counted, each message naming file, record and reason; ``--strict`` stops at the
first one, before anything is written. ``clean`` and ``split`` checkpoint every ``--checkpoint-every``
input conversations into OUT.partial.jsonl: after a crash or Ctrl-C, the same command resumes where it
stopped (``--fresh`` starts again).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

from core.conversation import GPT, HUMAN, BadRecordSummary, atomic_write, parse_record
from core.errors import UsageError
from core.options import add_flag
from core.runner import command

from core.formats import FORMATS, is_hf_dir, iter_input, write_output, write_rows


def _progress(items: Iterable, desc: str) -> Iterator:
    from tqdm import tqdm

    return iter(tqdm(items, desc=desc, unit=" conv", file=sys.stderr, disable=None, mininterval=1.0))


def _write_report(path: str | None, counts: dict) -> None:
    if path:
        atomic_write(path, lambda f: json.dump(counts, f, indent=2))


def _resumable(args, options: dict, pipeline) -> int:
    """Run a chunked pipeline (clean or split) through a checkpointed output; returns the records written."""
    from core.appendlog import CheckpointedOutput

    out = CheckpointedOutput(args.out, args.inp, {"command": args.command, **options}, fresh=args.fresh)
    if out.done:
        pipeline.restore(out.counters, (parse_record(r, i, out.log.path) for i, r in enumerate(out.written())))
    convs = _progress(iter_input(args.inp, args.strict, summary=args.summary), args.command)
    try:
        out.run(convs, lambda batch: (c.to_sharegpt() for c in pipeline.run(batch)), pipeline.state,
                chunk=args.checkpoint_every)
    except KeyboardInterrupt:
        print(f"interrupted: finished chunks are kept in {out.log.path}; run the same command again to resume",
              file=sys.stderr)
        raise
    return out.finish(lambda rows: write_rows(args.out, rows))


def cmd_clean(args) -> int:
    from data.clean import Cleaner

    if args.rules == "paper" and args.lang is not None:
        raise UsageError("--lang is a setting of --rules default; the paper's rules keep ASCII conversations "
                         "and translation tasks")
    lang = None if args.lang == "all" else (args.lang or "en") if args.rules == "default" else None
    cleaner = Cleaner(lang=lang, keep_ai_mentions=args.keep_ai_mentions, rules=args.rules)
    n = _resumable(args, {"rules": args.rules, "lang": lang, "keep_ai_mentions": args.keep_ai_mentions}, cleaner)
    print(cleaner.table(args.summary.total), file=sys.stderr)
    print(f"kept {n} conversations -> {args.out}", file=sys.stderr)
    _write_report(args.report, cleaner.counts(args.summary.total))
    return 0


def cmd_split(args) -> int:
    from data.split import Splitter
    from model.dyadic import describe_tokenization, training_tokenizer

    tokenizer = training_tokenizer(args.tokenizer, args.tokenization, args.template)
    splitter = Splitter(tokenizer, args.max_length, args.train_role, args.template,
                        args.system, args.min_turns, dedup=not args.keep_duplicates,
                        carry_answer=args.carry_answer, keep_trailing_question=args.keep_trailing_question,
                        cut=args.cut, dedup_key=args.dedup_key)
    options = {k: getattr(args, k) for k in ("tokenizer", "tokenization", "max_length", "train_role", "template",
                                             "system", "min_turns", "keep_duplicates", "keep_trailing_question",
                                             "cut", "dedup_key")}
    n = _resumable(args, {**options, "carry_answer": splitter.carry_answer}, splitter)
    counted = f"counted with {args.tokenizer}, {describe_tokenization(tokenizer, args.tokenization)}"
    print(f"{splitter.report()}\n  {counted}; cut {args.cut}", file=sys.stderr)
    print(f"wrote {n} segments -> {args.out}", file=sys.stderr)
    _write_report(args.report, {**splitter.counts, "over-long segments": splitter.too_long,
                                "tokenizer": args.tokenizer, "tokenization": args.tokenization,
                                "counted with": counted, "cut": args.cut})
    return 0


def cmd_convert(args) -> int:
    convs = _progress(iter_input(args.inp, args.strict, args.summary, args.split), "convert")
    n = write_output(args.out, convs, args.to)
    print(f"wrote {n} conversations ({args.to}) -> {args.out}", file=sys.stderr)
    return 0


def cmd_stats(args) -> int:
    from data.stats import CorpusStats, plot_corpora, table
    from model.dyadic import training_tokenizer

    names = args.name or [Path(p).stem for p in args.inp]
    if len(names) != len(args.inp):
        raise UsageError(f"--name gives {len(names)} names for {len(args.inp)} --data inputs; give one per input")
    tokenizer = training_tokenizer(args.tokenizer, args.tokenization)
    corpora = [(name, CorpusStats(tokenizer).add_all(_progress(iter_input(p, args.strict, args.summary), name)))
               for name, p in zip(names, args.inp)]
    if args.json and len(corpora) == 1:
        print(json.dumps(corpora[0][1].summary()))
    elif args.json:
        print("\n".join(json.dumps({"name": name, **s.summary()}) for name, s in corpora))
    else:
        print(table([(name, s.summary()) for name, s in corpora]))
    if args.plots:
        for path in plot_corpora(corpora, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_seeds(args) -> int:
    from data.seeds import drop_over_budget, sample_seeds

    if args.with_answer and args.source != "dolly":
        raise UsageError("--with-answer is for --source dolly (WizardLM and ShareGPT seeds carry their answer)")
    draw = sample_seeds(args.inp, args.source, args.n, args.seed, args.strict, args.summary, args.with_answer)
    seeds = draw.items
    if args.tokenizer:
        from model.dyadic import training_tokenizer

        seeds = drop_over_budget(seeds, training_tokenizer(args.tokenizer, args.tokenization), args.max_context,
                                 args.inp, args.strict, args.summary)
    print(draw.describe("category"), file=sys.stderr)
    n = write_output(args.out, seeds)
    print(f"wrote {n} seeds -> {args.out}", file=sys.stderr)
    return 0


def baseline_files(paths: list[str]) -> list[str]:
    """The input files: each file given, and the .json / .jsonl files of each directory given."""
    files = []
    for p in map(Path, paths):
        files += sorted(str(f) for f in p.iterdir() if f.suffix in (".json", ".jsonl")) if p.is_dir() else [str(p)]
    return files


def cmd_baseline(args) -> int:
    from data.baselines import sample_baseline

    if args.part and any(Path(p).is_dir() for p in args.inp):
        raise UsageError("--part names one part per file; give files, not directories, with --part")
    files = baseline_files(args.inp)
    excluded = tuple(args.exclude_part) if args.exclude_part is not None else None
    draw = sample_baseline(files, args.source, args.n, args.seed, args.strict, args.summary, args.part, excluded)
    print(draw.describe(), file=sys.stderr)
    if not draw.items:
        hint = " (the ShareGPT baseline takes first segments, ids ending in _0: give a split file)" \
            if args.source == "sharegpt" else ""
        raise UsageError(f"no usable {args.source} records in {', '.join(files) or 'the input'}{hint}")
    n = write_output(args.out, draw.items)
    print(f"wrote {n} {args.source} sessions -> {args.out}", file=sys.stderr)
    return 0


def cmd_truncate(args) -> int:
    from data.split import first_rounds

    counts: Counter = Counter()
    shorter: list[str] = []

    def cut(convs):
        for conv in convs:
            turns, rounds = first_rounds(conv.turns, args.rounds)
            counts["sessions"] += 1
            if rounds < args.rounds:
                shorter.append(conv.id)
                if args.drop_shorter:
                    continue
            counts["cut" if rounds > args.rounds else "kept whole"] += 1
            if "num_of_rounds" in conv.extra:
                conv.extra["num_of_rounds"] = min(rounds, args.rounds)
            conv.turns = turns
            yield conv

    n = write_output(args.out, cut(_progress(iter_input(args.inp, args.strict, args.summary), "truncate")))
    print(f"{counts['sessions']} sessions: {counts['cut']} cut to their first {args.rounds} rounds, "
          f"{len(shorter)} had fewer ({'dropped' if args.drop_shorter else 'kept whole'}); wrote {n} -> {args.out}",
          file=sys.stderr)
    _write_report(args.report, {"rounds": args.rounds, **counts, "shorter": len(shorter), "shorter ids": shorter})
    return 0


def cmd_intents(args) -> int:
    from data.intent_writer import write_intents

    return write_intents(args)


def tokenization(sp) -> None:
    """--tokenization: count tokens exactly as the trainer's option of that name tokenises (same default)."""
    from model.dyadic import TOKENIZATIONS

    sp.add_argument("--tokenization", default="original", choices=TOKENIZATIONS,
                    help="as the trainer's --tokenization (default original: a LLaMA-style tokenizer counts the "
                         "original's slow-tokenizer ids; as_loaded: as transformers loads it)")


def _corpus_commands(sub, command_parser, resumable) -> None:
    """clean, split, convert, stats: the ShareGPT chain and its description."""
    from data.clean import RULES
    from data.split import CUTS, DEDUP_KEYS
    from model.dyadic import TEMPLATES

    sp = command_parser("clean", cmd_clean, "HTML to Markdown, UI noise, AI mentions, language, <2 turns, duplicates")
    sp.add_argument("--rules", default="default", choices=RULES,
                    help="default: FastChat-style chain with py3langid; paper: the original PlatoLM code's rules")
    sp.add_argument("--lang", default=None,
                    help="--rules default: language to keep (py3langid code), or 'all' (default: en)")
    sp.add_argument("--keep-ai-mentions", action="store_true", help="keep conversations naming openai/chatgpt")
    sp.add_argument("--report", help="also write the per-step counts as JSON here")
    resumable(sp)

    sp = command_parser("split", cmd_split, "split long conversations to --max-length tokens as training "
                                            "tokenises them")
    sp.add_argument("--tokenizer", required=True, help="tokenizer path, hub name, or 'smollm2'")
    tokenization(sp)
    sp.add_argument("--max-length", type=int, default=2048, help="tokens per segment, as the trainer's --max-length "
                                                                 "(default 2048)")
    sp.add_argument("--cut", default="original", choices=CUTS,
                    help="original (default): an overflowing answer stays in its segment (which runs over) and "
                         "starts the next, as the original; round: cut between rounds, every segment fits")
    sp.add_argument("--template", default="dyadic", choices=TEMPLATES)
    sp.add_argument("--train-role", default=HUMAN, choices=[HUMAN, GPT],
                    help="whose system prompt is counted: human = Socratic's (default), gpt = PlatoLM's")
    sp.add_argument("--system", default=None, help="count this system prompt instead")
    sp.add_argument("--carry-answer", action=argparse.BooleanOptionalAction, default=None,
                    help="start each later segment with the answer before its first question, as the original "
                         "(default: on for --train-role human, off for gpt, where it would be trained twice)")
    sp.add_argument("--keep-trailing-question", action="store_true",
                    help="keep a last question that has no answer (the original dropped it)")
    sp.add_argument("--min-turns", type=int, default=2, help="drop segments with fewer turns (default: 2)")
    sp.add_argument("--keep-duplicates", action="store_true", help="keep segments identical to an earlier one")
    sp.add_argument("--dedup-key", default="text", choices=DEDUP_KEYS,
                    help="a duplicate has the same concatenated texts (default, the original's) or the same "
                         "roles and texts (turns)")
    sp.add_argument("--report", help="also write the counts and over-long segment ids as JSON here")
    resumable(sp)

    sp = command_parser("convert", cmd_convert, "convert between ShareGPT, OpenAI messages and a datasets directory")
    sp.add_argument("--to", required=True, choices=FORMATS)
    sp.add_argument("--split", default="train", help="split to read from a DatasetDict directory")

    sp = command_parser("stats", cmd_stats, "sessions, utterances, rounds and tokens (human / assistant), "
                                            "one column per input", out=False, many=True,
                        data_help="one or more inputs (JSON array / JSONL files or datasets directories)")
    sp.add_argument("--name", nargs="+", help="a name per input (default: the file names)")
    sp.add_argument("--tokenizer", required=True, help="tokenizer path, hub name, or 'smollm2'")
    tokenization(sp)
    sp.add_argument("--json", action="store_true",
                    help="print JSON instead of a table: one object, or one line per input when several")
    sp.add_argument("--plots", metavar="DIR", help="write PNG histograms here")


def _sample_commands(sub, command_parser) -> None:
    """seeds, baseline, truncate: the corpora drawn from other releases, and the turn ablation."""
    from data.baselines import SOURCES as BASELINE_SOURCES
    from data.seeds import SOURCES as SEED_SOURCES

    def sampled(sp):
        sp.add_argument("--n", type=int, default=10000)
        sp.add_argument("--seed", type=int, default=125, help="the original's seed: 125")

    sp = command_parser("seeds", cmd_seeds, "seed sets for seeded simulation, drawn as the original did")
    sp.add_argument("--source", required=True, choices=SEED_SOURCES)
    sampled(sp)
    sp.add_argument("--with-answer", action="store_true", help="dolly: keep Dolly's response as the first answer")
    sp.add_argument("--tokenizer", help="also skip seeds that leave Socratic no room within --max-context")
    tokenization(sp)
    add_flag(sp, "--max-context", "--max-length", type=int, default=2048,
             help="the simulator's context budget in tokens (default 2048, as data.simulate)")

    sp = command_parser("baseline", cmd_baseline, "baseline corpora (UltraChat, Baize, ShareGPT) to ShareGPT, "
                                                  "sampled by sub-corpus as the original", many=True,
                        data_help="the release files, or directories holding them (.json / .jsonl)")
    sp.add_argument("--source", required=True, choices=BASELINE_SOURCES)
    sampled(sp)
    sp.add_argument("--part", nargs="+", metavar="NAME", help="the sub-corpus of each --data file "
                                                              "(default: read off the release file names)")
    sp.add_argument("--exclude-part", nargs="*", metavar="NAME",
                    help="sub-corpora to leave out (default: baize's alpaca, as the original)")

    sp = command_parser("intents", cmd_intents, "an intent for every conversation (what the person wanted, in the "
                                                "second person), written by a chat model; resumable")
    _intent_flags(sp)

    sp = command_parser("truncate", cmd_truncate, "cut sessions to their first --rounds rounds (turn ablation)")
    sp.add_argument("--rounds", type=int, required=True, metavar="K")
    sp.add_argument("--drop-shorter", action="store_true", help="leave out sessions with fewer than K rounds")
    sp.add_argument("--report", help="also write the counts and the ids of shorter sessions as JSON here")


def _intent_flags(sp) -> None:
    from core.options import add_endpoint_args
    from data.intent_writer import DEFAULT_PERSONA_PROMPT, DEFAULT_PROMPT

    sp.add_argument("--base-url", required=True, help="OpenAI-compatible endpoint of the model that writes them")
    sp.add_argument("--model", required=True, help="the model's name at that endpoint")
    sp.add_argument("--n", type=int, help="only the first N usable conversations (default: all)")
    sp.add_argument("--prompt-file", help=f"prompt with a {{conversation}} placeholder (default "
                                          f"{DEFAULT_PROMPT.relative_to(DEFAULT_PROMPT.parents[2])})")
    sp.add_argument("--persona", action="store_true", help="also write a persona: how the person writes")
    sp.add_argument("--persona-prompt-file", help=f"the persona's prompt (implies --persona; default "
                                                  f"{DEFAULT_PERSONA_PROMPT.relative_to(DEFAULT_PROMPT.parents[2])})")
    sp.add_argument("--max-new-tokens", type=int, default=96, help="longest reply (default 96)")
    sp.add_argument("--temperature", type=float, help="sampling temperature (default: none sent, the endpoint's)")
    add_endpoint_args(sp)
    sp.add_argument("--json", action="store_true", help="print the report (counts, leakage) as one JSON object")
    sp.add_argument("--report", help="also write the report as JSON here")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data.prepare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def command_parser(name, func, help_, out=True, many=False,
                       data_help="input file (JSON array / JSONL) or datasets directory"):
        sp = sub.add_parser(name, help=help_, description=help_)
        add_flag(sp, "--data", "--in", dest="inp", required=True, metavar="FILE", nargs="+" if many else None,
                 help=data_help)
        if out:
            sp.add_argument("--out", required=True, help="output file (.json array or .jsonl)")
        sp.add_argument("--strict", action="store_true", help="stop at the first bad record, before writing")
        sp.set_defaults(func=func)
        return sp

    def resumable(sp):
        sp.add_argument("--fresh", action="store_true", help="ignore the partial output of an interrupted run")
        sp.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                        help="input conversations per checkpoint (default: 1000)")

    _corpus_commands(sub, command_parser, resumable)
    _sample_commands(sub, command_parser)
    return p


def check_inputs(args) -> None:
    """Missing inputs and bad numbers are the user's to fix, before anything runs."""
    for path in args.inp if isinstance(args.inp, list) else [args.inp]:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file")
        if args.command != "baseline" and Path(path).is_dir() and not is_hf_dir(path):
            raise UsageError(f"{path}: a directory that is not a datasets directory (Dataset.save_to_disk)")
    for name in ("n", "rounds", "max_length", "max_context", "checkpoint_every", "max_new_tokens", "concurrency"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.summary = summary = BadRecordSummary()
    check_inputs(args)
    try:
        return args.func(args)
    finally:
        if summary.total:
            print(summary.report(), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
