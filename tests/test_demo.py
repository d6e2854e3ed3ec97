"""The whole pipeline, scaled down: one `python -m scripts.demo --scale tiny` run with the tiny random Llama, shared
by every test that reads it (module scope), and the dry runs that print the cpu and paper pipelines.

The run's environment is the test's own: no real teacher, judge or key (see LEAKY); its judge, and the remote
teacher of the one stage redone, is a local fault-free OpenAI-compatible process (tests/fault_teacher.py).
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import pytest

from tests.conftest import PYTHON, ROOT, env_offline

STAGES = ["prepare", "train-socratic", "simulate", "train-platolm", "evaluate-socratic", "intents",
          "evaluate-corpora", "evaluate-platolm", "converse", "report"]
LEAKY = ("TEACHER", "TEACHER_BASE_URL", "JUDGE_MODEL", "JUDGE_BASE_URL", "OPENAI_API_KEY", "DEMO_ARGS")
pytestmark = pytest.mark.xdist_group("demo")  # one worker runs the shared pipeline once


def demo_env(**settings) -> dict:
    """The subprocess environment without what switches the demo to real services, plus ``settings``."""
    return {**{k: v for k, v in env_offline().items() if k not in LEAKY}, **settings}


def run_demo(*args, env: dict):
    return subprocess.run([PYTHON, "-m", "scripts.demo", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def commands(stdout: str) -> list[str]:
    return [line[2:] for line in stdout.splitlines() if line.startswith("$ ")]


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """A local OpenAI-compatible process standing in for a remote teacher and judge."""
    from tests.servers import fault_server_while

    yield from fault_server_while(tmp_path_factory, "remote", "--answer-words", "10")


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    """A local OpenAI-compatible judge that rates every answer and prefers no assistant (tests/fault_teacher.py)."""
    from tests.servers import fault_server_while

    yield from fault_server_while(tmp_path_factory, "judge", "--role", "judge")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_dir, judge):
    """The tiny pipeline, run once: local teacher (model.serve), MT-Bench and the conversations judged by ``judge``."""
    out = tmp_path_factory.mktemp("demo") / "run"
    p = run_demo("--scale", "tiny", "--model", tiny_dir, "--out", out,
                 env=demo_env(JUDGE_MODEL="remote-judge", JUDGE_BASE_URL=judge.url))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out, p.stdout


@pytest.mark.slow
def test_tiny_demo_runs_every_stage_with_a_local_teacher(tiny_run):
    out, stdout = tiny_run
    assert sorted(f.name for f in (out / "stages").iterdir()) == sorted(f"{s}.json" for s in STAGES)
    assert "$ python -m model.serve" in stdout  # the local teacher
    split = json.loads((out / "sharegpt_split.json").read_text())
    assert split and all(c["conversations"][0]["from"] == "human" for c in split)
    for model_dir in ("socratic", "platolm"):
        run = json.loads((out / model_dir / "platolm_run.json").read_text())
        assert run["train_role"] == {"socratic": "human", "platolm": "gpt"}[model_dir]
        assert (out / model_dir / "config.json").exists() and (out / model_dir / "loss.png").exists()
        assert (out / model_dir / "README.md").read_text().startswith("---\nlibrary_name: transformers")  # model card
    socratic_run = json.loads((out / "socratic" / "platolm_run.json").read_text())
    history = json.loads((out / "socratic" / "trainer_state.json").read_text())["log_history"]
    assert socratic_run["conversations"]["eval"] >= 1 and any("eval_loss" in h for h in history)


@pytest.mark.slow
def test_tiny_demo_sessions(tiny_run):
    out, _ = tiny_run
    for mode in ("free", "seeded"):  # --num-sessions 2, and every session alternates human / assistant
        sessions = jsonl(out / f"socraticchat_{mode}.jsonl")
        assert len(sessions) == 2 and all(s["mode"] == mode and s["num_of_rounds"] >= 1 for s in sessions)
        assert all([t["from"] for t in s["conversations"]] == ["human", "gpt"] * s["num_of_rounds"] for s in sessions)
    seeds = {s["id"]: s for s in json.loads((out / "seeds.json").read_text())}
    for s in jsonl(out / "socraticchat_seeded.jsonl"):  # the seed's first round is kept verbatim
        assert s["conversations"][:2] == seeds[s["seed_id"]]["conversations"][:2]
    both = jsonl(out / "socraticchat_free.jsonl") + jsonl(out / "socraticchat_seeded.jsonl")
    assert jsonl(out / "socraticchat.jsonl") == both  # what PlatoLM learned from


@pytest.mark.slow
def test_tiny_demo_evaluates_and_reports(tiny_run):
    out, _ = tiny_run
    results = out / "results"
    for name in ("SocraticChat", "ShareGPT"):
        quality = json.loads((results / "question_quality" / f"{name}.json").read_text())
        assert quality["num_questions"] > 0 and 0 < quality["topic_diversity"] <= 1
        assert quality["stats"]["sessions"] > 0  # the corpus-statistics table's row
    assert {p.name for p in (results / "figures" / "lengths").glob("*.png")} == {
        "rounds_per_session.png", "tokens_per_utterance.png", "tokens_per_session.png"}
    simulator = {f.stem: json.loads(f.read_text()) for f in (results / "simulator").glob("*.json")}
    intents = {"sharegpt_intents", "base_intents", "socratic_intents"}
    assert set(simulator) == {"base", "socratic", "sharegpt_diversity", "base_diversity", "socratic_diversity", *intents}
    written = json.loads((out / "intents.json").read_text())  # by the local teacher; the sessions pursue them
    assert written and all(r["intent"].strip() for r in written)
    assert all(s["intent"] for s in jsonl(out / "intent_sessions_socratic.jsonl"))
    assert all(simulator[k]["n"] >= 2 and simulator[k]["goal_leakage_n"] >= 1 for k in intents)
    assert all(simulator[k]["nll"] > 0 and simulator[k]["tokens"] > 0 for k in ("base", "socratic"))
    assert simulator["base"]["tokens"] == simulator["socratic"]["tokens"]  # the same held-out human turns
    assert all(0 < simulator[k]["distinct_1"] <= 1 for k in simulator if k.endswith("diversity"))
    answers = jsonl(results / "mt_bench" / "model_answer" / "platolm-tiny.jsonl")
    assert len(answers) == 2 and all(len(a["choices"][0]["turns"]) == 2 for a in answers)
    judgments = jsonl(results / "mt_bench" / "remote-judge_single.jsonl")  # JUDGE_MODEL at JUDGE_BASE_URL
    assert {j["question_id"] for j in judgments} == {81, 82} and {j["turn"] for j in judgments} == {1, 2}
    report = (out / "REPORT.md").read_text()
    assert report.startswith("# PlatoLM pipeline run: `--scale tiny`") and "A SocraticChat session" in report
    assert "### Question quality" in report and "### Corpus statistics" in report
    assert "## Simulator quality" in report and "| ShareGPT humans |" in report and "| Socratic |" in report
    assert "Held-out human turns" in report and "intent top-1 ↑" in report
    conversations = {name: jsonl(results / "converse" / "conversations" / f"{name}.jsonl") for name in ("base", "platolm")}
    assert all(len(c) == 2 for c in conversations.values())  # --num-conversations 2 with each assistant
    ids = {name: sorted(c["id"] for c in convs) for name, convs in conversations.items()}
    assert ids["base"] == ids["platolm"]  # the same users (the log keeps finishing order; judges pair by id)
    assert "## Evaluation by conversation" in report and "| platolm |" in report
    assert "Socratic_loss.png" in report and (results / "figures" / "training" / "Socratic_loss.png").exists()
    for stage in STAGES[:-1]:  # where the time goes: every stage that ran before the report, and its commands
        assert f"| {stage} | " in report
    assert "`data.simulate` " in report and "`model.sft_socratic.train` " in report


@pytest.mark.slow
def test_a_second_run_reuses_every_finished_stage(tiny_run, tiny_dir):
    out, _ = tiny_run
    again = run_demo("--scale", "tiny", "--model", tiny_dir, "--out", out, env=demo_env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done earlier") == len(STAGES) and "$ " not in again.stdout


@pytest.mark.slow
def test_a_remote_teacher_redoes_only_the_stage_whose_marker_went(tiny_run, tiny_dir, remote, tmp_path):
    """TEACHER / TEACHER_BASE_URL switch the simulation to an OpenAI-compatible endpoint; every other stage
    of the copied run is reused."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)
    (out / "stages" / "simulate.json").unlink()
    for old in out.glob("socraticchat_*"):  # data.simulate would continue these
        old.unlink()
    p = run_demo("--scale", "tiny", "--model", tiny_dir, "--out", out,
                 env=demo_env(TEACHER="remote-teacher", TEACHER_BASE_URL=remote.url))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ran = commands(p.stdout)
    assert len(ran) == 2 and all(c.startswith("python -m data.simulate") for c in ran)  # no local teacher
    assert all(f"--teacher-base-url {remote.url} --teacher-model remote-teacher" in c for c in ran)
    assert p.stdout.count("done earlier") == len(STAGES) - 1
    for mode in ("free", "seeded"):
        sessions = jsonl(out / f"socraticchat_{mode}.jsonl")
        assert sessions and all(s["meta"]["teacher_model"] == "remote-teacher" for s in sessions)
        assert all(t["value"].startswith("Answer")
                   for s in sessions for t in s["conversations"][1 + (mode == "seeded") * 2::2])


