"""``python -m eval.converse``: evaluating assistants by conversation, against live local processes.

tests/fault_teacher.py plays every part: the user simulator (its questions depend on the conversation and on
the sampling seed, like a sampling model; or misbehaving: assistant-like, empty, repeated turns), assistants
that differ in a known way (every answer opens with "Glad to help:" or with "Whatever:"), and judges (one
that prefers "Glad to help" and dislikes "Whatever"; one with a position bias that sometimes writes no
verdict). Servers are shared by the module; `run`, `judge` and `agreement` are called in-process, except
where a SIGKILL needs a process of their own.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from core.conversation import HUMAN
from eval.converse import main
from tests.conftest import PYTHON, ROOT, env_offline
from tests.servers import Server
from tests.test_simulate import read

GOOD, BAD = "Glad to help:", "Whatever:"
N = 6
SERVERS = {"sim": ("--role", "human", "--use-seed"), "good": ("--prefix", GOOD), "bad": ("--prefix", BAD),
           "judge": ("--role", "judge", "--prefer", "Glad to help", "--avoid", "Whatever"),
           "biased": ("--role", "judge", "--unsure-every", "3"),
           "sim_assistant": ("--role", "human", "--misbehave", "assistant"),
           "sim_empty": ("--role", "human", "--misbehave", "empty", "--misbehave-after", "1"),
           "sim_repeat": ("--role", "human", "--misbehave", "repeat", "--misbehave-after", "1")}


def start(tmp: Path, name: str, *args: str, port: int = 0) -> Server:
    """A fault_teacher process (on ``port``, 0: any free one); wait for it with ``ready``."""
    srv = Server([PYTHON, "-m", "tests.fault_teacher", "--port", str(port), "--port-file", str(tmp / f"{name}.port"),
                  *args], tmp / f"{name}.log")
    srv.port_file = tmp / f"{name}.port"
    return srv


def ready(srv: Server) -> Server:
    deadline = time.monotonic() + 60
    while not srv.port_file.exists():
        assert srv.proc.poll() is None and time.monotonic() < deadline, srv.log.read_text()
        time.sleep(0.05)
    return srv.wait_ready(f"http://127.0.0.1:{srv.port_file.read_text()}/v1")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("converse-servers")
    started = {name: start(tmp, name, *args) for name, args in SERVERS.items()}  # all at once, then wait
    yield {name: ready(s) for name, s in started.items()}
    for s in started.values():
        s.stop()


def requests_served(s: Server) -> int:
    return httpx.get(s.url.replace("/v1", "/stats")).json().get("requests", 0)


def run_args(srv, out: Path, *assistants: str, sim: str = "sim", n: int = N, turns: int = 3) -> list[str]:
    return ["run", "--simulator", srv[sim].url, *[a for name in assistants for a in ("--assistant", name)],
            "--num-conversations", str(n), "--max-turns", str(turns), "--concurrency", "3", "--out", str(out),
            "--no-progress", "--max-retries", "1"]


def conversations(out: Path, name: str) -> dict[str, dict]:
    return {r["id"]: r for r in read(out / "conversations" / f"{name}.jsonl")}


def user_turns(rec: dict) -> list[str]:
    return [c["value"] for c in rec["conversations"] if c["from"] == HUMAN]


def show(out: Path, capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["show", "--run", str(out), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def paired(srv, tmp_path_factory):
    """One run: 'good', its twin (the same server under another name) and 'bad' met the same users."""
    out = tmp_path_factory.mktemp("paired") / "run"
    assert main([*run_args(srv, out, f"good={srv['good'].url}", f"twin={srv['good'].url}#twin-model",
                           f"bad={srv['bad'].url}"), "--detector", "none"]) == 0
    return out


def test_every_assistant_meets_the_same_users(paired):
    good, twin, bad = (conversations(paired, n) for n in ("good", "twin", "bad"))
    ids = [f"free-{i:06d}" for i in range(N)]
    assert sorted(good) == sorted(twin) == sorted(bad) == ids
    for cid in ids:
        assert good[cid]["conversations"] == twin[cid]["conversations"]  # same answers, so the same user turns
        assert user_turns(bad[cid])[0] == user_turns(good[cid])[0]  # the same opening ...
        assert user_turns(bad[cid])[1:] != user_turns(good[cid])[1:]  # ... then the user answers what it was told
        assert good[cid]["num_of_rounds"] == 3 and good[cid]["end_reason"] == "max_turns"
        calls = good[cid]["calls"]
        assert calls["tokens"] == sum(v for k, v in good[cid]["usage"].items() if k.endswith(("prompt_tokens",
                                                                                             "completion_tokens")))
    assert len({user_turns(good[cid])[0] for cid in ids}) == N  # each conversation samples with its own seed
    manifest = json.loads((paired / "run.json").read_text())
    assert manifest["assistants"]["twin"]["model"] == "twin-model" and manifest["users"]["mode"] == "free"


def test_a_later_run_into_the_folder_must_meet_the_same_users(paired, srv, capsys):
    capsys.readouterr()
    assert main([*run_args(srv, paired, f"good={srv['good'].url}"), "--seed", "1", "--detector", "none"]) == 2
    assert "seed: 0 then, 1 now" in capsys.readouterr().err
    assert sorted(conversations(paired, "good")) == [f"free-{i:06d}" for i in range(N)]


def test_judge_and_show_rank_the_preferred_assistant_first(paired, srv, capsys, tmp_path):
    judge = ["judge", "--run", str(paired), "--judge-model", "j", "--judge-base-url", srv["judge"].url,
             "--no-progress"]
    for mode in ("turn", "conversation"):
        assert main([*judge, "--mode", mode]) == 0
    assert main([*judge, "--mode", "pairwise", "--baseline", "bad"]) == 0
    asked = requests_served(srv["judge"])
    assert main([*judge, "--mode", "pairwise", "--baseline", "bad"]) == 0 and requests_served(srv["judge"]) == asked
    turn = read(paired / "judgments" / "j" / "turn.jsonl")
    assert len(turn) == 3 * N * 3 and {(v["assistant"], v["id"], v["turn"]) for v in turn}.__len__() == len(turn)

    summary = show(paired, capsys)
    rows = {r["name"]: r for r in summary["assistants"]}
    assert [r["name"] for r in summary["assistants"]][-1] == "bad" and rows["good"]["rank"] in (1, 2)
    good, bad = rows["good"], rows["bad"]
    assert good["mean"] == 9 and bad["mean"] == 2 and good["rating_source"] == "conversation"
    assert good["ci"][0] > bad["mean"] and bad["ci"][1] < good["mean"]  # the intervals exclude the other
    assert good["ratings"]["turn_min"]["mean"] == 9 and bad["ratings"]["turn_mean"]["mean"] == 2
    assert summary["baseline"] == "bad" and good["win_rate"] == 1.0 and good["win_rate_ci"][0] > 0.5
    assert bad["win_rate"] is None and good["bt"] > bad["bt"]
    assert summary["pairwise"]["position_bias"]["rate"] == 0 and summary["pairwise"]["verdicts"] == 2 * N
    assert good["avg_turns"] == 3 and good["tokens_per_conversation"] > 0 and good["simulator_failure_rate"] == 0
    assert (paired / "converse.png").stat().st_size > 0

    capsys.readouterr()
    assert main(["show", "--run", str(paired)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| rank | assistant | rating [95% CI]") and "win rate vs bad" in table

    from eval.tables import build_report

    shutil.copytree(paired, tmp_path / "results" / "converse" / "demo")
    report = build_report(tmp_path / "results", tmp_path / "results" / "REPORT.md")
    assert "## Evaluation by conversation" in report and "| 1 |" in report
    assert (tmp_path / "results" / "converse_demo_j.png").is_file()


def test_position_bias_and_replies_without_a_verdict_are_counted_never_scored(paired, srv, capsys):
    judge = ["judge", "--run", str(paired), "--judge-model", "biased", "--judge-base-url", srv["biased"].url,
             "--no-progress"]
    assert main([*judge, "--mode", "pairwise"]) == 0  # every pair, each conversation both ways
    assert main([*judge, "--mode", "conversation"]) == 0
    pairs = read(paired / "judgments" / "biased" / "pairwise.jsonl")
    rated = read(paired / "judgments" / "biased" / "conversation.jsonl")
    assert len(pairs) == 3 * N and len(rated) == 3 * N
    errors = [v for v in pairs + rated if v["error"] is not None]
    assert errors and all(v.get("rating") is None and v.get("winner") is None for v in errors)
    summary = show(paired, capsys, "--judge-model", "biased")
    parsed = [v for v in pairs if v["error"] is None]
    assert summary["pairwise"]["position_bias"] == {"n": len(parsed), "first": len(parsed), "second": 0,
                                                    "rate": 1.0}  # it always chose A: a tie every time
    assert all(v["winner"] == "tie" for v in parsed)
    assert sum(r["judge_errors"] for r in summary["assistants"]) == len([v for v in rated if v["error"]]) \
        + 2 * len([v for v in pairs if v["error"]])
    for r in summary["assistants"]:
        mine = [v["rating"] for v in rated if v["assistant"] == r["name"] and v["rating"] is not None]
        assert r["mean"] == pytest.approx(sum(mine) / len(mine), abs=1e-4)


@pytest.mark.parametrize("sim, expected", [("sim", {"empty": 0, "assistant_like": 0, "repeated": 0}),
                                           ("sim_assistant", {"empty": 0, "assistant_like": 2, "repeated": 0}),
                                           ("sim_empty", {"empty": 1, "assistant_like": 0, "repeated": 0}),
                                           ("sim_repeat", {"empty": 0, "assistant_like": 0, "repeated": 1})])
def test_simulator_failures_are_counted_apart_from_the_assistant(srv, tmp_path, capsys, sim, expected):
    out = tmp_path / "run"
    assert main(run_args(srv, out, f"good={srv['good'].url}", sim=sim, n=2, turns=2)) == 0
    assert "simulator failures (the simulator's, not the assistants')" in capsys.readouterr().err
    recs = conversations(out, "good").values()
    assert len(recs) == 2 and all(r["simulator_failures"] == expected for r in recs)
    assert all(r["end_reason"] == ("empty_question" if sim == "sim_empty" else "max_turns") for r in recs)
    row = show(out, capsys)["assistants"][0]
    assert row["simulator_failure_rate"] == (0.0 if sim == "sim" else 1.0)
    assert row["simulator_failures"] == {k: 2 * v for k, v in expected.items()} and row["failed"] == 0


def test_intents_condition_the_users_and_stay_in_every_record(srv, tmp_path):
    intents = tmp_path / "intents.jsonl"
    intents.write_text(json.dumps({"id": "a", "intent": "You want a haiku about rain."}) + "\n"
                       + json.dumps({"id": "b", "intent": "You want to fix a bike chain.",
                                     "question": "my bike chain keeps slipping"}) + "\n")
    out = tmp_path / "run"
    assert main([*run_args(srv, out, f"good={srv['good'].url}", n=2, turns=2), "--intents", str(intents),
                 "--detector", "none"]) == 0
    recs = conversations(out, "good")
    assert sorted(recs) == ["intent-a", "intent-b"] and recs["intent-a"]["intent"] == "You want a haiku about rain."
    assert user_turns(recs["intent-b"])[0] == "my bike chain keeps slipping"
    assert "fix a bike chain" not in json.dumps(recs["intent-b"]["conversations"])


def wait_lines(path: Path, n: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while not (path.exists() and path.read_text().count("\n") >= n):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)


def kill_then_restart(tmp: Path, argv: list[str], watched: Path, lines: int, stuck: Server, name: str,
                      *server_args: str) -> Server:
    """Run ``eval.converse argv`` in a process, SIGKILL it once ``watched`` has ``lines`` lines (the stuck server
    keeps it from finishing), then replace the stuck server by a healthy one on the same port."""
    log = tmp / f"{name}.run.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([PYTHON, "-m", "eval.converse", *argv], cwd=ROOT, env=env_offline(), stdout=f,
                                stderr=subprocess.STDOUT)
    wait_lines(watched, lines, proc, log)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    port = stuck.port_file.read_text()
    stuck.proc.kill()
    stuck.proc.wait()
    stuck.port_file.unlink()
    return ready(start(tmp, f"{name}-healthy", *server_args, port=int(port)))


@pytest.mark.slow
def test_sigkill_during_run_and_judge_then_the_same_command_leaves_each_item_once(srv, tmp_path):
    hang = ("--fault-every", "4", "--faults", "hang", "--hang", "600")
    stuck = ready(start(tmp_path, "stuck", "--prefix", BAD, *hang))
    out, healthy = tmp_path / "run", []
    try:
        argv = [*run_args(srv, out, f"slow={stuck.url}", n=8, turns=2), "--detector", "none"]
        healthy.append(kill_then_restart(tmp_path, argv, out / "conversations" / "slow.jsonl", 2, stuck,
                                         "assistant", "--prefix", BAD))
        killed = len(read(out / "conversations" / "slow.jsonl"))
        assert 2 <= killed < 8
        assert main(argv) == 0  # the same command
        slow = [r["id"] for r in read(out / "conversations" / "slow.jsonl")]
        assert sorted(slow) == [f"free-{i:06d}" for i in range(8)]  # each once: nothing lost, nothing twice

        stuck_judge = ready(start(tmp_path, "stuck-judge", "--role", "judge", *hang))
        judge = ["judge", "--run", str(out), "--judge-model", "j", "--judge-base-url", stuck_judge.url,
                 "--mode", "turn", "--no-progress", "--concurrency", "2"]
        verdicts = out / "judgments" / "j" / "turn.jsonl"
        healthy.append(kill_then_restart(tmp_path, judge, verdicts, 3, stuck_judge, "judge", "--role", "judge"))
        assert main(judge) == 0
        keys = [(v["assistant"], v["id"], v["turn"]) for v in read(verdicts)]
        assert sorted(keys) == sorted(("slow", f"free-{i:06d}", t) for i in range(8) for t in (1, 2))
    finally:
        for s in healthy:
            s.stop()


def test_an_assistant_that_fails_is_counted_and_retried_never_half_written(srv, tmp_path, capsys):
    broken = ready(start(tmp_path, "broken", "--fault-every", "1", "--faults", "500"))
    out = tmp_path / "run"
    try:
        argv = run_args(srv, out, f"good={srv['good'].url}", f"broken={broken.url}", n=2, turns=2)
        assert main([*argv, "--detector", "none"]) == 1
        err = capsys.readouterr().err
        assert f"error: 2 conversations failed (reasons in {out / 'conversations'}); run the same command again" in err
        assert not (out / "conversations" / "broken.jsonl").exists() and len(conversations(out, "good")) == 2
        failed = read(out / "conversations" / "broken.failed.jsonl")
        assert len(failed) == 2 and all("assistant broken" in f["reason"] and "HTTP 500" in f["reason"] for f in failed)
    finally:
        broken.stop()


def test_agreement_reproduces_scipy_on_the_written_judge_outputs(srv, tmp_path, capsys):
    from scipy.stats import kendalltau, spearmanr

    rated = []
    for m, model in enumerate(("alpha", "beta", "gamma")):
        for i in range(5):
            answer = f"{GOOD} here it is {i}" if (i + m) % 3 == 0 else f"plain answer {i} {model}"
            rated.append({"id": f"{model}-{i}", "model": model, "rating": 2 + 3 * m + (i % 3),
                          "conversations": [{"from": "human", "value": f"question {i}"},
                                            {"from": "gpt", "value": answer}]})
    rated.append({"id": "unrated", "model": "alpha", "conversations": [{"from": "human", "value": "q"}]})
    human, out = tmp_path / "rated.jsonl", tmp_path / "agreement.jsonl"
    human.write_text("".join(json.dumps(r) + "\n" for r in rated))
    argv = ["agreement", "--human", str(human), "--judge-model", "j", "--judge-base-url", srv["judge"].url,
            "--out", str(out), "--json", "--no-progress"]
    capsys.readouterr()
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    lines = read(out)
    assert sorted(r["id"] for r in lines) == sorted(r["id"] for r in rated[:-1])
    assert all(set(r) >= {"id", "model", "human", "judge"} for r in lines)
    h, j = [r["human"] for r in lines], [r["judge"] for r in lines]
    assert result["n"] == 15 and result["spearman"]["rho"] == pytest.approx(spearmanr(h, j).statistic, abs=1e-4)
    assert result["kendall"]["tau"] == pytest.approx(kendalltau(h, j).statistic, abs=1e-4)
    lo, hi = result["spearman"]["ci"]
    assert lo <= result["spearman"]["rho"] <= hi
    means = {m: [sum(r[k] for r in lines if r["model"] == m) / 5 for k in ("human", "judge")]
             for m in ("alpha", "beta", "gamma")}
    assert result["models"]["spearman"]["rho"] == pytest.approx(
        spearmanr([v[0] for v in means.values()], [v[1] for v in means.values()]).statistic, abs=1e-4)
    assert [x["model"] for x in result["models"]["ranking"]] == ["gamma", "beta", "alpha"]
    asked = requests_served(srv["judge"])
    assert main(argv) == 0 and requests_served(srv["judge"]) == asked  # resumed: nothing asked again


def test_bad_input_is_one_line_naming_the_flag_or_file(srv, tmp_path, capsys):
    def error(argv) -> str:
        capsys.readouterr()
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1].startswith("error: ")
        return lines[-1]

    base = run_args(srv, tmp_path / "run", n=1)
    assert "--assistant '=http://x/v1'" in error([*base, "--assistant", "=http://x/v1"])
    assert "--assistant 'nourl'" in error([*base, "--assistant", "nourl"])
    empty = tmp_path / "intents.jsonl"
    empty.write_text('{"id": "a", "intent": ""}\n')
    assert str(empty) in error([*base, "--assistant", f"a={srv['good'].url}", "--intents", str(empty)])
    unrated = tmp_path / "unrated.jsonl"
    unrated.write_text('{"id": "a", "model": "m", "conversations": [{"from": "human", "value": "hi"}]}\n')
    assert str(unrated) in error(["agreement", "--human", str(unrated), "--judge-model", "j", "--judge-base-url",
                                  srv["judge"].url, "--out", str(tmp_path / "a.jsonl")])
    assert "not a run of eval.converse" in error(["show", "--run", str(tmp_path)])
    prompt = tmp_path / "judge.txt"
    prompt.write_text("Rate this conversation 1-10 as [[N]].")  # no {conversation}: checked before any call
    rated = tmp_path / "rated.jsonl"
    rated.write_text('{"id": "a", "model": "m", "rating": 5, "conversations": [{"from": "human", "value": "hi"}, '
                     '{"from": "gpt", "value": "hello"}]}\n')
    judge = ["agreement", "--human", str(rated), "--judge-model", "j", "--judge-base-url", srv["judge"].url,
             "--out", str(tmp_path / "a.jsonl")]
    assert f"{prompt}: the conversation judge prompt needs the placeholder(s) {{conversation}}" in error(
        [*judge, "--prompt-file", str(prompt)])
    assert f"{tmp_path / 'none.txt'}: conversation judge prompt file not found" in error(
        [*judge, "--prompt-file", str(tmp_path / "none.txt")])
