"""How close ``data.simulate`` comes to the ideal wall time when both endpoints are slow.

Both the simulator and the teacher are ``tests/fault_teacher.py`` servers (real processes on
127.0.0.1) that answer every request after a fixed latency L, with no faults. N sessions of T
rounds take 2·T sequential requests each, so with K sessions in flight the ideal wall time is
ceil(N/K)·T·2·L. The script runs the real CLI entry point (in this process, so interpreter start-up
is not counted) at concurrency K and at 1, in one run, and prints:

* efficiency = ideal / measured at K (target >= 0.8 at K=16)
* speed-up   = measured at 1 / measured at K

Usage::

    python -m bench.bench_simulate [--sessions 32] [--turns 4] [--latency 0.1] [--concurrency 16]
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from data import simulate

ROOT = Path(__file__).resolve().parent.parent


def start_server(tmp: Path, name: str, *args: str) -> tuple[subprocess.Popen, str]:
    port_file = tmp / f"{name}.port"
    proc = subprocess.Popen([sys.executable, "-m", "tests.fault_teacher", "--port-file", str(port_file), *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.log", "wb"))
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} server did not start: {(tmp / f'{name}.log').read_text()}")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port_file.read_text()}/v1"
    httpx.get(f"{url}/models", timeout=10).raise_for_status()
    return proc, url


def timed_run(sim_url: str, teacher_url: str, out: Path, n: int, turns: int, k: int) -> float:
    argv = ["--simulator", sim_url, "--simulator-model", "sim", "--teacher-base-url", teacher_url,
            "--teacher-model", "teacher", "--mode", "free", "--num-sessions", str(n), "--max-turns", str(turns),
            "--concurrency", str(k), "--out", str(out), "--no-progress"]
    start = time.perf_counter()
    rc = simulate.main(argv)
    wall = time.perf_counter() - start
    lines = out.read_text().count("\n")
    if rc != 0 or lines != n:
        raise RuntimeError(f"run at concurrency {k} failed: rc={rc}, {lines} sessions")
    return wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_simulate", description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=32)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--latency", type=float, default=0.1, help="seconds per request, both endpoints")
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args(argv)
    n, t, lat, k = args.sessions, args.turns, args.latency, args.concurrency

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        procs = []
        try:
            sim, sim_url = start_server(tmp, "sim", "--role", "human", "--latency", str(lat))
            procs.append(sim)
            teacher, teacher_url = start_server(tmp, "teacher", "--role", "gpt", "--latency", str(lat))
            procs.append(teacher)
            wall_k = timed_run(sim_url, teacher_url, tmp / "k.jsonl", n, t, k)
            wall_1 = timed_run(sim_url, teacher_url, tmp / "one.jsonl", n, t, 1)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)

    ideal_k = math.ceil(n / k) * t * 2 * lat
    ideal_1 = n * t * 2 * lat
    print(f"N={n} sessions x T={t} rounds, latency L={lat * 1000:.0f} ms per request on both endpoints; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (the client and both servers share them)")
    print(f"{'concurrency':>11}  {'wall s':>8}  {'ideal s':>8}  {'efficiency':>10}")
    print(f"{k:>11}  {wall_k:>8.2f}  {ideal_k:>8.2f}  {ideal_k / wall_k:>10.2f}")
    print(f"{1:>11}  {wall_1:>8.2f}  {ideal_1:>8.2f}  {ideal_1 / wall_1:>10.2f}")
    print(f"efficiency at K={k}: {ideal_k / wall_k:.2f} (target >= 0.80); "
          f"speed-up over one session at a time: {wall_1 / wall_k:.1f}x (ideal {ideal_1 / ideal_k:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