def dry_run(capsys, *args) -> list[str]:
    from scripts.demo import main

    assert main(["--dry-run", *map(str, args)]) == 0
    return commands(capsys.readouterr().out)


@pytest.fixture
def no_services(monkeypatch):
    for var in LEAKY:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_the_dry_run_prints_each_command_once_as_a_user_types_it(scale, tmp_path, capsys, no_services):
    from scripts.demo import SCALES, pipeline
    from scripts.docs import CLI_DOC, command_problems, help_sections, trainer_flags
    from scripts.pipeline import Cmd

    out = tmp_path / scale
    printed = dry_run(capsys, "--scale", scale, "--out", out)
    stages = pipeline(SCALES[scale], scale, out, None)
    assert len(printed) == sum(isinstance(step, Cmd) for stage in stages for step in stage.steps)
    for line in printed:  # one line each, every flag named once
        flags = [w for w in shlex.split(line) if w.startswith("--")]
        assert len(flags) == len(set(flags)) and not line.endswith("\\"), line
    # every project command and flag shown exists (docs/cli.md is generated from the --help texts)
    shown = "```bash\n" + "\n".join(printed) + "\n```\n"
    assert command_problems(shown, help_sections(CLI_DOC.read_text()), trainer_flags(), scale) == []
    assert not out.exists()  # nothing ran


