"""Question quality on real ShareGPT sessions (the copy `make setup` installs): topic diversity and MTLD against
direct computations, the offline MiniLM path, a real (tiny) Hugging Face detector, the judge (this project's
prompt and the original's prompt format) against the local OpenAI-compatible server, and eval.tables."""
from __future__ import annotations

import itertools
import json
import re
import subprocess

import numpy as np
import pytest

from tests.conftest import PYTHON, ROOT, env_offline, run_command
from tests.test_eval_mt_bench import Server, criteria_reply, read_jsonl, write_jsonl

pytestmark = pytest.mark.xdist_group("quality")  # one worker: its module fixtures are built once

# A prompt in the form of the original's prompt_template.txt: no {conversation} placeholder, the transcript is
# appended, the scores are asked for as "{Complexity: n, ...}" in its "json format" (wording our own).
ORIGINAL_STYLE_PROMPT = (
    "You check the quality of the human's questions in the following multi-round conversation.\n"
    "1. Complexity. 2. Relevancy. 3. Logicality. 4. Diversity.\n"
    "Please output in the following json format:\n"
    '"{Complexity: [an integer number between 1 and 10], Relevancy: [an integer number between 1 and 10], '
    'Logicality: [an integer number between 1 and 10], Diversity: [an integer number between 1 and 10]}"')


def sharegpt_sessions(n_convs: int, skip: int = 0) -> tuple[list, list[str]]:
    from core.assets import sharegpt_file
    from core.conversation import HUMAN, iter_conversations

    convs = list(itertools.islice(iter_conversations(sharegpt_file()), skip, skip + n_convs))
    return convs, [t.text for c in convs for t in c.turns if t.role == HUMAN]


def original_transcript(conv) -> str:
    """How the original's cli_chatgpt.py wrote a session after its prompt (written out here independently)."""
    text = "#[Start of multi-round conversation]#\n\n"
    for t in conv.turns:
        text += (f"#[Human's question]#\n{t.text}\n" if t.role == "human" else f"#[Assistant's answer]#\n{t.text}\n\n")
    return text + "#[End of multi-round conversation]#\n\n"


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


def test_mtld_matches_lexicalrichness():
    from lexicalrichness import LexicalRichness

    from eval.question_quality import mtld_scores

    _, questions = sharegpt_sessions(30)
    scores, skipped = mtld_scores(questions + ["123 456", "!!!"])
    assert skipped == 2 + sum(LexicalRichness(q).words == 0 for q in questions)
    assert scores == [LexicalRichness(q).mtld(threshold=0.72) for q in questions if LexicalRichness(q).words]
    # a hand check of the measure itself: 4 distinct words never fall below the threshold
    assert mtld_scores(["alpha beta gamma delta"])[0] == [4.0]


