"""``python -m data.simulate`` end to end, as a subprocess, against real local servers on 127.0.0.1.

The teacher is ``tests/fault_teacher.py`` (deterministic answers, injected 429/500/dropped
connections/garbage/timeouts); the simulator is the project's own ``model.serve --role human`` with
the tiny model and with SmolLM2, the tiny model loaded in-process, or the fault server playing the
simulator (its "tokens" are words, which makes context budgets easy to reason about).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from model.conversation import GPT, HUMAN, Turn
from model.dyadic import SOCRATIC_SYSTEM, Template
from data.sessions_store import SessionStore
from tests.conftest import PYTHON, ROOT, env_offline

FAULTS_ALL = "429,500,drop,garbage,empty,hang"


class Server:
    """A server subprocess whose output goes to a log file; stopped by its own pid."""

    def __init__(self, cmd: list[str], log: Path, env: dict | None = None):
        self.log = log
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env or env_offline(), stdout=open(log, "wb"),
                                     stderr=subprocess.STDOUT)
        self.url = ""

    def wait_ready(self, url: str, timeout: float = 180) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited early:\n{self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code in (200, 401):
                    self.url = url
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def fault_server(tmp: Path, name: str, *args: str, env: dict | None = None) -> Server:
    port_file = tmp / f"{name}.port"
    srv = Server([PYTHON, "-m", "tests.fault_teacher", "--port-file", str(port_file), *args],
                 tmp / f"{name}.log", env)
    deadline = time.monotonic() + 60
    while not port_file.exists():
        assert srv.proc.poll() is None and time.monotonic() < deadline, srv.log.read_text()
        time.sleep(0.05)
    return srv.wait_ready(f"http://127.0.0.1:{port_file.read_text()}/v1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_simulator(tmp: Path, model_path, name: str) -> Server:
    port = free_port()
    srv = Server([PYTHON, "-m", "model.serve", "--model-path", str(model_path), "--role", "human",
                  "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"], tmp / f"{name}.log")
    return srv.wait_ready(f"http://127.0.0.1:{port}/v1")


@pytest.fixture
def servers():
    started: list[Server] = []
    yield started
    for srv in started:
        srv.stop()


def simulate(tmp: Path, *args: str, env: dict | None = None, log: str = "simulate.log",
             check: bool = True) -> subprocess.CompletedProcess:
    with open(tmp / log, "ab") as out:
        proc = subprocess.run([PYTHON, "-m", "data.simulate", *args], cwd=ROOT, env=env or env_offline(),
                              stdout=out, stderr=subprocess.STDOUT, timeout=300)
    if check:
        assert proc.returncode == 0, (tmp / log).read_text()[-4000:]
    return proc


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_alternates(rec: dict) -> None:
    convs = rec["conversations"]
    assert [c["from"] for c in convs] == [HUMAN, GPT] * rec["num_of_rounds"]
    assert all(isinstance(c["value"], str) and c["value"].strip() for c in convs)


# -- engine on the fault server: faults, kill -9, Ctrl-C, key hygiene ------------------------------
def test_faulty_teacher_still_yields_n_complete_sessions_and_the_key_stays_secret(tmp_path, servers):
    key = "sk-test-" + secrets.token_hex(16)
    env = {**env_offline(), "TEACHER_KEY": key}
    servers.append(sim := fault_server(tmp_path, "sim", "--role", "human", "--latency", "0.01",
                                       "--fault-every", "4", "--faults", "429,500,drop,garbage"))
    servers.append(teacher := fault_server(tmp_path, "teacher", "--latency", "0.01", "--fault-every", "2",
                                           "--faults", FAULTS_ALL, "--hang", "3",
                                           "--api-key-env", "TEACHER_KEY", env=env))
    out = tmp_path / "faulty.jsonl"
    simulate(tmp_path, "--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
             "--teacher-api-key-env", "TEACHER_KEY", "--mode", "free", "--num-sessions", "10",
             "--max-turns", "3", "--concurrency", "5", "--out", str(out), "--retry-base-delay", "0.02",
             "--max-retries", "8", "--request-timeout", "1", env=env)
    recs = read(out)
    assert sorted(r["id"] for r in recs) == [f"free-{i:06d}" for i in range(10)]
    for rec in recs:
        assert rec["num_of_rounds"] == 3 and rec["end_reason"] == "max_turns"
        check_alternates(rec)
        # the teacher's answers are the ones its server wrote for these very questions
        assert all(c["value"].startswith(f"Answer {i // 2 + 1}:") for i, c in enumerate(rec["conversations"])
                   if c["from"] == GPT)
    stats = httpx.get(teacher.url.replace("/v1", "/stats")).json()
    assert all(stats.get(kind, 0) >= 1 for kind in FAULTS_ALL.split(",")), stats
    assert sum(r["meta"]["usage"]["retries"] for r in recs) >= sum(stats[k] for k in FAULTS_ALL.split(","))
    assert stats.get("401", 0) == 0  # every request carried the key
    # the key is in no output, side file or log
    for path in tmp_path.iterdir():
        assert key not in path.read_text(errors="replace"), path

    # a wrong key stops the run at once with a clear message, and is not echoed either
    wrong = "sk-wrong-" + secrets.token_hex(8)
    proc = simulate(tmp_path, "--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
                    "--teacher-api-key-env", "TEACHER_KEY", "--num-sessions", "12", "--max-turns", "1",
                    "--out", str(out), env={**env, "TEACHER_KEY": wrong}, log="wrong-key.log", check=False)
    text = (tmp_path / "wrong-key.log").read_text()
    assert proc.returncode == 1 and "refused" in text and wrong not in text
    assert len(read(out)) == 10  # nothing finished was lost or duplicated


def test_kill_9_and_ctrl_c_then_rerun_ends_with_exactly_n_unique_sessions(tmp_path, servers):
    servers.append(sim := fault_server(tmp_path, "sim", "--role", "human", "--latency", "0.03"))
    servers.append(teacher := fault_server(tmp_path, "teacher", "--latency", "0.03", "--fault-every", "5"))
    out = tmp_path / "resume.jsonl"
    n, turns = 24, 3
    args = ["--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
            "--mode", "free", "--num-sessions", str(n), "--max-turns", str(turns), "--concurrency", "3",
            "--out", str(out), "--retry-base-delay", "0.02"]

    def run_until(lines: int, sig: int) -> int:
        log = open(tmp_path / "interrupted.log", "ab")
        proc = subprocess.Popen([PYTHON, "-m", "data.simulate", *args], cwd=ROOT, env=env_offline(),
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_text().count("\n") >= lines):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "interrupted.log").read_text()
            time.sleep(0.02)
        os.kill(proc.pid, sig)
        return proc.wait(60)

    assert run_until(3, signal.SIGKILL) == -signal.SIGKILL
    with open(out, "a") as f:  # a crash in the middle of a write leaves a torn line
        f.write('{"id": "free-0000')
    first = len(read_complete(out))
    assert 3 <= first < n
    assert run_until(first + 3, signal.SIGINT) == 130
    assert "interrupted" in (tmp_path / "interrupted.log").read_text()
    second = len(read(out))
    assert first < second < n
    simulate(tmp_path, *args)
    recs = read(out)
    ids = [r["id"] for r in recs]
    assert len(ids) == n and len(set(ids)) == n
    for rec in recs:
        assert rec["num_of_rounds"] == turns
        check_alternates(rec)
    # once complete, another run does nothing
    simulate(tmp_path, *args)
    assert len(read(out)) == n and "nothing to do" in (tmp_path / "simulate.log").read_text()


def test_sessions_that_run_out_of_retries_are_recorded_and_retried_next_run(tmp_path, servers):
    servers.append(sim := fault_server(tmp_path, "sim", "--role", "human"))
    servers.append(broken := fault_server(tmp_path, "broken", "--fault-every", "1", "--faults", "500"))
    servers.append(healthy := fault_server(tmp_path, "healthy"))
    out = tmp_path / "retry.jsonl"
    args = ["--simulator", sim.url, "--teacher-model", "t", "--num-sessions", "4", "--max-turns", "2",
            "--out", str(out), "--max-retries", "2", "--retry-base-delay", "0.01"]
    proc = simulate(tmp_path, *args, "--teacher-base-url", broken.url, check=False)
    assert proc.returncode == 1 and not out.exists()
    failed = read(tmp_path / "retry.failed.jsonl")
    assert sorted(f["id"] for f in failed) == [f"free-{i:06d}" for i in range(4)]
    assert all("gave up after 3 attempts" in f["reason"] and "HTTP 500" in f["reason"] for f in failed)
    simulate(tmp_path, *args, "--teacher-base-url", healthy.url)
    assert "retrying 4 sessions that failed in the previous run" in (tmp_path / "simulate.log").read_text()
    assert sorted(r["id"] for r in read(out)) == [f"free-{i:06d}" for i in range(4)]
    assert not (tmp_path / "retry.failed.jsonl").exists()


def test_rate_limiter_holds_a_minute_of_allowance_and_waits_for_the_rest(monkeypatch):
    import asyncio

    from data.retry import RateLimiter

    now, waits = [0.0], []

    async def fake_sleep(seconds):  # a clock we move ourselves: no real waiting, no timing
        waits.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    limiter = RateLimiter(rpm=120, tpm=1000, clock=lambda: now[0])

    async def scenario():
        for _ in range(120):
            await limiter.acquire(1)
        assert waits == []  # a full minute's requests go at once
        await limiter.acquire(1)
        assert waits == [pytest.approx(0.5)]  # then one request per 60/120 s
        tokens_left = limiter.tokens
        limiter.settle(1, 901)  # the request used 900 tokens more than estimated: paid back next
        await limiter.acquire(100)
        assert waits[1] == pytest.approx((100 - (tokens_left - 900)) * 60 / 1000)

    asyncio.run(scenario())


def read_complete(path: Path) -> list[dict]:
    """The complete lines of a file that may end with a torn one (what the store keeps)."""
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def test_store_cuts_a_torn_last_line_and_keeps_the_rest(tmp_path):
    out = tmp_path / "s.jsonl"
    out.write_text('{"id": "free-000000", "mode": "free"}\n{"id": "free-000001", "mode": "free"}\n{"id": "fr')
    store = SessionStore(out)
    assert set(store.finished) == {"free-000000", "free-000001"}
    assert out.read_text().endswith('"free"}\n')
    out.write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"s\.jsonl: record 'line 2': not JSON"):
        SessionStore(out)


# -- seeded mode ---------------------------------------------------------------------------------
def test_seeded_mode_keeps_the_first_round_verbatim_and_skips_seeds_that_cannot_fit(tmp_path, servers):
    seeds = [{"id": f"s{i}", "conversations": [
        {"from": "human", "value": f"Seed question {i}: how do  tides\nwork?  "},
        {"from": "gpt", "value": f"Seed answer {i}: the Moon pulls the oceans.\n"},
        {"from": "human", "value": "this later turn is not used"}]} for i in range(5)]
    seeds.append({"id": "oa", "messages": [{"role": "system", "content": "ignored"},
                                            {"role": "user", "content": "An OpenAI-format seed?"},
                                            {"role": "assistant", "content": "Yes, read the same way."}]})
    seeds.append({"id": "huge", "conversations": [{"from": "human", "value": "long " * 300},
                                                  {"from": "gpt", "value": "ok"}]})
    seeds.append({"id": "gpt-first", "conversations": [{"from": "gpt", "value": "hello"},
                                                       {"from": "human", "value": "hi"}]})
    seed_file = tmp_path / "seeds.json"
    seed_file.write_text(json.dumps(seeds))
    servers.append(sim := fault_server(tmp_path, "sim", "--role", "human", "--max-context", "1000"))
    servers.append(teacher := fault_server(tmp_path, "teacher"))
    out = tmp_path / "seeded.jsonl"
    simulate(tmp_path, "--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
             "--mode", "seeded", "--seeds", str(seed_file), "--seed", "3", "--num-sessions", "6",
             "--max-turns", "3", "--max-context", "200", "--concurrency", "4", "--out", str(out),
             "--rpm", "6000", "--tpm", "1000000", "--price-in", "0.5", "--price-out", "1.5")
    recs = {r["seed_id"]: r for r in read(out)}
    assert set(recs) == {"s0", "s1", "s2", "s3", "s4", "oa"}
    by_id = {s["id"]: s for s in seeds}
    for sid, rec in recs.items():
        assert rec["id"] == f"seeded-{sid}" and rec["mode"] == "seeded"
        seed = by_id[sid]
        first = ([c["value"] for c in seed["conversations"][:2]] if "conversations" in seed
                 else [m["content"] for m in seed["messages"][1:3]])
        assert [c["value"] for c in rec["conversations"][:2]] == first  # verbatim, whitespace included
        assert rec["conversations"][2]["value"].startswith("Question 2:")
        assert rec["num_of_rounds"] == 3
        check_alternates(rec)
    skipped = read(tmp_path / "seeded.skipped.jsonl")
    assert [s["seed_id"] for s in skipped] == ["huge"]
    log = (tmp_path / "simulate.log").read_text()
    assert "first round is not a human question" in log and "skipped 1 seeds" in log
    assert re.search(r"teacher spend \$\d+\.\d\d", log)


# -- the context budget ----------------------------------------------------------------------------
@pytest.mark.parametrize("server_context, max_context, rounds", [
    # The fault simulator counts words: each question and each answer is 15 words, no system prompt.
    # Question k's prompt is 30(k-1) words.
    (0, 100, 3),    # Q4 (90 + 15 > 100) does not fit: discarded, the 3 rounds before it kept
    (0, 90, 2),     # Q4's prompt alone (90) fills the budget: round 3 (whose answer filled it) goes too
    (95, 2048, 3),  # the server cuts Q4 short (finish_reason "length"): discarded
    (90, 2048, 2),  # the server answers 400 context_length_exceeded for Q4: round 3 goes too
])
def test_context_budget_ends_sessions_at_the_right_place(tmp_path, servers, server_context, max_context, rounds):
    servers.append(sim := fault_server(tmp_path, "sim", "--role", "human", "--answer-words", "12",
                                       "--max-context", str(server_context)))
    servers.append(teacher := fault_server(tmp_path, "teacher", "--answer-words", "12"))
    out = tmp_path / "budget.jsonl"
    simulate(tmp_path, "--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
             "--num-sessions", "2", "--max-context", str(max_context), "--out", str(out))
    for rec in read(out):
        assert (rec["num_of_rounds"], rec["end_reason"]) == (rounds, "context_full")
        check_alternates(rec)
        assert sum(len(c["value"].split()) for c in rec["conversations"]) == 30 * rounds


def check_budget(recs: list[dict], tokenizer, max_context: int) -> None:
    """Every session ended on the context budget, and what was kept fits it."""
    template = Template(tokenizer, "dyadic")
    assert recs
    for rec in recs:
        assert rec["end_reason"] == "context_full", rec["end_reason"]
        assert rec["num_of_rounds"] >= 1
        check_alternates(rec)
        turns = [Turn(c["from"], c["value"]) for c in rec["conversations"]]
        assert len(tokenizer(template.render(turns, SOCRATIC_SYSTEM).text)["input_ids"]) <= max_context


def test_local_tiny_simulator_batches_sessions_and_respects_the_context_budget(tmp_path, servers, tiny_dir,
                                                                             tiny_tokenizer):
    servers.append(teacher := fault_server(tmp_path, "teacher", "--answer-words", "6"))
    out = tmp_path / "local.jsonl"
    simulate(tmp_path, "--simulator", str(tiny_dir), "--teacher-base-url", teacher.url, "--teacher-model", "t",
             "--num-sessions", "6", "--concurrency", "6", "--max-context", "400", "--max-new-tokens", "12",
             "--out", str(out), "--device", "cpu")
    recs = read(out)
    assert len(recs) == 6
    check_budget(recs, tiny_tokenizer, 400)
    log = (tmp_path / "simulate.log").read_text()
    questions, batches = map(int, re.search(r"(\d+) questions generated in (\d+) batched", log).groups())
    assert batches < questions  # several sessions' questions shared a generate call


def test_served_tiny_simulator_respects_the_context_budget(tmp_path, servers, tiny_dir, tiny_tokenizer):
    servers.append(sim := serve_simulator(tmp_path, tiny_dir, "serve-tiny"))
    servers.append(teacher := fault_server(tmp_path, "teacher", "--answer-words", "6"))
    out = tmp_path / "served.jsonl"
    simulate(tmp_path, "--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
             "--mode", "free", "--num-sessions", "4", "--concurrency", "4", "--max-context", "400",
             "--max-new-tokens", "12", "--out", str(out))
    check_budget(read(out), tiny_tokenizer, 400)


def test_served_smollm2_simulator_end_to_end(tmp_path, servers, smollm2_dir):
    servers.append(sim := serve_simulator(tmp_path, smollm2_dir, "serve-smollm2"))
    servers.append(teacher := fault_server(tmp_path, "teacher"))
    out = tmp_path / "smollm2.jsonl"
    simulate(tmp_path, "--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
             "--mode", "free", "--num-sessions", "2", "--max-turns", "2", "--concurrency", "2",
             "--max-new-tokens", "16", "--out", str(out))
    recs = read(out)
    assert len(recs) == 2
    for rec in recs:
        assert rec["num_of_rounds"] == 2 and rec["end_reason"] == "max_turns"
        check_alternates(rec)
        assert rec["meta"]["usage"]["simulator_completion_tokens"] > 0


def test_an_answer_cut_at_teacher_max_tokens_ends_the_session_unless_kept(tmp_path, servers):
    servers.append(sim := fault_server(tmp_path, "sim", "--role", "human", "--answer-words", "5"))
    servers.append(teacher := fault_server(tmp_path, "teacher", "--answer-words", "12"))  # 15 words an answer
    common = ["--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
              "--num-sessions", "2", "--max-turns", "2", "--teacher-max-tokens", "8"]
    cut = tmp_path / "cut.jsonl"
    proc = simulate(tmp_path, *common, "--out", str(cut), check=False)
    assert proc.returncode != 0 and not (cut.exists() and read(cut))  # every answer is cut: no round kept
    assert {r["end_reason"] for r in read(tmp_path / "cut.skipped.jsonl")} == {"teacher_length"}
    kept = tmp_path / "kept.jsonl"
    simulate(tmp_path, *common, "--keep-truncated-answers", "--out", str(kept))
    for rec in read(kept):
        assert (rec["num_of_rounds"], rec["end_reason"]) == (2, "max_turns")
        assert all(len(c["value"].split()) == 8 for c in rec["conversations"][1::2])
        assert rec["meta"]["usage"]["answers_cut_at_max_tokens"] == 2
