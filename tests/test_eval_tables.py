"""eval.tables over a results directory filled by the real commands: FastChat-format judgment files written by
`eval.mt_bench judge` against the local judge, question-quality files, corpus statistics, AlpacaEval summaries and
simulator-quality files in the shapes their commands write; with and without the paper's published numbers."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import PYTHON, ROOT, env_offline, run_command
from tests.test_eval_mt_bench import (bench, mt_bench, read_jsonl, server,  # noqa: F401
                                      vicuna, write_jsonl)
from tests.test_eval_quality import local_embedder, run_quality, sharegpt_sessions

pytestmark = pytest.mark.xdist_group("tables")  # one worker: its module fixtures are built once


def tables(*args, in_process=True) -> subprocess.CompletedProcess:
    return run_command("eval.tables", *args, in_process=in_process)


def judge_into(bench_dir, server, out, models, ids, *extra):
    mt_bench("judge", "--bench-dir", bench_dir, "--judge-model", "judge-x", "--judge-base-url", server.url + "/v1",
             "--model-list", *models, "--question-ids", ids, "--out", out, *extra)
    return out


def add_model(bench_dir, source: str, name: str) -> None:
    """Another model's answers under a new id (what a trained PlatoLM's answer file looks like)."""
    answers = read_jsonl(bench_dir / "model_answer" / f"{source}.jsonl")
    write_jsonl(bench_dir / "model_answer" / f"{name}.jsonl", [dict(a, model_id=name) for a in answers])


SIMULATOR = [
    {"name": "ShareGPT humans", "metric": "diversity", "data": "sharegpt.json", "distinct_1": 0.41,
     "pairwise_similarity": 0.12, "n": 500},
    {"name": "ShareGPT humans", "metric": "human_likeness", "data": "sharegpt.json", "human_likeness": 0.93, "n": 500,
     "detector": "default", "detector_accuracy": 0.88},
    {"name": "Socratic", "metric": "perplexity", "model": "runs/socratic", "nll": 2.345, "ppl": 10.43, "tokens": 9000},
    {"name": "Socratic", "metric": "termination", "model": "runs/socratic", "precision": 0.5, "recall": 0.25,
     "f1": 0.333, "n": 40},
    {"name": "Role-play", "metric": "role_adherence", "model": "gpt-3.5-turbo", "role_adherence": 0.71, "n": 200},
]


@pytest.fixture(scope="module")
def results(bench, vicuna, server, tiny_dir, tmp_path_factory):
    """A results directory in the layout eval.tables documents, written by the commands that make each file."""
    res = tmp_path_factory.mktemp("results")
    add_model(bench, "gpt-4-0125-preview", "platolm-7b")
    judge_into(bench, server, res / "mt_bench" / "judge-x_single.jsonl", ["platolm-7b", "gpt-4"], "101,111,121")
    for turns in (1, 2, 3):
        add_model(bench, "gpt-4-0125-preview" if turns > 1 else "gpt-4", f"platolm-turns-{turns}")
    judge_into(bench, server, res / "ablations" / "turns" / "mt_bench" / "judge-x_single.jsonl",
               [f"platolm-turns-{t}" for t in (1, 2, 3)], "101,111")
    mt_bench("judge", "--bench", "vicuna_bench", "--bench-dir", vicuna, "--judge-model", "judge-v", "--judge-base-url",
             server.url + "/v1", "--model-list", "gpt-4-0125-preview", "--out",
             res / "vicuna_bench" / "judge-v_single.jsonl")
    convs, _ = sharegpt_sessions(12)
    other, _ = sharegpt_sessions(8, skip=12)
    a = write_jsonl(res.parent / "socratic.jsonl", [c.to_sharegpt() for c in convs])
    b = write_jsonl(res.parent / "sharegpt.jsonl", [c.to_sharegpt() for c in other])
    proc = run_quality("--data", a, b, "--name", "SocraticChat", "ShareGPT", *local_embedder(server, res.parent),
                       "--tokenizer", tiny_dir, "--out", res / "question_quality")
    assert proc.returncode == 0, proc.stderr
    stats = subprocess.run([PYTHON, "-m", "data.prepare", "stats", "--data", a, "--tokenizer", tiny_dir, "--json"],
                           cwd=ROOT, env=env_offline(), capture_output=True, text=True)
    assert stats.returncode == 0, stats.stderr
    (res / "corpus_stats").mkdir()
    (res / "corpus_stats" / "SocraticChat-sample.json").write_text(stats.stdout)
    (res / "alpaca_eval").mkdir()
    (res / "alpaca_eval" / "platolm-7b-v1.json").write_text(json.dumps(
        {"model": "platolm-7b", "version": "1", "annotator": "alpaca_eval_gpt4", "metric": "win_rate",
         "reference": "ref.json", "win_rate": 77.5, "standard_error": 1.5, "lc_win_rate": None, "n_total": 805}))
    (res / "simulator").mkdir()
    for i, rec in enumerate(SIMULATOR):
        (res / "simulator" / f"{i}.json").write_text(json.dumps(rec))
    return res


def row(text: str, start: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_with_paper_numbers(results, tmp_path):
    report = tmp_path / "paper" / "PAPER.md"
    proc = tables("--data", results, "--out", report, "--paper", in_process=False)
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    main = text.split("## Main results")[1].split("## 10K comparison")[0]
    # the PlatoLM row, filled from the FastChat judgment file, right under the published one
    lines = [line for line in main.splitlines() if line.startswith("| PlatoLM-7b |") or line.startswith("| platolm-7b |")]
    assert lines[0].startswith("| PlatoLM-7b | paper: arxiv | 6.33 | 6.74 | 5.91 |")
    header = row(main, "| model | source | overall |")
    ours = dict(zip(header, row(main, "| platolm-7b | ours |")))
    shown = json.loads(mt_bench("show", "--data", results / "mt_bench" / "judge-x_single.jsonl", "--model-list",
                                "platolm-7b", "--json").stdout)
    assert ours["overall"] == f"{shown['overall']:.2f}" and ours["turn 1"] == f"{shown['turn1']:.2f}"
    assert ours["turn 2"] == f"{shown['turn2']:.2f}"
    for cat in ("reasoning", "math", "coding"):
        assert ours[cat] == f"{shown['categories'][cat]:.2f}"
    assert main.index("| PlatoLM-7b | paper") < main.index("| platolm-7b | ours") < main.index("| Vicuna-7B (v1.3)")
    # AlpacaEval: v1 and v2 published rows, ours under them
    assert "| PlatoLM-7b | paper: readme, alpaca_v1 | 1 | alpaca_eval_gpt4 | 81.94 | 1.35 |" in main
    assert "| PlatoLM-7b | paper: alpaca_v2 | 2 | weighted_alpaca_eval_gpt4_turbo | 6.32 | 0.74 | 10.54 |" in main
    assert "| platolm-7b | ours | 1 | alpaca_eval_gpt4 | 77.50 | 1.50 | - | 805 |" in main
    # corpus statistics: the original's token counts beside ours
    assert "| SocraticChat (sd_20039_for_eval) | paper: token_stat | 20039 | 215378 |" in main
    assert "| SocraticChat-sample | ours | 12 |" in main
    seeds = text.split("## Ablation: free vs WizardLM vs Dolly seeds")[1].split("## Ablation: number of turns")[0]
    assert "| Dolly seeds (dw_10k) | paper: token_stat | 10000 | 166078 |" in seeds
    backbones = text.split("## Ablation: backbone pairing")[1]
    assert "no published numbers known to this project" in backbones
    assert "Rows marked `paper: <source>`" in text and "alpaca-eval 0.6.6 package" in text
    assert (report.parent / "ablations_turns_turn_ablation.png").stat().st_size > 1000


def test_report_without_paper_numbers(results, tmp_path):
    report = tmp_path / "REPORT.md"
    proc = tables("--data", results, "--out", report)
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    assert "paper:" not in text and "## 10K comparison" not in text and "## Ablation: backbone pairing" not in text
    # Vicuna-Bench: a single-turn benchmark has no turn-2 column
    vic = text.split("### Vicuna-Bench, single-answer grading (judge: judge-v)")[1].split("###")[0]
    assert "turn 1" in vic and "turn 2" not in vic and "| gpt-4-0125-preview | ours |" in vic
    q = json.loads((results / "question_quality" / "SocraticChat.json").read_text())
    assert f"| SocraticChat | 12 | {q['num_questions']} |" in text and f"{q['topic_diversity']:.4f}" in text
    assert "| ShareGPT | 8 |" in text and "| emb |" in text
    turns = text.split("## Ablation: number of turns")[1]
    assert [r[0] for r in (row(turns, f"| platolm-turns-{t} |") for t in (1, 2, 3))] == \
        ["platolm-turns-1", "platolm-turns-2", "platolm-turns-3"]
    for png in ("question_quality.png", "mt_bench_radar_judge-x.png", "vicuna_bench_radar_judge-v.png",
                "ablations_turns_turn_ablation.png"):
        assert (tmp_path / png).stat().st_size > 1000, png


def test_simulator_quality_section(results, tmp_path):
    report = tmp_path / "REPORT.md"
    assert tables("--data", results, "--out", report).returncode == 0
    section = report.read_text().split("## Simulator quality")[1]
    names = [line.split("|")[1].strip() for line in section.splitlines()[4:] if line.startswith("|")]
    assert names == ["ShareGPT humans", "Role-play", "Socratic"]  # the human reference first
    header = row(section, "| simulator |")
    cells = {n: dict(zip(header, row(section, f"| {n} |"))) for n in names}
    assert cells["ShareGPT humans"]["distinct-1 ↑"] == "0.410" and cells["ShareGPT humans"]["human-likeness ↑"] == "0.930"
    assert cells["ShareGPT humans"]["held-out human-turn NLL ↓"] == "-"
    assert cells["Socratic"]["perplexity ↓"] == "10.430" and cells["Socratic"]["termination F1 ↑"] == "0.333"
    assert cells["Socratic"]["model / data"] == "runs/socratic" and cells["Role-play"]["role adherence ↑"] == "0.710"
    assert cells["Role-play"]["distinct-1 ↑"] == "-"


def test_bad_results(results, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(results / "simulator", bad / "simulator")
    (bad / "simulator" / "x.json").write_text(json.dumps({"name": "x", "metric": "fluency"}))
    proc = tables("--data", bad, "--out", tmp_path / "r.md")
    assert proc.returncode == 2 and "x.json: unknown metric 'fluency'" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = tables("--data", tmp_path / "empty", "--out", tmp_path / "r.md")
    assert proc.returncode == 2 and "holds no result files" in proc.stderr
    (bad / "simulator" / "x.json").write_text("{not json")
    proc = tables("--data", bad, "--out", tmp_path / "r.md")
    assert proc.returncode == 2 and "x.json: not JSON" in proc.stderr
