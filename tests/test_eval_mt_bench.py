"""MT-Bench and Vicuna-Bench end to end: FastChat's real judge prompts, questions and reference answers (fetched
by `make setup`), real model answers (GPT-4's and GPT-4-0125-preview's answers to the 30 math/reasoning/coding
questions) and answers made here, judged by a real local HTTP server.

The server (this file run as ``python -m tests.test_eval_mt_bench PORT``) speaks the OpenAI chat
completions API. Judge models (names starting with ``judge``) get a reply derived from a hash of the
prompt: a rating as ``[[N]]``, ``[[N.5]]``, ``[N]`` or none at all, so the expected score of every
judgment can be recomputed here. Other models get an echo of the temperature and message count.
Question-quality judge prompts (they name "Complexity") get four scores: ``Criterion: [[n]]`` lines, or
the original's ``{Complexity: n, ...}`` when the prompt asks for its "json format" (:func:`criteria_reply`);
``judge-mute`` never gives a score. AlpacaEval's ranking prompt gets rank 1 for the longer of its two
outputs (:func:`alpaca_ranking`). ``/v1/embeddings`` returns a vector derived from each input's hash
(:func:`fake_embedding`). ``FAKE_FAIL_EVERY=k`` makes every k-th request fail with 429 (the client must
retry); the model ``judge-down`` always fails with 500. ``GET /stats`` counts requests.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PYTHON, ROOT, SHARED, env_offline, run_main

pytestmark = pytest.mark.xdist_group("mt-bench")  # one worker: its module fixtures are built once


# ---------------------------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------------------------
def judge_reply(user: str) -> str:
    h = int(hashlib.sha256(user.encode()).hexdigest(), 16)
    if "Assistant B" in user:
        return ["Verdict: [[A]]", "Verdict: [[B]]", "Verdict: [[C]]", "no verdict"][h % 4]
    n = h % 10 + 1
    return [f"Fine. Rating: [[{n}]]", f"Rating: [[{n}.5]]", f"I rate it [{n}]", "I cannot rate this."][(h // 10) % 4]


def criteria_reply(user: str) -> dict:
    """Question-quality judge: four scores from the prompt's hash; no diversity score if the prompt asks none."""
    h = int(hashlib.sha256(user.encode()).hexdigest(), 16)
    names = ["Complexity", "Relevancy", "Logicality"] + (["Diversity"] if "Diversity" in user else [])
    return {name.lower(): float((h >> (8 * i)) % 10 + 1) for i, name in enumerate(names)}


def criteria_text(user: str) -> str:
    scores = criteria_reply(user)
    if "json format" in user:  # the original prompt's requested form
        return "{" + ", ".join(f"{k.title()}: {v:g}" for k, v in scores.items()) + "}"
    return "Fine questions.\n" + "\n".join(f"{k.title()}: [[{v:g}]]" for k, v in scores.items())


