"""core.engine and core.batcher on their own, against real local servers (tests/fault_teacher.py).

The engine's clients (data.simulate, the judges, eval.simulator, answering, embeddings) have their own
tests; these check the engine's promises directly: the concurrency bound, metering, fatal vs failed,
the failed log and the next run's retry, the one "N failed" message, and a kill -9 in the middle.
"""
from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import time

import httpx
import openai
import pytest

from core.batcher import MicroBatcher
from core.endpoint import Endpoint, Prices
from core.engine import FAILED, SKIPPED, Job, JobFailed, JobLog, JobsFailed, Result, run_jobs
from core.runner import command
from tests.conftest import PYTHON, ROOT, env_offline
from tests.servers import fault_server
from tests.test_simulate import read, read_complete


def chat_jobs(url: str, keys: list[str], **endpoint) -> list[Job]:
    """One chat call per key; the record keeps the reply and its usage."""
    ep = Endpoint(url, "t", None, **endpoint)

    async def ask(key: str) -> dict:
        reply = await ep.chat([{"role": "user", "content": f"question {key}"}])
        return {"id": key, "answer": reply.text, "usage": [reply.prompt_tokens, reply.completion_tokens]}

    return [Job(k, functools.partial(ask, k)) for k in keys]


def stats(server) -> dict:
    return httpx.get(server.url.replace("/v1", "/stats")).json()


def test_concurrency_is_bounded_and_every_call_is_metered(tmp_path, servers):
    # the server holds requests until three are in flight together: a bound below 3 would never finish,
    # one above 3 would show in in_flight_max
    servers.append(srv := fault_server(tmp_path, "held", "--hold", "3"))
    records = []
    jobs = chat_jobs(srv.url, [f"k{i}" for i in range(12)], max_retries=0, timeout=60, prices=Prices(1.0, 2.0))
    tally = run_jobs(jobs, 3, on_done=records.append)
    assert stats(srv)["in_flight_max"] == 3 and stats(srv)["ok"] == 12
    assert (tally.done, tally.failed, tally.skipped) == (12, 0, 0)
    assert sorted(r["id"] for r in records) == sorted(j.key for j in jobs)
    prompt, completion = (sum(r["usage"][i] for r in records) for i in (0, 1))
    assert (tally.calls.prompt_tokens, tally.calls.completion_tokens) == (prompt, completion) and prompt > 0
    assert tally.calls.cost == pytest.approx((prompt * 1.0 + completion * 2.0) / 1e6)


def test_a_fatal_error_stops_the_run_and_keeps_what_finished(tmp_path, servers):
    env = {**env_offline(), "SERVER_KEY": "the-right-key"}
    servers.append(srv := fault_server(tmp_path, "keyed", "--api-key-env", "SERVER_KEY", env=env))

    async def at_once(key: str) -> dict:
        return {"id": key}

    jobs = [Job(f"local-{i}", functools.partial(at_once, f"local-{i}")) for i in range(2)]
    jobs += chat_jobs(srv.url, [f"k{i}" for i in range(10)], max_retries=3)  # sent without the key: 401
    log = JobLog(tmp_path / "out.jsonl")
    with pytest.raises(openai.AuthenticationError):
        run_jobs(jobs, 3, sink=log)
    assert stats(srv)["401"] <= 3  # no retry of a 401, and no job started after it
    assert [r["id"] for r in read(tmp_path / "out.jsonl")] == ["local-0", "local-1"]


def test_failures_are_counted_logged_and_retried_by_the_next_run(tmp_path, servers, capsys):
    servers.append(broken := fault_server(tmp_path, "broken", "--fault-every", "1", "--faults", "500"))
    servers.append(healthy := fault_server(tmp_path, "healthy"))
    out, keys = tmp_path / "answers.jsonl", [f"k{i}" for i in range(4)]

    async def refuse() -> dict:
        raise JobFailed("the model wrote nothing")

    async def never() -> Result:
        return Result({"id": "seed-too-long", "reason": "no room"}, SKIPPED)

    def run(url: str):
        log = JobLog(out, side_files=True)
        jobs = [*chat_jobs(url, keys, max_retries=1), Job("empty", refuse), Job("seed-too-long", never)]
        return log, run_jobs(log.todo(jobs), 2, sink=log)

    log, tally = run(broken.url)
    assert (tally.done, tally.failed, tally.skipped) == (0, 5, 1) and not out.exists()
    failed = {r["id"]: r["reason"] for r in read(log.paths[FAILED])}
    assert sorted(failed) == sorted([*keys, "empty"]) and failed["empty"] == "the model wrote nothing"
    assert all("gave up after 2 attempts" in failed[k] and "HTTP 500" in failed[k] for k in keys)
    assert "failed: " in capsys.readouterr().err  # the first failures are named as they happen
    with pytest.raises(JobsFailed) as err:
        tally.raise_if_failed("answers", log.paths[FAILED])
    assert str(err.value) == (f"5 answers failed (reasons in {log.paths[FAILED]}); run the same command again "
                              f"to retry them")

    @command
    def main(argv=None) -> int:
        tally.raise_if_failed("answers")
        return 0

    assert main() == 1
    assert capsys.readouterr().err == "error: 5 answers failed; run the same command again to retry them\n"

    log, tally = run(healthy.url)  # the next run: every failure is tried again; the skipped job is not
    assert sorted(log.previously_failed) == sorted([*keys, "empty"])
    assert (tally.done, tally.failed, tally.skipped) == (4, 1, 0)
    assert sorted(r["id"] for r in read(out)) == keys and stats(healthy)["ok"] == 4
    assert [r["id"] for r in read(log.paths[FAILED])] == ["empty"]


