"""``python -m data.simulate`` end to end (in this process; as a subprocess where it is interrupted), against real
local servers on 127.0.0.1.

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
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from core.conversation import GPT, HUMAN, Turn
from model.dyadic import SOCRATIC_SYSTEM, Template
from data.end_rules import EndRule
from data.sessions_store import SessionStore
from core.errors import UsageError
from tests.conftest import PYTHON, ROOT, env_offline, run_main
from tests.servers import Server, fault_server, free_port

FAULTS_ALL = "429,500,drop,garbage,empty,hang"


def simulate(tmp: Path, *args: str, env: dict | None = None, log: str = "simulate.log",
             check: bool = True) -> subprocess.CompletedProcess:
    """``python -m data.simulate ARGS``, in this process (tests/test_simulate.py's interrupted runs are the
    subprocess smoke test), its output appended to ``tmp/log``."""
    from data.simulate import main

    proc = run_main(main, args, tmp / log, env)
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
    """The teacher answers a set number of questions, then holds the rest: each interrupted run has written the
    sessions it can and cannot finish before the signal, however fast or slow the machine."""
    servers.append(sim := fault_server(tmp_path, "sim", "--role", "human", "--latency", "0.03"))
    servers.append(teacher := fault_server(tmp_path, "teacher", "--latency", "0.03", "--fault-every", "5",
                                           "--stall-after", "15"))
    out = tmp_path / "resume.jsonl"
    n, turns, concurrency = 24, 3, 3
    args = ["--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
            "--mode", "free", "--num-sessions", str(n), "--max-turns", str(turns), "--concurrency", str(concurrency),
            "--out", str(out), "--retry-base-delay", "0.02"]

    def let_through(more: int | None) -> None:
        httpx.post(teacher.url.replace("/v1", "/stall"), json={"more": more}).raise_for_status()

    def run_until(lines: int, sig: int) -> int:
        """Start a run, wait for ``lines`` sessions in the output (A answers finish at least
        (A - (turns - 1) * concurrency) // turns of them), then signal it: it cannot have finished."""
        log = open(tmp_path / "interrupted.log", "ab")
        proc = subprocess.Popen([PYTHON, "-m", "data.simulate", *args], cwd=ROOT, env=env_offline(),
                                stdout=log, stderr=subprocess.STDOUT)
        while not (out.exists() and out.read_text().count("\n") >= lines):
            assert proc.poll() is None, (tmp_path / "interrupted.log").read_text()
            time.sleep(0.02)
        os.kill(proc.pid, sig)
        return proc.wait(60)

    assert run_until(3, signal.SIGKILL) == -signal.SIGKILL  # 15 answers: 3 to 5 sessions
    with open(out, "a") as f:  # a crash in the middle of a write leaves a torn line
        f.write('{"id": "free-0000')
    first = len(read_complete(out))
    assert 3 <= first <= 5
    let_through(24)  # up to 3 of them go to the killed run's held requests: 3 to 8 more sessions
    assert run_until(first + 3, signal.SIGINT) == 130
    assert "interrupted" in (tmp_path / "interrupted.log").read_text()
    second = len(read(out))
    assert first + 3 <= second <= first + 8 < n
    let_through(None)
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


def test_sessions_that_run_out_of_retries_are_recorded_and_retried_next_run(tmp_path, servers, plain_simulator,
                                                                           plain_teacher):
    sim, healthy = plain_simulator, plain_teacher
    servers.append(broken := fault_server(tmp_path, "broken", "--fault-every", "1", "--faults", "500"))
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

    from core.endpoint import RateLimiter

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
    with pytest.raises(UsageError, match=r"s\.jsonl: record 'line 2': not JSON"):
        SessionStore(out)


# -- seeded mode ---------------------------------------------------------------------------------
def test_seeded_mode_keeps_the_first_round_verbatim_and_skips_seeds_that_cannot_fit(tmp_path, servers, plain_teacher):
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
    teacher = plain_teacher
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
    assert "does not start with a human question" in log and "skipped 1 seeds" in log
    assert re.search(r"teacher spend \$\d+\.\d\d", log)


# -- the context budget ----------------------------------------------------------------------------
@pytest.mark.parametrize("server_context, max_context, rounds", [  # --end-rule fit
    # The fault simulator counts words: each question and each answer is 15 words, no system prompt.
    # Question k's prompt is 30(k-1) words.
    (0, 100, 3),    # Q4 (90 + 15 > 100) does not fit: discarded, the 3 rounds before it kept
    (0, 90, 2),     # Q4's prompt alone (90) fills the budget: round 3 (whose answer filled it) goes too
    (95, 2048, 3),  # the server cuts Q4 short (finish_reason "length"): discarded
    (90, 2048, 2),  # the server answers 400 context_length_exceeded for Q4: round 3 goes too
])
def test_context_budget_ends_sessions_at_the_right_place(tmp_path, servers, plain_teacher, server_context, max_context,
                                                        rounds):
    teacher = plain_teacher  # 12 words an answer, as the simulator's questions
    servers.append(sim := fault_server(tmp_path, "sim", "--role", "human", "--answer-words", "12",
                                       "--max-context", str(server_context)))
    out = tmp_path / "budget.jsonl"
    simulate(tmp_path, "--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
             "--num-sessions", "2", "--max-context", str(max_context), "--end-rule", "fit", "--simulator-system", "",
             "--out", str(out))
    for rec in read(out):
        assert (rec["num_of_rounds"], rec["end_reason"]) == (rounds, "context_full")
        check_alternates(rec)
        assert sum(len(c["value"].split()) for c in rec["conversations"]) == 30 * rounds


@pytest.fixture(scope="module")
def short_teacher(tmp_path_factory):
    """A teacher answering in 6 words (no faults), shared by this module's tiny-model simulations."""
    srv = fault_server(tmp_path_factory.mktemp("short-teacher"), "teacher", "--answer-words", "6")
    yield srv
    srv.stop()


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


def test_local_tiny_simulator_batches_sessions_and_respects_the_context_budget(tmp_path, short_teacher, tiny_dir,
                                                                             tiny_tokenizer):
    teacher = short_teacher
    out = tmp_path / "local.jsonl"
    simulate(tmp_path, "--simulator", str(tiny_dir), "--teacher-base-url", teacher.url, "--teacher-model", "t",
             "--num-sessions", "6", "--concurrency", "6", "--max-context", "400", "--max-new-tokens", "12",
             "--end-rule", "fit", "--out", str(out), "--device", "cpu")
    recs = read(out)
    assert len(recs) == 6
    check_budget(recs, tiny_tokenizer, 400)
    log = (tmp_path / "simulate.log").read_text()
    questions, batches = map(int, re.search(r"(\d+) questions generated in (\d+) batched", log).groups())
    assert batches < questions  # several sessions' questions shared a generate call


@pytest.mark.xdist_group("tiny-server")
def test_served_tiny_simulator_respects_the_context_budget(tmp_path, short_teacher, tiny_simulator_server,
                                                           tiny_tokenizer):
    sim, teacher = tiny_simulator_server, short_teacher
    out = tmp_path / "served.jsonl"
    simulate(tmp_path, "--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
             "--mode", "free", "--num-sessions", "4", "--concurrency", "4", "--max-context", "400",
             "--max-new-tokens", "12", "--end-rule", "fit", "--out", str(out))
    check_budget(read(out), tiny_tokenizer, 400)


@pytest.mark.xdist_group("smollm2-server")
def test_served_smollm2_simulator_end_to_end(tmp_path, smollm2_simulator_server, plain_teacher):
    sim, teacher = smollm2_simulator_server, plain_teacher
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


def test_an_answer_cut_at_teacher_max_tokens_ends_the_session_unless_kept(tmp_path, servers, plain_teacher):
    servers.append(sim := fault_server(tmp_path, "sim", "--role", "human", "--answer-words", "5"))
    teacher = plain_teacher  # 15 words an answer
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


# -- the paper's end rule --------------------------------------------------------------------------
def test_paper_rule_keeps_every_finished_round_and_sessions_may_end_over_the_budget(tmp_path, servers):
    # Words are tokens: a question is 15 words, an answer 63; no system prompt (--simulator-system "").
    servers.append(sim := fault_server(tmp_path, "sim", "--role", "human", "--answer-words", "12"))
    servers.append(teacher := fault_server(tmp_path, "teacher", "--answer-words", "60"))
    common = ["--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
              "--num-sessions", "2", "--max-context", "100", "--simulator-system", ""]
    paper, fit = tmp_path / "paper.jsonl", tmp_path / "fit.jsonl"
    simulate(tmp_path, *common, "--out", str(paper))  # --end-rule paper is the default
    simulate(tmp_path, *common, "--end-rule", "fit", "--out", str(fit))
    for rec in read(paper):
        # Q2 is asked at 78 + 15 <= 100 words; Q3 would start at 156 > 100: dropped, both rounds kept
        assert (rec["num_of_rounds"], rec["end_reason"]) == (2, "context_full")
        assert sum(len(c["value"].split()) for c in rec["conversations"]) == 156 > 100
        assert rec["meta"]["end_rule"] == "paper"
    for rec in read(fit):  # the earlier rule drops round 2, whose answer filled the budget
        assert (rec["num_of_rounds"], rec["end_reason"]) == (1, "context_full")
    assert "sessions ended by: context_full 2" in (tmp_path / "simulate.log").read_text()


@pytest.mark.parametrize("served", [False, pytest.param(True, marks=pytest.mark.xdist_group("tiny-server"))],
                         ids=["local", "served"])
def test_paper_rule_shows_the_simulator_only_the_latest_window(tmp_path, short_teacher, tiny_dir, tiny_tokenizer,
                                                               request, served):
    teacher = short_teacher
    simulator = request.getfixturevalue("tiny_simulator_server").url if served else str(tiny_dir)
    out = tmp_path / "window.jsonl"
    simulate(tmp_path, "--simulator", simulator, "--teacher-base-url", teacher.url,
             "--teacher-model", "t", "--num-sessions", "3", "--concurrency", "3", "--max-context", "400",
             "--max-new-tokens", "12", "--out", str(out), "--device", "cpu")
    window = EndRule("paper", 400, 12).window
    assert window == 400 - 12 - 8
    template = Template(tiny_tokenizer, "dyadic")
    recs = read(out)
    for rec in recs:
        assert rec["meta"]["budget_counted_by"] == "tokenizer"
        assert rec["meta"]["usage"]["simulator_input_tokens_max"] <= window  # never more than the window
        # a random model may write an empty question (its EOS first, p ~ 1/400 a question); the paper's rule ends
        # the session there, as the original did; nothing else ends a session here
        assert rec["end_reason"] in ("context_full", "empty_question")
        if rec["end_reason"] == "context_full":
            # the question that ended the session was asked from a conversation longer than the window
            assert rec["meta"]["usage"]["simulator_input_tokens_max"] == window
            turns = [Turn(c["from"], c["value"]) for c in rec["conversations"]]
            assert len(tiny_tokenizer(template.render(turns, SOCRATIC_SYSTEM).text)["input_ids"]) > window
    # each session asks about ten questions: all three ending empty has a chance of about 1e-5
    assert any(rec["end_reason"] == "context_full" for rec in recs)


# -- the learned end, question-only seeds, role-play, several endpoints -----------------------------
@pytest.mark.parametrize("rule, min_turns, rounds, reason", [
    ("learned", 1, 2, "learned_end"),
    ("learned", 3, 2, "end_marker_suppressed"),  # too early: asked again, and again the marker
    ("paper", 1, 2, "end_marker_suppressed"),
])
def test_learned_end_of_conversation(tmp_path, servers, plain_teacher, rule, min_turns, rounds, reason):
    servers.append(sim := fault_server(tmp_path, "sim", "--role", "human", "--end-after", "2"))
    teacher = plain_teacher
    out = tmp_path / "learned.jsonl"
    simulate(tmp_path, "--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
             "--num-sessions", "2", "--end-rule", rule, "--min-turns", str(min_turns), "--max-turns", "6",
             "--out", str(out))
    for rec in read(out):
        assert (rec["num_of_rounds"], rec["end_reason"]) == (rounds, reason)
        assert all("end_of_conversation" not in c["value"] for c in rec["conversations"])
        assert rec["meta"]["usage"]["end_markers_suppressed"] == (0 if reason == "learned_end" else 4)


def test_question_only_seeds_are_answered_by_the_teacher_first(tmp_path, plain_simulator, plain_teacher):
    seeds = [{"id": f"d{i}", "category": "open_qa", "conversations": [{"from": "human", "value": f"Why {i}?"}]}
             for i in range(3)] + [{"id": "empty", "conversations": []}]
    (seed_file := tmp_path / "seeds.jsonl").write_text("\n".join(json.dumps(s) for s in seeds) + "\n")
    sim, teacher = plain_simulator, plain_teacher
    out = tmp_path / "dolly.jsonl"
    simulate(tmp_path, "--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
             "--mode", "seeded", "--seeds", str(seed_file), "--num-sessions", "3", "--max-turns", "2",
             "--out", str(out))
    recs = {r["seed_id"]: r for r in read(out)}
    assert sorted(recs) == ["d0", "d1", "d2"]
    for sid, rec in recs.items():
        convs = rec["conversations"]
        assert convs[0]["value"] == f"Why {sid[1:]}?" and convs[1]["value"].startswith("Answer 1:")
        assert convs[2]["value"].startswith("Question 2:") and rec["num_of_rounds"] == 2
    assert "no turns" in (tmp_path / "simulate.log").read_text()  # the empty seed: named and skipped


def test_roleplay_simulator_sends_the_prompt_with_the_transcript(tmp_path, servers, plain_teacher):
    log = tmp_path / "roleplay-requests.jsonl"
    servers.append(chat := fault_server(tmp_path, "chat", "--log-requests", str(log)))  # a chat model
    teacher = plain_teacher
    out = tmp_path / "roleplay.jsonl"
    simulate(tmp_path, "--simulator", chat.url, "--simulator-kind", "roleplay", "--teacher-base-url", teacher.url,
             "--teacher-model", "t", "--num-sessions", "2", "--max-turns", "2", "--out", str(out))
    recs = read(out)
    assert len(recs) == 2 and all(r["meta"]["simulator_kind"] == "roleplay" for r in recs)
    requests = read(log)
    assert len(requests) == 4 and all([m["role"] for m in r["messages"]] == ["system"] for r in requests)
    # each session's two requests, written out from the prompt file: the opening, then its own first round
    lines = (ROOT / "data/prompts/roleplay.txt").read_text().splitlines(keepends=True)
    prompt = "".join(x for x in lines if "{intent}" not in x)  # free mode: the intent's line is left out
    expected = [prompt.replace("{conversation}", "(The conversation has not started yet.)")] * 2 + [
        prompt.replace("{conversation}", f"User: {q['value']}\n\nAssistant: {a['value']}")
        for q, a, *_ in (r["conversations"] for r in recs)]
    assert sorted(r["messages"][0]["content"] for r in requests) == sorted(expected)
    bad = tmp_path / "bad-prompt.txt"
    bad.write_text("Act as a user.")
    proc = simulate(tmp_path, "--simulator", chat.url, "--simulator-kind", "roleplay", "--roleplay-prompt", str(bad),
                    "--teacher-base-url", teacher.url, "--num-sessions", "1", "--out", str(tmp_path / "x.jsonl"),
                    log="bad-prompt.log", check=False)
    text = (tmp_path / "bad-prompt.log").read_text()
    assert proc.returncode == 2 and str(bad) in text and "{conversation}" in text


@pytest.mark.slow
def test_roleplay_with_smollm2_playing_the_user(tmp_path, servers, smollm2_dir, plain_teacher):
    port = free_port()
    servers.append(chat := Server([PYTHON, "-m", "model.serve", "--model", str(smollm2_dir), "--role", "gpt",
                                   "--template", "chat", "--port", str(port), "--device", "cpu"],
                                  tmp_path / "smollm2.log").wait_ready(f"http://127.0.0.1:{port}/v1"))
    teacher = plain_teacher
    out = tmp_path / "roleplay-smollm2.jsonl"
    simulate(tmp_path, "--simulator", chat.url, "--simulator-kind", "roleplay", "--teacher-base-url", teacher.url,
             "--teacher-model", "t", "--num-sessions", "1", "--max-turns", "2", "--max-new-tokens", "24",
             "--out", str(out))
    [rec] = read(out)
    check_alternates(rec)
    assert rec["meta"]["simulator_kind"] == "roleplay" and rec["meta"]["usage"]["simulator_completion_tokens"] > 0


def test_sessions_spread_over_several_simulators_and_teachers(tmp_path, servers):
    sims = [fault_server(tmp_path, f"sim{i}", "--role", "human", "--latency", "0.02") for i in range(2)]
    teachers = [fault_server(tmp_path, f"teacher{i}", "--latency", "0.02") for i in range(2)]
    servers.extend(sims + teachers)
    out = tmp_path / "spread.jsonl"
    simulate(tmp_path, *[a for s in sims for a in ("--simulator", s.url)],
             *[a for t in teachers for a in ("--teacher-base-url", t.url)], "--teacher-model", "t",
             "--num-sessions", "8", "--max-turns", "3", "--concurrency", "4", "--out", str(out))
    recs = read(out)
    assert sorted(r["id"] for r in recs) == [f"free-{i:06d}" for i in range(8)]
    assert all(r["num_of_rounds"] == 3 for r in recs)
    served = [httpx.get(s.url.replace("/v1", "/stats")).json().get("ok", 0) for s in sims + teachers]
    assert all(n > 0 for n in served) and sum(served[:2]) == sum(served[2:]) == 8 * 3
    assert "teacher requests per endpoint" in (tmp_path / "simulate.log").read_text()
