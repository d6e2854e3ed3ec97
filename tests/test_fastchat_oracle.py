"""FastChat as the oracle: `eval.mt_bench show` must print the numbers FastChat's own show_result prints.

Two real "models" answer MT-Bench's 30 math/reasoning/coding questions: GPT-4 and GPT-4-0125-preview, the
reference answers that ship with FastChat's data (``python -m eval.fetch_mt_bench``). The local judge of
tests/test_eval_mt_bench.py grades them (some replies hold no rating or verdict, so the unrated / error
rows are exercised too). ``eval.mt_bench judge`` writes FastChat's layout ``data/mt_bench/model_judgment/``
under tmp_path, where ``python -m fastchat.llm_judge.show_result`` (fschat, pinned) reads it by default.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.conftest import PYTHON, ROOT, env_offline
from tests.test_eval_mt_bench import Server

MODELS = ["gpt-4", "gpt-4-0125-preview"]
QIDS = ",".join(str(i) for i in range(101, 131))  # reasoning 101-110, math 111-120, coding 121-130
JUDGE = "judge-x"

pytestmark = pytest.mark.xdist_group("fastchat")  # one worker: its module fixtures are built once


@pytest.fixture(scope="module")
def bench(tmp_path_factory, mt_bench_data):
    """FastChat's directory layout, judged in single and pairwise mode by `eval.mt_bench judge`."""
    src = mt_bench_data
    root = tmp_path_factory.mktemp("fastchat")
    mt = root / "data" / "mt_bench"
    (mt / "model_answer").mkdir(parents=True)
    (mt / "reference_answer").mkdir()
    for name in ("question.jsonl", "judge_prompts.jsonl", "reference_answer/gpt-4.jsonl"):
        shutil.copy(src / name, mt / name)
    for model in MODELS:
        shutil.copy(src / "reference_answer" / f"{model}.jsonl", mt / "model_answer" / f"{model}.jsonl")
    server = Server()
    try:
        for extra in (["--mode", "single", "--model-list", *MODELS],
                      ["--mode", "pairwise-baseline", "--baseline-model", MODELS[0], "--model-list", MODELS[1]]):
            run([PYTHON, "-m", "eval.mt_bench", "judge", "--judge-model", JUDGE, "--judge-base-url",
                 server.url + "/v1", "--bench-dir", mt, "--question-ids", QIDS, *extra])
    finally:
        server.close()
    return root


def run(cmd: list, cwd=ROOT) -> str:
    proc = subprocess.run(list(map(str, cmd)), cwd=cwd, env=env_offline(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def ours(bench, kind: str, *models: str) -> dict[str, dict]:
    path = bench / "data/mt_bench/model_judgment" / f"{JUDGE}_{kind}.jsonl"
    shown = json.loads(run([PYTHON, "-m", "eval.mt_bench", "show", "--data", path, "--json",
                            *(["--model", *models] if models else [])]))
    return {s["model"]: s for s in (shown if isinstance(shown, list) else [shown])}


def fastchat(bench, mode: str) -> str:
    """FastChat's show_result from the layout's default path (data/mt_bench/model_judgment/JUDGE_*.jsonl)."""
    return run([PYTHON, "-m", "fastchat.llm_judge.show_result", "--judge-model", JUDGE, "--mode", mode,
                "--baseline-model", MODELS[0]], cwd=bench)


def rows(text: str) -> dict[str, list[float]]:
    """The numbers of each model's row in a pandas table, in column order."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in MODELS:
            out[parts[0]] = [float(x) for x in parts[1:]]
    return out


def test_single_scores_match_fastchat(bench):
    text = fastchat(bench, "single")
    sections = dict(re.findall(r"#+ (First turn|Second turn|Average) #+\n(.*?)(?=\n\n|\Z)", text, re.S))
    assert set(sections) == {"First turn", "Second turn", "Average"}, text
    turn1, turn2, average = (rows(sections[k]) for k in ("First turn", "Second turn", "Average"))
    mine = ours(bench, "single")
    assert set(mine) == set(turn1) == set(turn2) == set(average) == set(MODELS)
    for model, s in mine.items():
        assert s["num_judgments"] == 60 and 0 < s["num_unrated"] < 60  # -1 ratings left out by both
        assert turn1[model] == [1, pytest.approx(s["turn1"], abs=1e-4)]
        assert turn2[model] == [2, pytest.approx(s["turn2"], abs=1e-4)]
        assert average[model] == [pytest.approx(s["overall"], abs=1e-4)]
    assert mine[MODELS[0]]["overall"] != mine[MODELS[1]]["overall"]


FIELDS = ["win", "loss", "tie", "win_rate", "loss_rate", "win_rate_adjusted"]


def test_pairwise_against_a_baseline_matches_fastchat(bench):
    theirs = rows(fastchat(bench, "pairwise-baseline"))
    assert list(theirs) == [MODELS[1]]  # FastChat leaves the baseline out
    mine = ours(bench, "pair", MODELS[1])[MODELS[1]]
    assert theirs[MODELS[1]] == [pytest.approx(mine[f], abs=1e-4) for f in FIELDS]
    assert mine["num_error"] > 0 and mine["win"] + mine["loss"] + mine["tie"] + mine["num_error"] == 60


def test_pairwise_all_matches_fastchat(bench):
    theirs = rows(fastchat(bench, "pairwise-all"))
    mine = ours(bench, "pair")
    assert set(theirs) == set(mine) == set(MODELS)
    for model in MODELS:
        assert theirs[model] == [pytest.approx(mine[model][f], abs=1e-4) for f in FIELDS]
    a, b = (mine[m] for m in MODELS)
    assert (a["win"], a["loss"], a["tie"]) == (b["loss"], b["win"], b["tie"])