def expected_score(user: str) -> float:
    h = int(hashlib.sha256(user.encode()).hexdigest(), 16)
    n = h % 10 + 1
    return [n, n + 0.5, n, -1][(h // 10) % 4]


_ALPACA_ANSWER = re.compile(r'"answer": """(.*?)"""\n    }', re.DOTALL)


def alpaca_ranking(user: str) -> str:
    """alpaca_eval_gpt4's ranking prompt: the longer output ranks first (in its Python-literal reply form)."""
    first, second = _ALPACA_ANSWER.findall(user)
    best = 1 if len(first) >= len(second) else 2
    return f"[{{'model': 'model_1', 'rank': {1 if best == 1 else 2}}}, {{'model': 'model_2', 'rank': {best}}}]"


def fake_embedding(text: str) -> list[float]:
    seed = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 2**32
    import numpy as np

    return (np.random.default_rng(seed).standard_normal(8) + 0.5).tolist()


def reply_text(model: str, body: dict, user: str) -> str:
    if "rank the models by the quality of their answers" in user:
        return alpaca_ranking(user)
    if model == "judge-mute":
        return "These questions are fine, I think."
    if model.startswith("judge") and "Complexity" in user:
        return criteria_text(user)
    if model.startswith("judge"):
        return judge_reply(user)
    return f"t={body.get('temperature')} n={len(body['messages'])} re: {user[:30]}"


def make_app():
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    stats = {"requests": 0, "ok": 0}
    fail_every = int(os.environ.get("FAKE_FAIL_EVERY", "0"))

    @app.get("/stats")
    async def get_stats():
        return stats

    @app.post("/v1/embeddings")
    async def embeddings(body: dict):
        stats["requests"] += 1
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        stats["ok"] += 1
        return {"object": "list", "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1},
                "data": [{"object": "embedding", "index": i, "embedding": fake_embedding(t)}
                         for i, t in enumerate(inputs)]}

    @app.post("/v1/chat/completions")
    async def completions(body: dict):
        stats["requests"] += 1
        model, messages = body["model"], body["messages"]
        if model == "judge-down":
            return JSONResponse({"error": {"message": "down"}}, status_code=500, headers={"retry-after-ms": "5"})
        if fail_every and stats["requests"] % fail_every == 0:
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429,
                                headers={"retry-after-ms": "5"})
        user = [m for m in messages if m["role"] == "user"][-1]["content"]
        stats["ok"] += 1
        return {"id": "c", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply_text(model, body, user)},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, **env):
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([PYTHON, "-m", "tests.test_eval_mt_bench", str(self.port)], cwd=ROOT,
                                     env={**env_offline(), **env}, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        for _ in range(300):
            try:
                httpx.get(self.url + "/stats", timeout=1)
                return
            except httpx.HTTPError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stderr.read().decode())
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stats(self) -> dict:
        import httpx

        return httpx.get(self.url + "/stats").json()

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def server():
    s = Server(FAKE_FAIL_EVERY="4")
    yield s
    s.close()


# ---------------------------------------------------------------------------------------------
# data: what `make setup` fetched
# ---------------------------------------------------------------------------------------------
REF_MODELS = ["gpt-4", "gpt-4-0125-preview"]  # two real "models": reference answers to 30 questions


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, recs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def mt_bench(*args, check=True, env=None, in_process=True) -> subprocess.CompletedProcess:
    """``python -m eval.mt_bench ARGS``: in this process, or as a subprocess (the command's smoke test)."""
    if in_process:
        from eval.mt_bench import main

        proc = run_main(main, args, env=env)
    else:
        proc = subprocess.run([PYTHON, "-m", "eval.mt_bench", *map(str, args)], cwd=ROOT, env=env or env_offline(),
                              capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def bench(mt_bench_data, server, tmp_path_factory) -> Path:
    """A FastChat bench directory: the fetched questions, prompts and references; as model answers the two
    reference files, and echo-7b's answers, made here by `eval.mt_bench answer` against the server."""
    d = tmp_path_factory.mktemp("bench")
    for rel in ("question.jsonl", "judge_prompts.jsonl", "reference_answer/gpt-4.jsonl"):
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mt_bench_data / rel, d / rel)
    for m in REF_MODELS:
        write_jsonl(d / "model_answer" / f"{m}.jsonl",
                    [dict(a, model_id=m) for a in read_jsonl(mt_bench_data / "reference_answer" / f"{m}.jsonl")])
    mt_bench("answer", "--bench-dir", d, "--base-url", server.url + "/v1", "--model", "echo", "--name",
             "echo-7b", "--question-ids", "81,101,111,121,131", in_process=False)
    return d


def test_parse_rating_and_winner():
    from eval.mt_bench import parse_rating, parse_winner

    assert parse_rating("Explanation... Rating: [[7]]") == 7
    assert parse_rating("Rating: [[7.5]]") == 7.5
    assert parse_rating("I'd say [7] overall") == 7
    assert parse_rating("[[8]] first wins over [3]") == 8
    assert parse_rating("no rating at all") == -1
    assert parse_winner("so [[B]]") == "B" and parse_winner("[[C]]") == "tie" and parse_winner("?") == "error"


def test_answer_remote(bench):
    recs = {r["question_id"]: r for r in read_jsonl(bench / "model_answer" / "echo-7b.jsonl")}
    assert sorted(recs) == [81, 101, 111, 121, 131] and all(r["model_id"] == "echo-7b" for r in recs.values())
    writing, math = recs[81]["choices"][0]["turns"], recs[111]["choices"][0]["turns"]
    assert writing[0].startswith("t=0.7 n=1") and writing[1].startswith("t=0.7 n=3")  # turn 2 saw turn 1
    assert math[0].startswith("t=0.0 n=1") and math[1].startswith("t=0.0 n=3")


