"""Generation speed: streamed cost per token at 32 vs 512 tokens, and server throughput at 1 vs 8 clients.

    python -m bench.bench_generate [--model smollm2] [--long 512] [--short 32] [--requests 8]
                                   [--server-tokens 64] [--repeat 2]

1. Streaming (``Generator.stream``, greedy, ``min_new_tokens`` so lengths are exact): decode time
   per token = (T(N) - T(1)) / (N - 1), the one-token run taking out the prompt's prefill. Target:
   the 512-token figure within 20% of the 32-token one (the cost per token does not grow).
   The detokenizer alone is timed too, ours against transformers' ``TextStreamer`` (which
   re-decodes everything since the last newline), on a 512-token text without newlines.
2. Server (``python -m model.serve`` as a real process, role gpt): ``--requests`` requests of
   ``--server-tokens`` tokens each (``min_tokens`` makes lengths exact), sent one after another by
   one client, then all at once by that many AsyncOpenAI clients. Prints generated tokens/s for
   both and the ratio (target: batched > sequential).
Timings are the best of ``--repeat`` runs: the machine is shared, the minimum is the stable figure.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import openai

from core.conversation import GPT, HUMAN, Turn
from model.generate import Generator, _IncrementalText

TURNS = [Turn(HUMAN, "Write a long story about a cat who learns to program computers.")]
PARAGRAPH = ("The quick brown fox jumps over the lazy dog while a curious cat, who had learned to read "
             "the manuals of old computers, types a small program that sorts the names of every mouse "
             "in the house; naïve café owners watch, amazed, as the screen fills with results. ")


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def stream_time(gen: Generator, n: int, repeat: int) -> float:
    def run():
        stream = gen.stream(TURNS, GPT, temperature=0, max_new_tokens=n, min_new_tokens=n)
        for _ in stream:
            pass
        assert stream.completion.completion_tokens == n, stream.completion
    return best(run, repeat)


def detokenizer_per_token(tokenizer, n: int, repeat: int) -> tuple[float, float]:
    """Seconds per token to turn n streamed token ids into text: ours, and TextStreamer's."""
    import torch
    from transformers import TextStreamer

    ids = tokenizer(PARAGRAPH * 40)["input_ids"][:n]
    assert len(ids) == n

    def ours():
        inc = _IncrementalText(tokenizer)
        for i in ids:
            inc.add([i])

    def theirs():
        streamer = TextStreamer(tokenizer)
        streamer.on_finalized_text = lambda text, stream_end=False: None
        for i in ids:
            streamer.put(torch.tensor([i]))

    return best(ours, repeat) / n, best(theirs, repeat) / n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def throughput(url: str, n_requests: int, tokens: int, concurrent: bool) -> tuple[float, int]:
    """Generated tokens per second for n_requests requests, sent one by one or all at once."""
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=3600) as c:
        async def ask(i: int) -> int:
            r = await c.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"Story number {i}: a cat learns to code."}],
                temperature=0, max_tokens=tokens, extra_body={"min_tokens": tokens})
            assert r.usage.completion_tokens == tokens
            return r.usage.completion_tokens

        t = time.perf_counter()
        if concurrent:
            counts = await asyncio.gather(*[ask(i) for i in range(n_requests)])
        else:
            counts = [await ask(i) for i in range(n_requests)]
        wall = time.perf_counter() - t
    return sum(counts) / wall, sum(counts)


def bench_server(args) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PLATOLM_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "model.serve", "--model", args.model, "--role", "gpt",
                             "--device", "cpu", "--port", str(port), "--max-batch", str(args.requests)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start:\n{open(log.name).read()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        asyncio.run(throughput(url, 1, 4, False))  # warm-up
        seq = max(asyncio.run(throughput(url, args.requests, args.server_tokens, False))[0]
                  for _ in range(args.repeat))
        before = httpx.get(f"{url}/health").json()
        par = max(asyncio.run(throughput(url, args.requests, args.server_tokens, True))[0]
                  for _ in range(args.repeat))
        after = httpx.get(f"{url}/health").json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        os.unlink(log.name)
    batches = after["batches"] - before["batches"]
    requests = after["batched_requests"] - before["batched_requests"]
    print(f"server, {args.requests} requests x {args.server_tokens} tokens:")
    print(f"  1 client, one after another: {seq:8.1f} tokens/s")
    print(f"  {args.requests} concurrent clients:      {par:8.1f} tokens/s "
          f"({requests} requests in {batches} batched generate calls)")
    print(f"  ratio concurrent / sequential: {par / seq:.2f}x (target > 1)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--short", type=int, default=32)
    p.add_argument("--long", type=int, default=512)
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--server-tokens", type=int, default=64)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads, here and in the server (default: torch's own choice); "
                        "1 keeps figures stable on a machine shared with other jobs")
    p.add_argument("--skip-server", action="store_true")
    args = p.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the server process
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    gen = Generator(args.model, device="cpu")
    short_ours, short_theirs = detokenizer_per_token(gen.tokenizer, args.short, 5)
    long_ours, long_theirs = detokenizer_per_token(gen.tokenizer, args.long, 5)
    print("detokenizer only, microseconds per token:")
    print(f"  incremental (ours):       {short_ours * 1e6:7.1f} at {args.short}, {long_ours * 1e6:7.1f} at "
          f"{args.long} tokens ({long_ours / short_ours:.2f}x)")
    print(f"  TextStreamer (baseline):  {short_theirs * 1e6:7.1f} at {args.short}, {long_theirs * 1e6:7.1f} at "
          f"{args.long} tokens ({long_theirs / short_theirs:.2f}x)")
    t1 = stream_time(gen, 1, args.repeat)
    ts = stream_time(gen, args.short, args.repeat)
    tl = stream_time(gen, args.long, args.repeat)
    per_short = (ts - t1) / (args.short - 1)
    per_long = (tl - t1) / (args.long - 1)
    print(f"streamed generation ({args.model}, CPU), milliseconds per generated token:")
    print(f"  {args.short:4d} tokens: {per_short * 1e3:7.2f}")
    print(f"  {args.long:4d} tokens: {per_long * 1e3:7.2f}")
    print(f"  ratio {args.long}/{args.short}: {per_long / per_short:.2f} (target within 0.8-1.2)")
    del gen
    if not args.skip_server:
        bench_server(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
