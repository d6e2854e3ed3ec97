"""The whole pipeline, scaled down: `python -m scripts.demo --scale tiny` with the tiny random Llama.

Every stage's output must exist and be well-formed; a second run must reuse every finished stage.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import PYTHON, ROOT, env_offline

STAGES = ["1-prepare", "2-train-socratic", "3-simulate", "4-train-platolm", "5-evaluate", "6-report"]


def run_demo(*args, timeout=900):
    return subprocess.run([PYTHON, "-m", "scripts.demo", *map(str, args)], cwd=ROOT, env=env_offline(),
                          capture_output=True, text=True, timeout=timeout)


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_tiny_demo_end_to_end_and_resume(tmp_path, tiny_dir):
    out = tmp_path / "demo"
    p = run_demo("--scale", "tiny", "--base-model", tiny_dir, "--out", out)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert sorted(f.name for f in (out / "stages").iterdir()) == STAGES

    split = json.loads((out / "sharegpt_split.json").read_text())
    assert split and all(c["conversations"][0]["from"] == "human" for c in split)
    for model_dir in ("socratic", "platolm"):
        run = json.loads((out / model_dir / "platolm_run.json").read_text())
        assert run["train_role"] == {"socratic": "human", "platolm": "gpt"}[model_dir]
        assert (out / model_dir / "config.json").exists() and (out / model_dir / "loss.png").exists()
        assert (out / model_dir / "README.md").read_text().startswith("---\nlibrary_name: transformers")  # model card
    for mode in ("free", "seeded"):
        sessions = jsonl(out / f"socraticchat_{mode}.jsonl")
        assert len(sessions) == 2 and all(s["mode"] == mode and s["num_of_rounds"] >= 1 for s in sessions)
        assert all([t["from"] for t in s["conversations"]] == ["human", "gpt"] * s["num_of_rounds"] for s in sessions)
    seeds = {s["id"]: s for s in json.loads((out / "seeds.json").read_text())}
    for s in jsonl(out / "socraticchat_seeded.jsonl"):  # the seed's first round is kept verbatim
        assert s["conversations"][:2] == seeds[s["seed_id"]]["conversations"][:2]

    results = out / "results"
    for name in ("SocraticChat", "ShareGPT"):
        quality = json.loads((results / "question_quality" / f"{name}.json").read_text())
        assert quality["num_questions"] > 0 and 0 < quality["topic_diversity"] <= 1
        stats = json.loads((results / "corpus_stats" / f"{name}.json").read_text())
        assert stats["sessions"] > 0
    simulator = {f.stem: json.loads(f.read_text()) for f in (results / "simulator").glob("*.json")}
    assert set(simulator) == {"base", "socratic", "sharegpt_diversity", "base_diversity", "socratic_diversity"}
    assert all(simulator[k]["nll"] > 0 and simulator[k]["tokens"] > 0 for k in ("base", "socratic"))
    assert simulator["base"]["tokens"] == simulator["socratic"]["tokens"]  # the same held-out human turns
    assert all(0 < simulator[k]["distinct_1"] <= 1 for k in simulator if k.endswith("diversity"))
    socratic_run = json.loads((out / "socratic" / "platolm_run.json").read_text())
    history = json.loads((out / "socratic" / "trainer_state.json").read_text())["log_history"]
    assert socratic_run["conversations"]["eval"] >= 1 and any("eval_loss" in h for h in history)
    answers = jsonl(results / "mt_bench" / "model_answer" / "platolm-tiny.jsonl")
    assert len(answers) == 2 and all(len(a["choices"][0]["turns"]) == 2 for a in answers)
    report = (out / "REPORT.md").read_text()
    assert report.startswith("# PlatoLM pipeline run: `--scale tiny`") and "A SocraticChat session" in report
    assert "### Question quality" in report and "### Corpus statistics" in report
    assert "## Simulator quality" in report and "| ShareGPT humans |" in report and "| Socratic |" in report
    assert "Held-out human turns" in report
    assert "Socratic_loss.png" in report and (results / "figures" / "training" / "Socratic_loss.png").exists()

    again = run_demo("--scale", "tiny", "--base-model", tiny_dir, "--out", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done earlier") == len(STAGES) and "$ python" not in again.stdout


def test_paper_scale_dry_run_prints_the_launch_commands(tmp_path):
    p = run_demo("--scale", "paper", "--dry-run", "--out", tmp_path / "paper", timeout=120)
    assert p.returncode == 0, p.stderr
    assert "bash scripts/sft_socratic_7b_paper.sh" in p.stdout and "bash scripts/sft_platolm_7b_paper.sh" in p.stdout
    assert "--max-context 2048" in p.stdout and "--num-sessions 50728" in p.stdout and "--mode free" in p.stdout
    assert "--mode seeded" not in p.stdout  # the released SocraticChat is free-mode only; seeds are ablations
    assert not (tmp_path / "paper" / "stages").exists()  # nothing ran


@pytest.mark.slow
def test_tiny_demo_with_a_remote_teacher_and_judge(tmp_path, tiny_dir):
    """TEACHER / JUDGE_MODEL switch the demo to OpenAI-compatible endpoints (here a local fault-free server)."""
    from tests.test_simulate import fault_server

    server = fault_server(tmp_path, "remote", "--answer-words", "10")
    try:
        env = dict(env_offline(), TEACHER="remote-teacher", TEACHER_BASE_URL=server.url,
                   JUDGE_MODEL="remote-judge", JUDGE_BASE_URL=server.url)
        out = tmp_path / "demo"
        p = subprocess.run([PYTHON, "-m", "scripts.demo", "--scale", "tiny", "--base-model", str(tiny_dir),
                            "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        server.stop()
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "model.serve" not in p.stdout  # no local teacher was started
    for mode in ("free", "seeded"):
        sessions = jsonl(out / f"socraticchat_{mode}.jsonl")
        assert sessions and all(s["meta"]["teacher_model"] == "remote-teacher" for s in sessions)
        assert all(t["value"].startswith("Answer") for s in sessions for t in s["conversations"][1 + (mode == "seeded") * 2::2])
    judgments = jsonl(out / "results" / "mt_bench" / "remote-judge_single.jsonl")
    assert {j["question_id"] for j in judgments} == {81, 82} and {j["turn"] for j in judgments} == {1, 2}