def check_single(recs: list[dict], answers: dict, refs: dict) -> None:
    """Every judgment: the score the server's reply gives, the right prompt, the answer (and reference) in it."""
    for r in recs:
        assert r["score"] == expected_score(r["user_prompt"])
        turns = answers[r["model"]][r["question_id"]]["choices"][0]["turns"]
        assert turns[r["turn"] - 1] in r["user_prompt"]
        if r["turn"] == 2:
            assert turns[0] in r["user_prompt"] and r["judge"][1].endswith("-multi-turn")
        if r["category"] in ("math", "reasoning", "coding"):
            assert refs[r["question_id"]]["choices"][0]["turns"][0] in r["user_prompt"]
            assert r["judge"][1].startswith("single-math-v1")
        else:
            assert r["judge"][1].startswith("single-v1")


def test_judge_single_show_and_resume(server, bench, tmp_path):
    out = tmp_path / "judge-x_single.jsonl"
    common = ["judge", "--bench-dir", bench, "--judge-model", "judge-x", "--judge-base-url", server.url + "/v1",
              "--out", out, "--max-retries", "3"]
    real = [*common, "--model-list", *REF_MODELS, "--question-ids", "101,111,121"]
    echo = [*common, "--model-list", "echo-7b", "--question-ids", "81,111,131"]
    before = server.stats()
    mt_bench(*real)
    mt_bench(*echo)
    recs = read_jsonl(out)
    assert len(recs) == 3 * 2 * 2 + 3 * 2
    after = server.stats()
    assert after["ok"] - before["ok"] == 18
    assert after["requests"] - before["requests"] > 18  # some 429s were retried

    answers = {m: {a["question_id"]: a for a in read_jsonl(bench / "model_answer" / f"{m}.jsonl")}
               for m in [*REF_MODELS, "echo-7b"]}
    refs = {a["question_id"]: a for a in read_jsonl(bench / "reference_answer/gpt-4.jsonl")}
    check_single(recs, answers, refs)
    assert {r["category"] for r in recs} == {"writing", "reasoning", "math", "coding", "extraction"}

    for model in [*REF_MODELS, "echo-7b"]:
        mine = [r for r in recs if r["model"] == model]
        rated = [r["score"] for r in mine if r["score"] != -1]
        shown = json.loads(mt_bench("show", "--data", out, "--model-list", model, "--json").stdout)
        assert shown["model"] == model
        assert shown["overall"] == pytest.approx(sum(rated) / len(rated), abs=1e-4)
        t2 = [r["score"] for r in mine if r["score"] != -1 and r["turn"] == 2]
        assert shown["turn2"] == pytest.approx(sum(t2) / len(t2), abs=1e-4)
        assert shown["num_unrated"] == len(mine) - len(rated)
    unrated = sum(r["score"] == -1 for r in recs)
    assert unrated > 0, "the sample should contain an unrated judgment"

    # resume: nothing is asked twice; lost lines are asked again
    before = server.stats()["ok"]
    mt_bench(*real)
    assert server.stats()["ok"] == before
    write_jsonl(out, recs[:9])
    with open(out, "a") as f:
        f.write('{"question_id": 1')  # + a cut-off line
    mt_bench(*real)
    assert server.stats()["ok"] == before + 3
    key = lambda r: json.dumps([r[k] for k in ("question_id", "model", "turn", "score")])  # noqa: E731
    assert sorted(map(key, read_jsonl(out))) == sorted(map(key, recs[:12]))

    table = mt_bench("show", "--data", out, "--plot", tmp_path / "radar.png").stdout
    assert "gpt-4-0125-preview" in table and "turn2" in table
    assert (tmp_path / "radar.png").stat().st_size > 1000


def test_unparsable_replies_are_counted_not_scored(server, bench, tmp_path):
    out = tmp_path / "mute.jsonl"
    proc = mt_bench("judge", "--bench-dir", bench, "--judge-model", "judge-mute", "--judge-base-url",
                    server.url + "/v1", "--model-list", "gpt-4", "--question-ids", "101", "--out", out)
    assert "2 judge replies held no parsable rating" in proc.stderr
    assert [r["score"] for r in read_jsonl(out)] == [-1, -1]
    shown = json.loads(mt_bench("show", "--data", out, "--json").stdout)
    assert shown["overall"] is None and shown["num_unrated"] == 2


