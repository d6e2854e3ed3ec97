"""Question quality: topic diversity and MTLD against direct computations on real questions, the offline
MiniLM path, a real (tiny) Hugging Face detector, and the judge against the local OpenAI-compatible server."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests.conftest import PYTHON, ROOT, env_offline
from tests.test_eval_mt_bench import Server, criteria_reply


def oasst_questions(shared_data, n_convs: int) -> tuple[list, list[str]]:
    from model.conversation import HUMAN, iter_conversations

    convs = []
    for conv in iter_conversations(shared_data / "oasst/oasst_en100_threads.sharegpt.json"):
        convs.append(conv)
        if len(convs) == n_convs:
            break
    return convs, [t.text for c in convs for t in c.turns if t.role == HUMAN]


def direct_diversity(emb: np.ndarray) -> tuple[float, float]:
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = x @ x.T  # the paper's full matrix
    n = len(x)
    return float(sim.mean()), float((sim.sum() - np.trace(sim)) / (n * (n - 1)))


def test_topic_diversity_matches_full_matrix():
    from eval.question_quality import topic_diversity

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(301, 24)) + 0.3  # not normalised, correlated: a non-trivial mean
    got = topic_diversity(emb.astype(np.float32), block=64)
    want = direct_diversity(emb)
    assert got == pytest.approx(want, abs=1e-6)
    assert got[0] > got[1]  # the diagonal (all ones) raises the mean
    with pytest.raises(ValueError, match="all zeros"):
        topic_diversity(np.vstack([emb, np.zeros((1, 24))]))


def test_mtld_matches_lexicalrichness(shared_data):
    from lexicalrichness import LexicalRichness

    from eval.question_quality import mtld_scores

    _, questions = oasst_questions(shared_data, 30)
    scores, skipped = mtld_scores(questions + ["123 456", "!!!"])
    assert skipped == 2
    assert scores == [LexicalRichness(q).mtld(threshold=0.72) for q in questions]
    # a hand check of the measure itself: 4 distinct words never fall below the threshold
    assert mtld_scores(["alpha beta gamma delta"])[0] == [4.0]


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory):
    """A real, tiny BERT text classifier whose bias makes it call every text 'Human'."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from model.assets import minilm_dir

    out = tmp_path_factory.mktemp("detector")
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, id2label={0: "ChatGPT", 1: "Human"}, label2id={"ChatGPT": 0, "Human": 1})
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 5.0]))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def run_quality(*args) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "eval.question_quality", *map(str, args)], cwd=ROOT, env=env_offline(),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def quality_run(shared_data, tmp_path_factory, tiny_dir, detector_dir, server):
    """One full CLI run on 24 real OASST sessions (MiniLM, detector, judge with a --prompt-file)."""
    from model.conversation import write_json_array

    tmp = tmp_path_factory.mktemp("quality")
    convs, questions = oasst_questions(shared_data, 24)
    data = tmp / "sample.json"
    write_json_array(data, (c.to_sharegpt() for c in convs))
    prompt = tmp / "paper_prompt.txt"
    prompt.write_text("Rate the human's Complexity, Relevancy and Logicality.\n{conversation}\n")
    out = tmp / "q.json"
    first = run_quality("--data", data, "--name", "OASST", "--embedder", "minilm", "--json", "--out", out,
                        "--tokenizer", tiny_dir, "--detector", detector_dir, "--judge-model", "judge-q",
                        "--judge-base-url", server.url + "/v1", "--judge-sample", "5", "--prompt-file", prompt,
                        "--judgment-file", tmp / "judge.jsonl")
    return dict(convs=convs, questions=questions, data=data, prompt=prompt, out=out, tmp=tmp, first=first)


def test_question_quality_cli(quality_run, server):
    from sentence_transformers import SentenceTransformer

    from model.assets import minilm_dir

    run, convs, questions = quality_run, quality_run["convs"], quality_run["questions"]
    assert run["first"].returncode == 0, run["first"].stderr
    r = json.loads(run["first"].stdout)
    assert r == json.loads(run["out"].read_text())
    assert (r["name"], r["num_sessions"], r["num_questions"]) == ("OASST", 24, len(questions))
    human_turns = [sum(t.role == "human" for t in c.turns) for c in convs]
    assert r["avg_rounds"] == pytest.approx(np.mean(human_turns), abs=0.01)

    emb = SentenceTransformer(str(minilm_dir()), device="cpu").encode(questions)
    want = direct_diversity(emb.astype(np.float64))
    assert r["topic_diversity"] == pytest.approx(want[0], abs=1e-4)
    assert r["topic_diversity_offdiag"] == pytest.approx(want[1], abs=1e-4)
    assert r["mtld"] == pytest.approx(np.mean([s for s in map(_mtld, questions) if s is not None]), abs=1e-3)
    assert r["human_ratio"] == 1.0

    judged = [json.loads(line) for line in (run["tmp"] / "judge.jsonl").read_text().splitlines()]
    assert len(judged) == 5 and r["judge"]["num_judged"] == 5
    for crit in ("complexity", "relevancy", "logicality"):
        want_mean = np.mean([criteria_reply(_prompt_for(run["prompt"], convs, j["id"]))[crit] for j in judged])
        assert r["judge"][crit] == pytest.approx(want_mean, abs=1e-4)
    assert r["judge"]["diversity"] is None and r["judge"]["diversity_missing"] == 5  # the prompt asks none

    # resumed (in-process, same arguments): the judged sessions are not asked again
    from eval.question_quality import build_parser, format_report, judge_sessions

    args = build_parser().parse_args(["--data", str(run["data"]), "--judge-model", "judge-q", "--judge-base-url",
                                      server.url + "/v1", "--judge-sample", "5", "--prompt-file", str(run["prompt"]),
                                      "--judgment-file", str(run["tmp"] / "judge.jsonl")])
    before = server.stats()["ok"]
    again = judge_sessions(convs, args)
    assert server.stats()["ok"] == before
    assert again == r["judge"]
    assert "judge judge-q on 5 sessions" in format_report(r)