def test_paper_scale_dry_run_prints_the_launch_commands(tmp_path, capsys, no_services):
    text = "\n".join(dry_run(capsys, "--scale", "paper", "--out", tmp_path / "paper"))
    assert "bash scripts/sft_socratic_7b_paper.sh" in text and "bash scripts/sft_platolm_7b_paper.sh" in text
    assert "--max-context 2048" in text and "--num-sessions 50728" in text and "--mode free" in text
    assert "--mode seeded" not in text  # the released SocraticChat is free-mode only; seeds are ablations
    assert "model.serve" not in text and "--teacher-model gpt-3.5-turbo" in text  # the paper's teacher is remote


def test_teacher_and_judge_variables_switch_the_printed_commands(tmp_path, capsys, no_services):
    no_services.setenv("TEACHER", "remote-teacher")
    no_services.setenv("TEACHER_BASE_URL", "http://127.0.0.1:9/v1")
    no_services.setenv("JUDGE_MODEL", "org/judge")
    text = "\n".join(dry_run(capsys, "--out", tmp_path / "demo"))
    assert "model.serve" not in text.split("python -m data.simulate")[0]  # no local teacher to start
    # the sessions of data.simulate (free, seeded) and of intent-adherence (base, Socratic)
    assert text.count("--teacher-base-url http://127.0.0.1:9/v1 --teacher-model remote-teacher") == 4
    assert "python -m eval.mt_bench judge" in text and "--judge-model org/judge" in text
    assert "org_judge_single.jsonl" in text and "--judge-base-url" not in text  # OpenAI's unless JUDGE_BASE_URL
