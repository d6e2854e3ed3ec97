"""MT-Bench end to end: real judge prompts and real model answers, judged by a real local HTTP server.

The server (this file run as ``python -m tests.test_eval_mt_bench PORT``) speaks the OpenAI chat
completions API. Judge models (names starting with ``judge``) get a reply derived from a hash of the
prompt: a rating as ``[[N]]``, ``[[N.5]]``, ``[N]`` or none at all, so the expected score of every
judgment can be recomputed here. Other models get an echo of the temperature and message count.
Question-quality judge prompts (they name "Complexity") get four ``Criterion: [[n]]`` scores, and
``/v1/embeddings`` returns a vector derived from each input's hash (:func:`fake_embedding`).
``FAKE_FAIL_EVERY=k`` makes every k-th request fail with 429 (the client must retry); the model
``judge-down`` always fails with 500. ``GET /stats`` counts requests.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PYTHON, ROOT, env_offline


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


def expected_score(user: str) -> float:
    h = int(hashlib.sha256(user.encode()).hexdigest(), 16)
    n = h % 10 + 1
    return [n, n + 0.5, n, -1][(h // 10) % 4]


def fake_embedding(text: str) -> list[float]:
    seed = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 2**32
    import numpy as np

    return (np.random.default_rng(seed).standard_normal(8) + 0.5).tolist()


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
        if model.startswith("judge") and "Complexity" in user:
            text = "Fine questions.\n" + "\n".join(f"{k.title()}: [[{v:g}]]" for k, v in criteria_reply(user).items())
        elif model.startswith("judge"):
            text = judge_reply(user)
        else:
            text = f"t={body.get('temperature')} n={len(messages)} re: {user[:30]}"
        stats["ok"] += 1
        return {"id": "c", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
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
def mt_bench(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([PYTHON, "-m", "eval.mt_bench", *map(str, args)], cwd=ROOT, env=env_offline(),
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr}")
    return proc


def data_args(shared: Path) -> list[str]:
    mt = shared / "mt_bench"
    return ["--question-file", mt / "question.jsonl", "--answer-dir", mt / "model_answer",
            "--ref-answer-dir", mt / "reference_answer", "--judge-prompts", mt / "judge_prompts.jsonl"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_parse_rating_and_winner():
    from eval.mt_bench import parse_rating, parse_winner

    assert parse_rating("Explanation... Rating: [[7]]") == 7
    assert parse_rating("Rating: [[7.5]]") == 7.5
    assert parse_rating("I'd say [7] overall") == 7
    assert parse_rating("[[8]] first wins over [3]") == 8
    assert parse_rating("no rating at all") == -1
    assert parse_winner("so [[B]]") == "B" and parse_winner("[[C]]") == "tie" and parse_winner("?") == "error"


QIDS = "81,101,111,131"  # writing, reasoning (reference), math (reference), extraction
MODELS = ["gpt-4", "llama-13b"]


def test_judge_single_show_and_resume(server, shared_data, tmp_path):
    out = tmp_path / "judge-x_single.jsonl"
    args = ["judge", "--mode", "single", "--judge-model", "judge-x", "--judge-base-url", server.url + "/v1",
            "--model-list", *MODELS, "--question-ids", QIDS, "--output-file", out, "--max-retries", "3",
            *data_args(shared_data)]
    before = server.stats()
    mt_bench(*args)
    recs = read_jsonl(out)
    assert len(recs) == 4 * 2 * 2
    after = server.stats()
    assert after["ok"] - before["ok"] == 16
    assert after["requests"] - before["requests"] > 16  # some 429s were retried

    answers = {m: {a["question_id"]: a for a in read_jsonl(shared_data / "mt_bench/model_answer" / f"{m}.jsonl")}
               for m in MODELS}
    refs = {a["question_id"]: a for a in read_jsonl(shared_data / "mt_bench/reference_answer/gpt-4.jsonl")}
    for r in recs:
        assert r["score"] == expected_score(r["user_prompt"])
        turns = answers[r["model"]][r["question_id"]]["choices"][0]["turns"]
        assert turns[r["turn"] - 1] in r["user_prompt"]
        if r["turn"] == 2:
            assert turns[0] in r["user_prompt"] and r["judge"][1].endswith("-multi-turn")
        if r["question_id"] in (101, 111):
            assert refs[r["question_id"]]["choices"][0]["turns"][0] in r["user_prompt"]
            assert "math" in r["judge"][1]
        else:
            assert "math" not in r["judge"][1]

    for model in MODELS:
        mine = [r for r in recs if r["model"] == model]
        rated = [r["score"] for r in mine if r["score"] != -1]
        shown = json.loads(mt_bench("show", "--judgment-file", out, "--model", model, "--json").stdout)
        assert shown["model"] == model
        assert shown["overall"] == pytest.approx(sum(rated) / len(rated), abs=1e-4)
        t2 = [r["score"] for r in mine if r["score"] != -1 and r["turn"] == 2]
        assert shown["turn2"] == pytest.approx(sum(t2) / len(t2), abs=1e-4)
        assert shown["num_unrated"] == len(mine) - len(rated)
        assert set(shown["categories"]) <= {"writing", "reasoning", "math", "extraction"}
    assert sum(r["score"] == -1 for r in recs) > 0, "the sample should contain an unrated judgment"

    # resume: nothing is asked twice; lost lines are asked again
    before = server.stats()["ok"]
    mt_bench(*args)
    assert server.stats()["ok"] == before
    out.write_text("".join(json.dumps(r) + "\n" for r in recs[:-3]) + '{"question_id": 1')  # + a cut-off line
    mt_bench(*args)
    assert server.stats()["ok"] == before + 3
    assert sorted(map(json.dumps, [{k: r[k] for k in ("question_id", "model", "turn", "score")}
                                   for r in read_jsonl(out)])) == \
        sorted(map(json.dumps, [{k: r[k] for k in ("question_id", "model", "turn", "score")} for r in recs]))

    table = mt_bench("show", "--judgment-file", out, "--plot", tmp_path / "radar.png").stdout
    assert "gpt-4" in table and "llama-13b" in table
    assert (tmp_path / "radar.png").stat().st_size > 1000


def test_judge_pairwise_baseline(server, shared_data, tmp_path):
    out = tmp_path / "judge-x_pair.jsonl"
    mt_bench("judge", "--mode", "pairwise-baseline", "--baseline-model", "gpt-3.5-turbo", "--judge-model", "judge-x",
             "--judge-base-url", server.url + "/v1", "--model-list", "gpt-4", "--question-ids", "81,111",
             "--output-file", out, *data_args(shared_data))
    recs = read_jsonl(out)
    assert len(recs) == 4 and all(r["model_2"] == "gpt-3.5-turbo" for r in recs)
    g = {"Verdict: [[A]]": "A", "Verdict: [[B]]": "B", "Verdict: [[C]]": "tie", "no verdict": "error"}
    win = loss = tie = 0
    for r in recs:
        g1 = {"A": "model_1", "B": "model_2"}.get(g[judge_reply(r["g1_user_prompt"])], g[judge_reply(r["g1_user_prompt"])])
        g2 = {"A": "model_2", "B": "model_1"}.get(g[judge_reply(r["g2_user_prompt"])], g[judge_reply(r["g2_user_prompt"])])
        assert (r["g1_winner"], r["g2_winner"]) == (g1, g2)
        if "error" in (g1, g2):
            continue
        if g1 == "tie" or g1 != g2:
            tie += 1
        elif g1 == "model_1":
            win += 1
        else:
            loss += 1
    shown = json.loads(mt_bench("show", "--judgment-file", out, "--model", "gpt-4", "--json").stdout)
    assert (shown["win"], shown["loss"], shown["tie"]) == (win, loss, tie)

    every = tmp_path / "judge-x_all_pair.jsonl"
    mt_bench("judge", "--mode", "pairwise-all", "--judge-model", "judge-x", "--judge-base-url", server.url + "/v1",
             "--model-list", "gpt-4", "llama-13b", "vicuna-13b-v1.3", "--question-ids", "81",
             "--output-file", every, *data_args(shared_data))
    pairs = {(r["model_1"], r["model_2"], r["turn"]) for r in read_jsonl(every)}
    assert pairs == {(a, b, t) for a, b in [("gpt-4", "llama-13b"), ("gpt-4", "vicuna-13b-v1.3"),
                                             ("llama-13b", "vicuna-13b-v1.3")] for t in (1, 2)}
    shown = json.loads(mt_bench("show", "--judgment-file", every, "--json").stdout)
    assert [s["model"] for s in shown] == ["gpt-4", "llama-13b", "vicuna-13b-v1.3"]


def test_judge_errors_before_any_call(server, shared_data, tmp_path):
    before = server.stats()["requests"]
    proc = mt_bench("judge", "--judge-model", "judge-x", "--judge-base-url", server.url + "/v1", "--dry-run",
                    "--model-list", "gpt-4", "--question-ids", "81,101", "--output-file", tmp_path / "j.jsonl",
                    *data_args(shared_data))
    assert "4 judgments, 0 already in" in proc.stderr and "4 judge calls to judge-x" in proc.stderr
    proc = mt_bench("judge", "--judge-model", "judge-x", "--judge-base-url", server.url + "/v1",
                    "--model-list", "gpt-4", "no-such-model", "--question-ids", "81",
                    "--output-file", tmp_path / "j.jsonl", *data_args(shared_data), check=False)
    assert proc.returncode == 2
    assert "no answers for model 'no-such-model'" in proc.stderr and "nothing was sent" in proc.stderr
    proc = mt_bench("judge", "--model-list", "gpt-4", "--question-ids", "81", "--output-file", tmp_path / "j.jsonl",
                    "--api-key-env", "PLATOLM_TEST_NO_SUCH_KEY", *data_args(shared_data), check=False)
    assert proc.returncode == 2 and "no API key" in proc.stderr
    assert server.stats()["requests"] == before
    assert not (tmp_path / "j.jsonl").exists()


def test_retries_are_bounded(server, shared_data, tmp_path):
    before = server.stats()["requests"]
    proc = mt_bench("judge", "--judge-model", "judge-down", "--judge-base-url", server.url + "/v1",
                    "--model-list", "gpt-4", "--question-ids", "81", "--max-retries", "2",
                    "--output-file", tmp_path / "j.jsonl", *data_args(shared_data), check=False)
    assert proc.returncode == 1 and "run the same command again to resume" in proc.stderr
    assert server.stats()["requests"] - before == 2 * 3  # 2 turns x (1 try + 2 retries)


def test_answer_remote(server, shared_data, tmp_path):
    out = tmp_path / "echo.jsonl"
    mt_bench("answer", "--base-url", server.url + "/v1", "--model", "echo", "--model-id", "echo-model",
             "--question-ids", "81,111", "--answer-file", out,
             "--question-file", shared_data / "mt_bench/question.jsonl")
    recs = read_jsonl(out)
    assert [r["question_id"] for r in recs] == [81, 111]
    writing, math = (r["choices"][0]["turns"] for r in recs)
    assert writing[0].startswith("t=0.7 n=1") and writing[1].startswith("t=0.7 n=3")  # turn 2 saw turn 1
    assert math[0].startswith("t=0.0 n=1")
    assert all(r["model_id"] == "echo-model" for r in recs)


def test_answer_local_tiny_model(tiny_dir, shared_data, tmp_path):
    """Batched local answers with model.generate; a question too long for the context is answered ERROR."""
    qs = {q["question_id"]: q for q in read_jsonl(shared_data / "mt_bench/question.jsonl")}
    long_q = dict(qs[111], question_id=9111, turns=[qs[111]["turns"][0] * 60, qs[111]["turns"][1]])
    qfile = tmp_path / "question.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in (qs[81], qs[82], long_q)))
    out = tmp_path / "tiny.jsonl"
    args = ["answer", "--model-path", tiny_dir, "--model-id", "tiny", "--answer-file", out, "--max-new-tokens", "6",
            "--question-file", qfile]
    mt_bench(*args)
    recs = read_jsonl(out)
    assert [r["question_id"] for r in recs] == [81, 82, 9111]
    assert all(len(r["choices"][0]["turns"]) == 2 for r in recs)
    assert recs[2]["choices"][0]["turns"] == ["ERROR", "ERROR"]
    assert all(t != "ERROR" for r in recs[:2] for t in r["choices"][0]["turns"])
    # resumable: a second run answers nothing new
    proc = mt_bench(*args)
    assert "3 of 3 questions already answered" in proc.stderr
    assert read_jsonl(out) == recs


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(make_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