def test_parse_criteria_both_forms():
    from eval.question_quality import parse_criteria

    assert parse_criteria("Good.\nComplexity: [[7]]\nRelevancy: [[8.5]]\nLogicality: [[6]]\nDiversity: [[5]]") == \
        {"complexity": 7, "relevancy": 8.5, "logicality": 6, "diversity": 5}
    assert parse_criteria('"{Complexity: 7, Relevancy: 9, Logicality: 8, Diversity: 6}"') == \
        {"complexity": 7, "relevancy": 9, "logicality": 8, "diversity": 6}
    assert parse_criteria("{'Complexity': 4, 'Relevancy': 5}") == {"complexity": 4, "relevancy": 5}
    # the prompt's own template echoed back, a score out of range, or no score at all: nothing is scored
    assert parse_criteria("{Complexity: [an integer number between 1 and 10]}") == {}
    assert parse_criteria("Complexity: 0, Relevancy: 11") == {}
    assert parse_criteria("I cannot judge these questions.") == {}


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory):
    """A real, tiny BERT text classifier whose bias makes it call every text 'Human'."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from core.assets import minilm_dir

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


def local_embedder(server, tmp_path) -> list:
    """Embeddings from the local server: runs that test something else skip loading sentence-transformers."""
    return ["--embedder", "openai", "--embedding-model", "emb", "--embedding-base-url", server.url + "/v1",
            "--embedding-cache", tmp_path / "emb"]


def run_quality(*args, in_process=True) -> subprocess.CompletedProcess:
    return run_command("eval.question_quality", *args, in_process=in_process)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory, tiny_dir, detector_dir, server):
    """One CLI run over two real ShareGPT samples side by side (MiniLM, detector, the judge with a prompt file
    in the original's form on a sample of 5 sessions of each)."""
    from core.conversation import write_json_array

    tmp = tmp_path_factory.mktemp("quality")
    convs, questions = sharegpt_sessions(24)
    other, _ = sharegpt_sessions(10, skip=24)
    data, data2 = tmp / "sample.json", tmp / "sample2.json"
    write_json_array(data, (c.to_sharegpt() for c in convs))
    write_json_array(data2, (c.to_sharegpt() for c in other))
    prompt = tmp / "prompt_template.txt"
    prompt.write_text(ORIGINAL_STYLE_PROMPT)
    first = run_quality("--data", data, data2, "--name", "ShareGPT", "ShareGPT-2", "--embedder", "minilm", "--json",
                        "--out", tmp / "results", "--tokenizer", tiny_dir, "--detector", detector_dir,
                        "--judge-model", "judge-q", "--judge-base-url", server.url + "/v1", "--sample", "5",
                        "--prompt-file", prompt, in_process=False)
    return dict(convs=convs, questions=questions, data=data, prompt=prompt, tmp=tmp, first=first,
                out=tmp / "results" / "ShareGPT.json")


def test_question_quality_cli(quality_run, server):
    from sentence_transformers import SentenceTransformer

    from core.assets import minilm_dir

    run, convs, questions = quality_run, quality_run["convs"], quality_run["questions"]
    assert run["first"].returncode == 0, run["first"].stderr
    r, r2 = json.loads(run["first"].stdout)
    assert r == json.loads(run["out"].read_text())
    assert r2 == json.loads((run["tmp"] / "results" / "ShareGPT-2.json").read_text())
    assert (r["name"], r["num_sessions"], r["num_questions"], r2["name"]) == ("ShareGPT", 24, len(questions), "ShareGPT-2")
    human_turns = [sum(t.role == "human" for t in c.turns) for c in convs]
    assert r["avg_rounds"] == pytest.approx(np.mean(human_turns), abs=0.01)

    emb = SentenceTransformer(str(minilm_dir()), device="cpu").encode(questions)
    want = direct_diversity(emb.astype(np.float64))
    assert r["topic_diversity"] == pytest.approx(want[0], abs=1e-4)
    assert r["topic_diversity_offdiag"] == pytest.approx(want[1], abs=1e-4)
    assert r["embedder"] == "all-MiniLM-L6-v2"
    assert r["mtld"] == pytest.approx(np.mean([s for s in map(_mtld, questions) if s is not None]), abs=1e-3)
    assert r["human_ratio"] == 1.0 and r["detector_accuracy"] is None

    # the judge, in the original's format: the prompt, then the transcript; replies "{Complexity: n, ...}"
    log = run["tmp"] / "results" / "ShareGPT.judge-q.judgments.jsonl"
    judged = read_jsonl(log)
    assert len(judged) == 5 and {j["id"] for j in judged} <= {c.id for c in convs}
    by_id = {c.id: c for c in convs}
    for crit in ("complexity", "relevancy", "logicality", "diversity"):
        want_mean = np.mean([criteria_reply(ORIGINAL_STYLE_PROMPT + original_transcript(by_id[j["id"]]))[crit]
                             for j in judged])
        assert r["judge"][crit] == pytest.approx(want_mean, abs=1e-4)
    assert (r["judge"]["num_judged"], r["judge"]["num_errors"], r2["judge"]["num_judged"]) == (5, 0, 5)
    assert all(re.fullmatch(r"\{(\w+: \d+(, )?)+\}", j["judgment"]) for j in judged)

    # resumed (in-process, same arguments): the judged sessions are not asked again
    from eval.question_quality import build_parser, check_args, format_report, judge_sessions

    args = build_parser().parse_args(["--data", str(run["data"]), "--judge-model", "judge-q", "--judge-base-url",
                                      server.url + "/v1", "--sample", "5", "--prompt-file", str(run["prompt"])])
    check_args(args)
    before = server.stats()["ok"]
    again = judge_sessions(convs, args, log)
    assert server.stats()["ok"] == before
    assert again == r["judge"]
    assert "judge judge-q on 5 sessions (0 unparsable)" in format_report(r)


def test_default_prompt_every_session_and_unparsable(quality_run, server, tiny_dir, tmp_path, capsys):
    """This project's prompt ([[n]] replies) on every session; a judge that gives no score: errors, counted."""
    convs = quality_run["convs"][:6]
    data = write_jsonl(tmp_path / "six.jsonl", [c.to_sharegpt() for c in convs])
    proc = run_quality("--data", data, *local_embedder(server, tmp_path), "--tokenizer", tiny_dir, "--json",
                       "--judge-model", "judge-d", "--judge-base-url", server.url + "/v1", "--judgment-file",
                       tmp_path / "d.jsonl")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    from eval.question_quality import DEFAULT_PROMPT, build_parser, check_args, judge_sessions, render_session

    assert r["judge"]["num_judged"] == 6 and r["judge"]["prompt"] == "default"
    want = np.mean([criteria_reply(DEFAULT_PROMPT.replace("{conversation}", render_session(c)))["diversity"]
                    for c in convs])
    assert r["judge"]["diversity"] == pytest.approx(want, abs=1e-4)

    args = build_parser().parse_args(["--data", str(data), "--judge-model", "judge-mute", "--judge-base-url",
                                      server.url + "/v1"])
    check_args(args)
    j = judge_sessions(convs, args, tmp_path / "mute.jsonl")
    assert (j["num_judged"], j["num_errors"]) == (6, 6) and all(j[c] is None for c in ("complexity", "diversity"))
    assert "6 of 6 judge replies had no parsable score" in capsys.readouterr().err
    assert all(rec["error"] == "no parsable score" and rec["scores"] == {} for rec in read_jsonl(tmp_path / "mute.jsonl"))
    # a judge that keeps failing: bounded retries, then the run fails (exit 1 from the CLI), nothing scored
    from core.engine import JobsFailed

    args = build_parser().parse_args(["--data", str(data), "--judge-model", "judge-down", "--judge-base-url",
                                      server.url + "/v1", "--max-retries", "1"])
    with pytest.raises(JobsFailed, match="2 judge requests failed; run the same command again to retry them"):
        judge_sessions(convs[:2], args, tmp_path / "down.jsonl")
    assert not (tmp_path / "down.jsonl").exists()


def test_detector_specs(quality_run, server, tiny_dir, tmp_path):
    """--detector goes through eval.detector: here a small n-gram detector trained on the shipped ShareGPT;
    a Hugging Face hub name that is not available offline is a clear error (main loads it before any work)."""
    det_file = tmp_path / "detector.npz"
    train = subprocess.run([PYTHON, "-m", "eval.detector", "train", "--n", "600", "--n-test", "200", "--out",
                            det_file], cwd=ROOT, env=env_offline(), capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr
    proc = run_quality("--data", quality_run["data"], *local_embedder(server, tmp_path), "--tokenizer", tiny_dir,
                       "--detector", det_file, "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    from eval.detector import load_detector

    det = load_detector(str(det_file))
    assert r["human_ratio"] == pytest.approx(float(np.mean(det.is_human(quality_run["questions"]))), abs=1e-4)
    assert r["detector_accuracy"] == pytest.approx(det.accuracy) and 0.5 < r["detector_accuracy"] <= 1
    from core.errors import UsageError

    with pytest.raises(UsageError, match="detector 'no-such-org/no-such-detector' is not available"):
        load_detector("no-such-org/no-such-detector", "Human")


def test_bad_arguments(quality_run, tmp_path):
    proc = run_quality("--data", quality_run["data"], quality_run["data"], "--name", "only-one")
    assert proc.returncode == 2 and "one name per corpus" in proc.stderr
    proc = run_quality("--data", tmp_path / "missing.json")
    assert proc.returncode == 2 and "missing.json: no such file" in proc.stderr
    proc = run_quality("--data", quality_run["data"], "--judge", "--prompt-file", tmp_path / "nope.txt")
    assert proc.returncode == 2 and "nope.txt: prompt file not found" in proc.stderr


def test_openai_embedder(quality_run, server, tiny_dir, tmp_path):
    """--embedder openai against the local server's /v1/embeddings (vectors derived from each text's hash)."""
    from eval.question_quality import embed_openai
    from tests.test_eval_mt_bench import fake_embedding

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


def _mtld(q):
    from lexicalrichness import LexicalRichness

    lex = LexicalRichness(q)
    return lex.mtld(threshold=0.72) if lex.words else None