RUN = """
import functools, sys
from core.endpoint import Endpoint
from core.engine import Job, JobLog, run_jobs
url, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ep = Endpoint(url, "t", None, max_retries=0)
async def ask(key):
    return {"id": key, "answer": (await ep.chat([{"role": "user", "content": key}])).text}
log = JobLog(out)
run_jobs(log.todo(Job(f"k{i:03d}", functools.partial(ask, f"k{i:03d}")) for i in range(n)), 2,
         sink=log).raise_if_failed("answers")
"""


def test_kill_9_then_the_same_run_leaves_every_key_exactly_once(tmp_path, servers):
    # every 6th request hangs for ten minutes: the first run cannot finish, so it is alive when killed
    servers.append(stuck := fault_server(tmp_path, "stuck", "--fault-every", "6", "--faults", "hang",
                                         "--hang", "600"))
    servers.append(healthy := fault_server(tmp_path, "healthy"))
    out, n = tmp_path / "answers.jsonl", 20
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen([PYTHON, "-c", RUN, stuck.url, str(out), str(n)], cwd=ROOT, env=env_offline(),
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text().count("\n") >= 5):
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    stuck.proc.kill()  # its hanging answers would hold a graceful shutdown
    with open(out, "a") as f:  # as if it died in the middle of a line
        f.write('{"id": "k0')
    first = len(read_complete(out))
    assert 5 <= first < n
    again = subprocess.run([PYTHON, "-c", RUN, healthy.url, str(out), str(n)], cwd=ROOT, env=env_offline(),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    ids = [r["id"] for r in read(out)]
    assert sorted(ids) == [f"k{i:03d}" for i in range(n)]  # each once: nothing lost, nothing twice
    assert stats(healthy)["ok"] == n - first  # only what was missing was asked again


def test_micro_batcher_groups_items_and_hands_each_its_own_result():
    from model.serve import Settings

    batches = []

    def run_batch(items):
        batches.append([name for name, _ in items])
        if any(name == "crash" for name, _ in items):
            raise RuntimeError("generate failed")
        return [ValueError(name) if name == "bad" else name.upper() for name, _ in items]

    async def scenario():
        by_key = MicroBatcher(run_batch, wait_s=0, group_key=lambda item: item[1])
        seeded = [Settings(0.7, 1.0, 8, (), seed=1).key() for _ in range(2)]  # seeded requests never share
        items = [("a1", "x"), ("b1", "y"), ("a2", "x"), ("bad", "x"), ("s1", seeded[0]), ("s2", seeded[1])]
        got = await asyncio.gather(*(by_key.submit(i) for i in items), return_exceptions=True)
        assert got[:3] == ["A1", "B1", "A2"] and isinstance(got[3], ValueError) and got[4:] == ["S1", "S2"]
        assert batches == [["a1", "a2", "bad"], ["b1"], ["s1"], ["s2"]]
        assert (by_key.requests, by_key.batches) == (6, 4)
        await by_key.close()

        batches.clear()
        capped = MicroBatcher(run_batch, wait_s=0, max_batch=2)
        got = await asyncio.gather(*(capped.submit((n, None)) for n in ("c1", "c2", "crash", "c4", "c5")),
                                   return_exceptions=True)
        assert batches == [["c1", "c2"], ["crash", "c4"], ["c5"]]
        assert got[:2] == ["C1", "C2"] and all(isinstance(g, RuntimeError) for g in got[2:4]) and got[4] == "C5"
        await capped.close()

    assert Settings(0.7, 1.0, 8, (), None).key() == Settings(0.7, 1.0, 16, (), None).key()
    asyncio.run(scenario())
