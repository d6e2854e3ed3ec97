"""Topic diversity (mean pairwise cosine) on 100K random unit vectors: ours against the full N x N matrix.

    python -m bench.bench_topic_diversity [--n 100000] [--naive-n 6000] [--dim 384]

* ours: ``eval.question_quality.topic_diversity`` (block-wise normalisation and a running sum of the
  unit vectors; the mean of all N^2 cosines is ``|sum_i e_i|^2 / N^2``), run at ``--n``;
* naive: normalise, build the float64 cosine matrix ``X @ X.T`` and take its means (what the paper's
  script did), run at ``--naive-n`` because at N=100K the matrix alone is 80 GB.
Both run at ``--naive-n`` too, to check they agree. Prints seconds, peak memory (tracemalloc, which
numpy reports to) and time per pair for each, and the ratios (target: bounded memory, time per pair
within 2x of the naive one).
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import numpy as np

from eval.question_quality import topic_diversity
from core.runner import command


def naive(emb: np.ndarray) -> tuple[float, float]:
    x = emb.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    n = len(x)
    return float(sim.mean()), float((sim.sum() - np.trace(sim)) / (n * (n - 1)))


def measure(fn, emb: np.ndarray) -> tuple[tuple[float, float], float, int]:
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn(emb)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_topic_diversity", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--naive-n", type=int, default=6000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    small = unit_vectors(args.naive_n, args.dim, args.seed)
    (ours_s, t_ours_s, m_ours_s), (naive_s, t_naive, m_naive) = measure(topic_diversity, small), measure(naive, small)
    assert np.allclose(ours_s, naive_s, atol=1e-9), (ours_s, naive_s)
    big = unit_vectors(args.n, args.dim, args.seed)
    ours, t_ours, m_ours = measure(topic_diversity, big)

    def row(name, n, seconds, peak, result):
        print(f"{name:<24} N={n:>7}  {seconds:8.3f} s  peak {peak / 2**20:9.1f} MiB  "
              f"{seconds / n**2 * 1e9:9.4f} ns/pair  mean cos {result[0]:.6f} (off-diag {result[1]:+.2e})")

    print(f"embeddings: random unit vectors, dim {args.dim}, float32")
    row("naive full matrix", args.naive_n, t_naive, m_naive, naive_s)
    row("ours", args.naive_n, t_ours_s, m_ours_s, ours_s)
    row("ours", args.n, t_ours, m_ours, ours)
    naive_full_gb = args.n ** 2 * 8 / 1e9
    print(f"naive at N={args.n} would hold a {naive_full_gb:.0f} GB float64 matrix")
    print(f"time per pair, ours (N={args.n}) / naive (N={args.naive_n}): "
          f"{(t_ours / args.n**2) / (t_naive / args.naive_n**2):.5f}x  (target <= 2x)")
    print(f"peak memory, ours (N={args.n}) / naive (N={args.naive_n}): {m_ours / m_naive:.3f}x; "
          f"ours / naive extrapolated to N={args.n}: {m_ours / (naive_full_gb * 1e9):.6f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