def pair_counts(recs: list[dict]) -> tuple[int, int, int]:
    g = {"Verdict: [[A]]": "A", "Verdict: [[B]]": "B", "Verdict: [[C]]": "tie", "no verdict": "error"}
    win = loss = tie = 0
    for r in recs:
        v1, v2 = g[judge_reply(r["g1_user_prompt"])], g[judge_reply(r["g2_user_prompt"])]
        g1, g2 = {"A": "model_1", "B": "model_2"}.get(v1, v1), {"A": "model_2", "B": "model_1"}.get(v2, v2)
        assert (r["g1_winner"], r["g2_winner"]) == (g1, g2)
        if "error" in (g1, g2):
            continue
        if g1 == "tie" or g1 != g2:
            tie += 1
        elif g1 == "model_1":
            win += 1
        else:
            loss += 1
    return win, loss, tie


def test_judge_pairwise(server, bench, tmp_path):
    out = tmp_path / "judge-x_pair.jsonl"
    mt_bench("judge", "--bench-dir", bench, "--mode", "pairwise-baseline", "--baseline-model", "gpt-4",
             "--judge-model", "judge-x", "--judge-base-url", server.url + "/v1", "--model-list", "gpt-4-0125-preview",
             "--question-ids", "101,111", "--out", out)
    recs = read_jsonl(out)
    assert len(recs) == 4 and all(r["model_2"] == "gpt-4" for r in recs)
    assert all(r["judge"][1].startswith("pair-math-v1") for r in recs)
    win, loss, tie = pair_counts(recs)
    shown = json.loads(mt_bench("show", "--data", out, "--model-list", "gpt-4-0125-preview", "--json").stdout)
    assert (shown["win"], shown["loss"], shown["tie"]) == (win, loss, tie)
    assert shown["num_error"] == len(recs) - win - loss - tie

    every = tmp_path / "judge-x_all_pair.jsonl"
    mt_bench("judge", "--bench-dir", bench, "--mode", "pairwise-all", "--judge-model", "judge-x", "--judge-base-url",
             server.url + "/v1", "--model-list", *REF_MODELS, "echo-7b", "--question-ids", "111", "--out", every)
    pairs = {(r["model_1"], r["model_2"], r["turn"]) for r in read_jsonl(every)}
    assert pairs == {(a, b, t) for a, b in [("gpt-4", "gpt-4-0125-preview"), ("gpt-4", "echo-7b"),
                                             ("gpt-4-0125-preview", "echo-7b")] for t in (1, 2)}
    shown = json.loads(mt_bench("show", "--data", every, "--json").stdout)
    assert [s["model"] for s in shown] == sorted([*REF_MODELS, "echo-7b"])


def test_judge_errors_before_any_call(server, bench, tmp_path):
    before = server.stats()["requests"]
    common = ["--bench-dir", bench, "--judge-model", "judge-x", "--judge-base-url", server.url + "/v1",
              "--out", tmp_path / "j.jsonl"]
    proc = mt_bench("judge", *common, "--dry-run", "--model-list", "echo-7b", "--question-ids", "81,101")
    assert "4 judgments, 0 already in" in proc.stderr and "4 judge calls to judge-x" in proc.stderr
    proc = mt_bench("judge", *common, "--model-list", "gpt-4", "no-such-model", "--question-ids", "101,81",
                    check=False)
    assert proc.returncode == 2 and "nothing was sent" in proc.stderr
    assert "no answers for model 'no-such-model'" in proc.stderr
    assert "gpt-4.jsonl: no answer with every turn for question ids [81]" in proc.stderr
    proc = mt_bench("judge", "--bench-dir", bench, "--model-list", "gpt-4", "--question-ids", "101",
                    "--out", tmp_path / "j.jsonl", "--api-key-env", "PLATOLM_TEST_NO_SUCH_KEY", check=False)
    assert proc.returncode == 2 and "no API key" in proc.stderr
    assert server.stats()["requests"] == before
    assert not (tmp_path / "j.jsonl").exists()


