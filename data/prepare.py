"""Data preparation for Socratic / PlatoLM: clean ShareGPT, split to the training length, convert formats,
build seed sets and baseline samples, and describe a corpus.

Usage (the paper's chain, on the raw ShareGPT dump)::

    python -m data.prepare clean --in sharegpt_raw.json --out sharegpt_clean.json --lang en
    python -m data.prepare split --in sharegpt_clean.json --out sharegpt_2048.json \\
        --tokenizer smollm2 --max-length 2048 [--train-role human|gpt] [--template dyadic|chat]
    python -m data.prepare stats --in sharegpt_2048.json --tokenizer smollm2 [--json] [--plots DIR]

Other sub-commands::

    python -m data.prepare convert --in FILE --out OUT --to sharegpt|messages|hf
    python -m data.prepare seeds --in FILE --out seeds.json --source wizardlm|sharegpt|dolly [--n 10000] [--seed 125]
    python -m data.prepare baseline --source ultrachat|baize|sharegpt --in FILE --out OUT [--n 10000] [--seed 125]

Inputs are ShareGPT or OpenAI-messages JSON arrays / JSONL (read streaming; a file cut off mid-record
yields its complete records and a warning) or a Hugging Face datasets directory. Outputs are written
atomically: a JSON array, or JSONL when the name ends in .jsonl. Bad records are skipped and counted,
each message naming file, record and reason; ``--strict`` stops at the first one. ``clean`` and
``split`` checkpoint every ``--checkpoint-every`` input conversations into OUT.partial.jsonl: after a
crash or Ctrl-C, the same command resumes where it stopped (``--fresh`` starts again).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Iterable, Iterator

from model.conversation import GPT, HUMAN, BadRecord, BadRecordSummary, Conversation, atomic_write

from data.formats import FORMATS, iter_input, write_output


def _progress(items: Iterable, desc: str) -> Iterator:
    from tqdm import tqdm

    return iter(tqdm(items, desc=desc, unit=" conv", file=sys.stderr, disable=None, mininterval=1.0))


def _write_report(path: str | None, counts: dict) -> None:
    if path:
        atomic_write(path, lambda f: json.dump(counts, f, indent=2))


def _resumable(args, options: dict, pipeline) -> int:
    """Run a chunked pipeline (clean or split) through a resumable output; returns the records written."""
    from data.resume import ResumableOutput

    out = ResumableOutput(args.out, args.inp, {"command": args.command, **options}, fresh=args.fresh)
    if out.done:
        pipeline.restore(out.counters, out.written())
    out.run(_progress(iter_input(args.inp, args.strict, summary=args.summary), args.command),
            pipeline.run, pipeline.state, chunk=args.checkpoint_every)
    return out.finish()


def cmd_clean(args) -> int:
    from data.clean import Cleaner

    lang = None if args.lang == "all" else args.lang
    cleaner = Cleaner(lang=lang, keep_ai_mentions=args.keep_ai_mentions)
    n = _resumable(args, {"lang": lang, "keep_ai_mentions": args.keep_ai_mentions}, cleaner)
    print(cleaner.table(args.summary.total), file=sys.stderr)
    print(f"kept {n} conversations -> {args.out}", file=sys.stderr)
    _write_report(args.report, cleaner.counts(args.summary.total))
    return 0


def cmd_split(args) -> int:
    from model.assets import load_tokenizer

    from data.split import Splitter

    splitter = Splitter(load_tokenizer(args.tokenizer), args.max_length, args.train_role, args.template,
                        args.system, args.min_turns, dedup=not args.keep_duplicates)
    options = {k: getattr(args, k) for k in ("tokenizer", "max_length", "train_role", "template", "system",
                                             "min_turns", "keep_duplicates")}
    n = _resumable(args, options, splitter)
    print(splitter.report(), file=sys.stderr)
    print(f"wrote {n} segments -> {args.out}", file=sys.stderr)
    _write_report(args.report, {**splitter.counts, "over-long segments": splitter.too_long})
    return 0


def cmd_convert(args) -> int:
    convs = _progress(iter_input(args.inp, args.strict, args.summary, args.split), "convert")
    n = write_output(args.out, convs, args.to)
    print(f"wrote {n} conversations ({args.to}) -> {args.out}", file=sys.stderr)
    return 0


def cmd_stats(args) -> int:
    from model.assets import load_tokenizer

    from data.stats import CorpusStats

    stats = CorpusStats(load_tokenizer(args.tokenizer)).add_all(
        _progress(iter_input(args.inp, args.strict, args.summary), "stats"))
    print(json.dumps(stats.summary()) if args.json else stats.table())
    if args.plots:
        for path in stats.plot(args.plots):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _write_sample(args, convs: list[Conversation], what: str) -> int:
    n = write_output(args.out, convs)
    print(f"wrote {n} {what} -> {args.out}", file=sys.stderr)
    return 0


def cmd_seeds(args) -> int:
    from data.seeds import sample_seeds

    convs = sample_seeds(args.inp, args.source, args.n, args.seed, args.strict, args.summary)
    return _write_sample(args, convs, "seeds")


def cmd_baseline(args) -> int:
    from data.baselines import sample_baseline

    convs = sample_baseline(args.inp, args.source, args.n, args.seed, args.strict, args.summary)
    return _write_sample(args, convs, f"{args.source} sessions")


def build_parser() -> argparse.ArgumentParser:
    from data.baselines import SOURCES as BASELINE_SOURCES
    from data.seeds import SOURCES as SEED_SOURCES
    from model.dyadic import TEMPLATES

    p = argparse.ArgumentParser(prog="python -m data.prepare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, func, help_, out=True):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--in", dest="inp", required=True, metavar="FILE",
                        help="input file (JSON array / JSONL) or datasets directory")
        if out:
            sp.add_argument("--out", required=True, help="output file (.json array or .jsonl)")
        sp.add_argument("--strict", action="store_true", help="stop at the first bad record")
        sp.set_defaults(func=func)
        return sp

    def resumable(sp):
        sp.add_argument("--fresh", action="store_true", help="ignore the partial output of an interrupted run")
        sp.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                        help="input conversations per checkpoint (default: 1000)")

    sp = command("clean", cmd_clean, "HTML to Markdown, UI noise, AI mentions, language, <2 turns, duplicates")
    sp.add_argument("--lang", default="en", help="language to keep (py3langid code), or 'all' (default: en)")
    sp.add_argument("--keep-ai-mentions", action="store_true", help="keep conversations naming openai/chatgpt")
    sp.add_argument("--report", help="also write the per-step counts as JSON here")
    resumable(sp)

    sp = command("split", cmd_split, "split long conversations at round boundaries to fit --max-length tokens")
    sp.add_argument("--tokenizer", required=True, help="tokenizer path, hub name, or 'smollm2'")
    sp.add_argument("--max-length", type=int, default=2048)
    sp.add_argument("--template", default="dyadic", choices=TEMPLATES)
    sp.add_argument("--train-role", default=HUMAN, choices=[HUMAN, GPT],
                    help="whose system prompt is counted: human = Socratic's (default), gpt = PlatoLM's")
    sp.add_argument("--system", default=None, help="count this system prompt instead")
    sp.add_argument("--min-turns", type=int, default=2, help="drop segments with fewer turns (default: 2)")
    sp.add_argument("--keep-duplicates", action="store_true", help="keep segments identical to an earlier one")
    sp.add_argument("--report", help="also write the counts and over-long segment ids as JSON here")
    resumable(sp)

    sp = command("convert", cmd_convert, "convert between ShareGPT, OpenAI messages and a datasets directory")
    sp.add_argument("--to", required=True, choices=FORMATS)
    sp.add_argument("--split", default="train", help="split to read from a DatasetDict directory")

    sp = command("seeds", cmd_seeds, "seed sets (first question + first answer) for seeded simulation")
    sp.add_argument("--source", required=True, choices=SEED_SOURCES)
    sp.add_argument("--n", type=int, default=10000)
    sp.add_argument("--seed", type=int, default=125)

    sp = command("stats", cmd_stats, "sessions, utterances, rounds and tokens (human / assistant)", out=False)
    sp.add_argument("--tokenizer", required=True, help="tokenizer path, hub name, or 'smollm2'")
    sp.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    sp.add_argument("--plots", metavar="DIR", help="write PNG histograms here")

    sp = command("baseline", cmd_baseline, "baseline corpora (UltraChat, Baize, ShareGPT) to ShareGPT, sampled")
    sp.add_argument("--source", required=True, choices=BASELINE_SOURCES)
    sp.add_argument("--n", type=int, default=10000)
    sp.add_argument("--seed", type=int, default=125)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.summary = summary = BadRecordSummary()
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        if getattr(args, "fresh", None) is not None:
            print(f"interrupted: finished chunks are kept in {args.out}.partial.jsonl; run the same command again "
                  f"to resume", file=sys.stderr)
        return 130
    except BadRecord as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, OSError) else 2
    if summary.total:
        print(summary.report(), file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