def test_tables_report(quality_run, shared_data, tmp_path, tiny_dir, server):
    """eval.tables over a results directory filled by the real commands (AlpacaEval: a summary in the
    format `eval.alpaca_eval judge --summary` writes, since the alpaca_eval package is not installed here)."""
    import shutil

    from tests.test_eval_mt_bench import data_args, mt_bench

    results = tmp_path / "results"
    (results / "question_quality").mkdir(parents=True)
    shutil.copy(quality_run["out"], results / "question_quality" / "oasst.json")
    mt_bench("judge", "--judge-model", "judge-x", "--judge-base-url", server.url + "/v1", "--model-list",
             "gpt-4", "vicuna-13b-v1.3", "--question-ids", "81,91,101", "--output-file",
             results / "mt_bench" / "judge-x_single.jsonl", *data_args(shared_data))
    shown = json.loads(mt_bench("show", "--judgment-file", results / "mt_bench" / "judge-x_single.jsonl",
                                "--model", "gpt-4", "--json").stdout)
    (results / "alpaca_eval").mkdir()
    (results / "alpaca_eval" / "platolm.json").write_text(json.dumps(
        {"model": "platolm", "annotator": "alpaca_eval_gpt4", "win_rate": 81.94, "standard_error": 1.36,
         "lc_win_rate": None, "n_total": 805}))
    (results / "corpus_stats").mkdir()
    stats = subprocess.run([PYTHON, "-m", "data.prepare", "stats", "--in", quality_run["data"], "--tokenizer",
                            tiny_dir, "--json"], cwd=ROOT, env=env_offline(), capture_output=True, text=True)
    assert stats.returncode == 0, stats.stderr
    (results / "corpus_stats" / "OASST-sample.json").write_text(stats.stdout)

    report = tmp_path / "report" / "REPORT.md"
    proc = subprocess.run([PYTHON, "-m", "eval.tables", "--results", results, "--out", report], cwd=ROOT,
                          env=env_offline(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    q = json.loads(quality_run["out"].read_text())
    gpt4_row = next(line for line in text.splitlines() if line.startswith("| gpt-4 |"))
    assert f"| {shown['overall']:.2f} | {shown['turn1']:.2f} |" in gpt4_row
    assert "| platolm | alpaca_eval_gpt4 | 81.94 |" in text
    assert f"| OASST | 24 | {q['num_questions']} |" in text and f"{q['topic_diversity']:.4f}" in text
    assert "| OASST-sample | 24 |" in text and "| OASST | 24 |" in text.split("### Corpus statistics")[1]
    assert (report.parent / "question_quality.png").stat().st_size > 1000
    assert (report.parent / "mt_bench_radar_judge-x.png").stat().st_size > 1000


def _mtld(q):
    from lexicalrichness import LexicalRichness

    lex = LexicalRichness(q)
    return lex.mtld(threshold=0.72) if lex.words else None


def _prompt_for(prompt_file, convs, cid):
    from eval.question_quality import render_session

    conv = next(c for c in convs if c.id == cid)
    return prompt_file.read_text().replace("{conversation}", render_session(conv))


def test_openai_embedder(quality_run, server, tiny_dir, tmp_path):
    """--embedder openai against the local server's /v1/embeddings (vectors derived from each text's hash)."""
    from tests.test_eval_mt_bench import fake_embedding

    from eval.question_quality import embed_openai

    cache = tmp_path / "emb-cache"
    proc = run_quality("--data", quality_run["data"], "--embedder", "openai", "--embedding-model", "emb",
                       "--embedding-base-url", server.url + "/v1", "--embedding-cache", cache,
                       "--tokenizer", tiny_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    want = direct_diversity(np.array([fake_embedding(q) for q in quality_run["questions"]]))
    assert (r["topic_diversity"], r["topic_diversity_offdiag"]) == pytest.approx(want, abs=1e-5)
    assert r["embedder"] == "emb"
    # the finished batch is cached: a rerun sends nothing; a new batch size sends only new batches
    before = server.stats()["ok"]
    questions = quality_run["questions"]
    again = embed_openai(questions, "emb", server.url + "/v1", "NO_KEY_NEEDED", cache)
    assert server.stats()["ok"] == before
    np.testing.assert_allclose(again, np.array([fake_embedding(q) for q in questions]), rtol=1e-6)
    embed_openai(questions, "emb", server.url + "/v1", "NO_KEY_NEEDED", cache, batch_size=10)
    assert server.stats()["ok"] == before + (len(questions) + 9) // 10


def test_missing_detector_fails_clearly(shared_data, tmp_path):
    proc = run_quality("--data", shared_data / "oasst/oasst_en100_threads.sharegpt.json",
                       "--detector", "no-such-org/no-such-detector", "--json")
    assert proc.returncode == 2
    assert "detector 'no-such-org/no-such-detector' is not available" in proc.stderr
    assert proc.stdout == ""