def test_bad_benchmark_inputs(tmp_path):
    proc = mt_bench("judge", "--bench", "vicuna_bench", "--bench-dir", tmp_path / "nothing", check=False)
    assert proc.returncode == 2
    assert f"benchmark 'vicuna_bench': no question file {tmp_path / 'nothing' / 'question.jsonl'}" in proc.stderr
    assert "fetch_mt_bench --bench vicuna_bench" in proc.stderr
    bad = write_jsonl(tmp_path / "q.jsonl", [{"question_id": 1, "turns": ["a"]}, {"question_id": 2, "turns": "b"}])
    proc = mt_bench("answer", "--question-file", bad, "--name", "x", "--model", "smollm2", check=False)
    assert proc.returncode == 1 and f"{bad}: record 1: not a benchmark question" in proc.stderr


def test_retries_are_bounded(server, bench, tmp_path):
    before = server.stats()["requests"]
    proc = mt_bench("judge", "--bench-dir", bench, "--judge-model", "judge-down", "--judge-base-url",
                    server.url + "/v1", "--model-list", "gpt-4", "--question-ids", "101", "--max-retries", "2",
                    "--out", tmp_path / "j.jsonl", check=False)
    assert proc.returncode == 1 and "2 judgments failed; run the same command again to retry them" in proc.stderr
    assert server.stats()["requests"] - before == 2 * 3  # 2 turns x (1 try + 2 retries)


def test_answer_local_tiny_model(tiny_dir, mt_bench_data, tmp_path):
    """Batched local answers with model.generate; a question too long for the context is answered ERROR."""
    qs = {q["question_id"]: q for q in read_jsonl(mt_bench_data / "question.jsonl")}
    long_q = dict(qs[111], question_id=9111, turns=[qs[111]["turns"][0] * 60, qs[111]["turns"][1]])
    single = dict(qs[82], question_id=9082, turns=qs[82]["turns"][:1])  # a Vicuna-Bench-style question
    qfile = write_jsonl(tmp_path / "question.jsonl", [qs[81], single, long_q])
    out = tmp_path / "tiny.jsonl"
    args = ["answer", "--model", tiny_dir, "--name", "tiny", "--out", out, "--max-new-tokens", "6",
            "--question-file", qfile]
    mt_bench(*args)
    recs = read_jsonl(out)
    assert [r["question_id"] for r in recs] == [81, 9082, 9111]
    assert [len(r["choices"][0]["turns"]) for r in recs] == [2, 1, 2]
    assert recs[2]["choices"][0]["turns"] == ["ERROR", "ERROR"]
    assert all(t != "ERROR" for r in recs[:2] for t in r["choices"][0]["turns"])
    proc = mt_bench(*args, "--model-path", tiny_dir)  # resumable; the old flag spelling still works
    assert "3 of 3 questions already answered" in proc.stderr
    assert read_jsonl(out) == recs


# ---------------------------------------------------------------------------------------------
# Vicuna-Bench: single-turn questions in FastChat's format
# ---------------------------------------------------------------------------------------------
VICUNA_CATEGORIES = {101: "fermi", 102: "counterfactual", 111: "math", 112: "math", 121: "coding"}


@pytest.fixture(scope="module")
def vicuna(mt_bench_data, server, tmp_path_factory) -> Path:
    """A Vicuna-Bench directory written from real MT-Bench first turns: Vicuna's categories (math and coding
    need references), GPT-4's first-turn references, and single-turn answers of two real models and echo-7b."""
    d = tmp_path_factory.mktemp("vicuna_bench")
    qs = {q["question_id"]: q for q in read_jsonl(mt_bench_data / "question.jsonl")}
    write_jsonl(d / "question.jsonl", [{"question_id": i, "category": c, "turns": qs[i]["turns"][:1]}
                                       for i, c in VICUNA_CATEGORIES.items()])

    def first_turns(path, model):
        return [dict(a, model_id=model, choices=[{"index": 0, "turns": a["choices"][0]["turns"][:1]}])
                for a in read_jsonl(path) if a["question_id"] in VICUNA_CATEGORIES]

    refs = mt_bench_data / "reference_answer"
    write_jsonl(d / "reference_answer/gpt-4.jsonl", [a for a in first_turns(refs / "gpt-4.jsonl", "gpt-4")
                                                     if VICUNA_CATEGORIES[a["question_id"]] in ("math", "coding")])
    for m in REF_MODELS:
        write_jsonl(d / "model_answer" / f"{m}.jsonl", first_turns(refs / f"{m}.jsonl", m))
    before = server.stats()["ok"]
    mt_bench("answer", "--bench", "vicuna_bench", "--bench-dir", d, "--base-url", server.url + "/v1",
             "--model", "echo", "--name", "echo-7b")
    assert server.stats()["ok"] - before == len(VICUNA_CATEGORIES)  # one turn each
    return d


def test_vicuna_bench_single(server, vicuna, tmp_path):
    echo = read_jsonl(vicuna / "model_answer" / "echo-7b.jsonl")
    assert [len(a["choices"][0]["turns"]) for a in echo] == [1] * 5 and echo[0]["choices"][0]["turns"][0].startswith("t=")
    out = tmp_path / "judge-v_single.jsonl"
    mt_bench("judge", "--bench", "vicuna_bench", "--bench-dir", vicuna, "--judge-model", "judge-v",
             "--judge-base-url", server.url + "/v1", "--model-list", "gpt-4-0125-preview", "echo-7b", "--out", out)
    recs = read_jsonl(out)
    assert len(recs) == 10 and {r["turn"] for r in recs} == {1}  # no turn 2 for a single-turn benchmark
    answers = {m: {a["question_id"]: a for a in read_jsonl(vicuna / "model_answer" / f"{m}.jsonl")}
               for m in ("gpt-4-0125-preview", "echo-7b")}
    refs = {a["question_id"]: a for a in read_jsonl(vicuna / "reference_answer/gpt-4.jsonl")}
    check_single(recs, answers, refs)
    assert sum(r["judge"][1] == "single-math-v1" for r in recs) == 6  # math and coding, as FastChat
    shown = json.loads(mt_bench("show", "--bench", "vicuna_bench", "--data", out, "--json").stdout)
    for s in shown:
        mine = [r["score"] for r in recs if r["model"] == s["model"] and r["score"] != -1]
        assert s["overall"] == pytest.approx(sum(mine) / len(mine), abs=1e-4) and s["turn1"] == s["overall"]
        assert "turn2" not in s
        assert set(s["categories"]) <= {"fermi", "counterfactual", "math", "coding"}
    table = mt_bench("show", "--data", out).stdout
    assert "turn1" in table and "turn2" not in table
    if (SHARED / "vicuna_bench").is_dir():
        check_real_vicuna_bench(server, tmp_path)


def test_vicuna_bench_pairwise(server, vicuna, tmp_path):
    out = tmp_path / "judge-v_pair.jsonl"
    mt_bench("judge", "--bench", "vicuna_bench", "--bench-dir", vicuna, "--mode", "pairwise-baseline",
             "--baseline-model", "gpt-4", "--judge-model", "judge-v", "--judge-base-url", server.url + "/v1",
             "--model-list", "gpt-4-0125-preview", "--out", out)
    recs = read_jsonl(out)
    assert len(recs) == 5 and {r["turn"] for r in recs} == {1}
    assert {r["judge"][1] for r in recs} == {"pair-v2", "pair-math-v1"}
    win, loss, tie = pair_counts(recs)
    shown = json.loads(mt_bench("show", "--data", out, "--model-list", "gpt-4-0125-preview", "--json").stdout)
    assert (shown["win"], shown["loss"], shown["tie"]) == (win, loss, tie)


def check_real_vicuna_bench(server, tmp_path) -> None:
    """Extra check when ../shared holds FastChat's real Vicuna-Bench files: 80 single-turn questions, all
    answered with one turn, and judged in 80 calls (10 of them, math and coding, with references)."""
    from eval.mt_bench import NEED_REF_CATS

    d = tmp_path / "vicuna_bench"
    shutil.copytree(SHARED / "vicuna_bench", d)
    mt_bench("answer", "--bench-dir", d, "--base-url", server.url + "/v1", "--model", "echo", "--name", "echo-7b",
             "--concurrency", "16")
    assert {len(a["choices"][0]["turns"]) for a in read_jsonl(d / "model_answer/echo-7b.jsonl")} == {1}
    proc = mt_bench("judge", "--bench", "vicuna_bench", "--bench-dir", d, "--model-list", "echo-7b", "--dry-run")
    assert "80 judgments, 0 already in" in proc.stderr and "80 judge calls" in proc.stderr
    assert sum(q["category"] in NEED_REF_CATS for q in read_jsonl(d / "question.jsonl")) == 10


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(make_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
