"""``eval.simulator`` and ``eval.detector`` on real ShareGPT conversations, real models and real local servers.

Perplexity is checked against an independent computation (a plain loop: for each human turn, the model
on its prefix, cross-entropy on that turn's tokens as ``model.dyadic`` labels them) with both templates
and two tokenizers (the tiny LLaMA-style one and SmolLM2's). The detector is trained here on a few
thousand real ShareGPT turns (cached) and must beat chance by a clear margin on held-out turns.
"""
from __future__ import annotations

import itertools
from collections import Counter
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from core.conversation import GPT, HUMAN, BadRecordSummary, Conversation, Turn, iter_conversations, write_jsonl
from model.dyadic import END_OF_CONVERSATION, IGNORE_INDEX, Encoder
from core.errors import UsageError
from tests.conftest import cache_lock, run_command
from tests.servers import fault_server

from eval import simulator as sim
from eval.detector import (HFDetector, NgramDetector, default_detector, load_detector, train_detector)


def sharegpt(n: int) -> list[Conversation]:
    from core.assets import sharegpt_file

    convs = iter_conversations(sharegpt_file(), summary=BadRecordSummary(show_first=0))
    return list(itertools.islice((c for c in convs if c.turns[0].role == HUMAN), n))


@pytest.fixture(scope="module")
def real_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sharegpt") / "heldout.jsonl"
    write_jsonl(path, (c.to_sharegpt() for c in sharegpt(8)))
    return path


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory) -> Path:
    """A detector trained on 3,000 real ShareGPT turns (cached like the default one), saved for --detector."""
    with cache_lock("detector"):  # trained once into the tests' cache, by one worker
        det = default_detector(n=3000, n_test=1000)
    path = tmp_path_factory.mktemp("detector") / "det.npz"
    det.save(path)
    return path


def run_cli(*args: str, check: bool = True, in_process: bool = True) -> subprocess.CompletedProcess:
    proc = run_command("eval.simulator", *args, in_process=in_process)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def result(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "result.json"
    assert sim.main([*args, "--out", str(out)]) == 0
    return json.loads(out.read_text())


# -- perplexity -----------------------------------------------------------------------------------------
def per_turn_loop(model_dir, template: str, convs: list[Conversation], max_length: int) -> tuple[float, int]:
    """The independent computation: one forward pass per human turn on its prefix, full logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    encoder = Encoder(tok, HUMAN, template, max_length=max_length)
    total, count = 0.0, 0
    for conv in convs:
        row = encoder.encode(conv)
        ids, labels = row["input_ids"], row["labels"]
        t = 1  # the first token has no history
        while t < len(labels):
            if labels[t] == IGNORE_INDEX:
                t += 1
                continue
            end = t
            while end < len(labels) and labels[end] != IGNORE_INDEX:
                end += 1
            with torch.no_grad():
                logits = model(torch.tensor([ids[:end]])).logits[0, t - 1:end - 1].double()
            target = torch.tensor(ids[t:end])
            total -= torch.log_softmax(logits, -1).gather(1, target[:, None]).sum().item()
            count += end - t
            t = end
    return total, count


@pytest.mark.parametrize("which,template,max_length", [
    ("tiny", "dyadic", 384), ("tiny", "chat", 384), ("smollm2", "chat", 128),
    pytest.param("smollm2", "dyadic", 128, marks=pytest.mark.slow)])
def test_perplexity_equals_a_per_turn_loop_on_real_conversations(which, template, max_length, tiny_dir,
                                                                   smollm2_dir, real_file, tmp_path):
    model_dir = tiny_dir if which == "tiny" else smollm2_dir
    convs = list(iter_conversations(real_file))
    r = result(tmp_path, "perplexity", "--model", str(model_dir), "--data", str(real_file), "--template", template,
               "--max-context", str(max_length), "--batch-tokens", "1024", "--name", "x")
    total, count = per_turn_loop(model_dir, template, convs, max_length)
    assert r["metric"] == "perplexity" and r["name"] == "x" and r["conversations"] == len(convs)
    assert r["tokens"] == count and r["skipped"] == 0
    assert r["nll"] == pytest.approx(total / count, rel=1e-4)
    assert r["ppl"] == pytest.approx(math.exp(total / count), rel=1e-3)
    from transformers import AutoTokenizer

    whole = Encoder(AutoTokenizer.from_pretrained(model_dir), HUMAN, template, max_length=1 << 30)
    assert r["truncated"] == sum(len(whole.encode(c)["input_ids"]) > max_length for c in convs)


def test_batched_equals_one_row_at_a_time(tiny_dir, tiny_tokenizer):
    scorer, tok, _ = sim.load_scorer(str(tiny_dir), "cpu", batch_tokens=1 << 16)
    encoder = Encoder(tok, HUMAN, "dyadic", max_length=300)
    rows = [r for r in encoder.encode_many(sharegpt(12)) if isinstance(r, dict)]
    batched = scorer.score(rows)
    scorer.batch_tokens = 1  # one row per forward pass
    single = scorer.score(rows)
    assert len({len(sim.TokenScorer.trim(r)[0]) for r in rows}) > 1  # rows of different lengths padded together
    for (s1, n1), (s2, n2) in zip(batched, single):
        assert n1 == n2 > 0 and s1 == pytest.approx(s2, rel=1e-5)


def test_bad_conversations_are_named_counted_and_the_rest_scored(tiny_dir, tmp_path, capfd):
    good = sharegpt(1)[0]
    records = [
        good.to_sharegpt(),
        {"id": "only-gpt", "conversations": [{"from": "gpt", "value": "Hello, how can I help?"}]},
        {"id": "long-answer-first", "conversations": [{"from": "gpt", "value": "word " * 2000},
                                                      {"from": "human", "value": "thanks"}]},
        {"id": "bad-role", "conversations": [{"from": "robot", "value": "beep"}]},
        {"id": "long-question", "conversations": [{"from": "human", "value": "why " * 2000}]},
    ]
    data = tmp_path / "bad.jsonl"
    write_jsonl(data, records)
    r = result(tmp_path, "perplexity", "--model", str(tiny_dir), "--data", str(data), "--max-context", "256")
    err = capfd.readouterr().err
    assert r["conversations"] == 2 and r["skipped"] == 3 and r["truncated"] == 3
    assert r["skipped_reasons"] == {"no human turn": 1, "no human token within max_length": 1, "unknown role": 1}
    for name in ("only-gpt", "long-answer-first", "bad-role"):
        assert name in err


def test_perplexity_input_is_streamed(tiny_dir, tiny_tokenizer):
    """An endless input with --limit ends: conversations are read a pool at a time, not all at once."""
    pulled = []

    def endless():
        for i in itertools.count():
            pulled.append(i)
            yield Conversation(str(i), [Turn(HUMAN, f"question {i}"), Turn(GPT, "answer")])

    encoder = Encoder(tiny_tokenizer, HUMAN, "dyadic", max_length=1 << 30)
    rows = sim.encode_window(encoder, endless(), "<gen>", 1000, BadRecordSummary(), Counter())
    pools = list(sim.pooled(itertools.islice(sim._keyed(rows), 10), 4))
    assert [len(p) for p in pools] == [4, 4, 2]
    assert len(pulled) <= 10 + 256  # at most one encoder batch read ahead


def test_perplexity_resumes_from_its_details_file(tiny_dir, real_file, tmp_path):
    details = tmp_path / "details.jsonl"
    args = ["perplexity", "--model", str(tiny_dir), "--data", str(real_file), "--max-context", "200",
            "--details", str(details)]
    first = result(tmp_path, *args, "--limit", "3")
    assert len(details.read_text().splitlines()) == 1 + 3
    full = result(tmp_path, *args)
    assert len(details.read_text().splitlines()) == 1 + full["conversations"]
    fresh = result(tmp_path, *args[:-2])
    assert full["nll"] == pytest.approx(fresh["nll"], rel=1e-6) and full["tokens"] == fresh["tokens"]
    assert first["conversations"] == 3
    with pytest.raises(UsageError, match="other options"):
        sim.Details(str(details), {"model": "another"})


def test_perplexity_with_an_endpoint_says_it_needs_a_local_model(real_file):
    proc = run_cli("perplexity", "--model", "gpt-3.5-turbo", "--base-url", "http://127.0.0.1:9/v1",
                   "--data", str(real_file), check=False)
    assert proc.returncode == 2
    assert "perplexity needs a local model" in proc.stderr and "Traceback" not in proc.stderr


# -- the detector ---------------------------------------------------------------------------------------
def test_detector_beats_chance_on_held_out_real_turns(detector_file):
    det = NgramDetector.load(detector_file)
    print(f"\ndetector held-out accuracy (3,000 training turns, 1,000 held-out): {det.accuracy}")
    assert det.accuracy > 0.8
    # measured again here, on held-out turns of other conversations than the training ones
    from eval.detector import labelled_turns
    from core.assets import sharegpt_file

    texts, labels = labelled_turns(sharegpt_file(), 3000, 1000)["test"]
    assert np.mean(det.is_human(texts) == np.array(labels, dtype=bool)) == pytest.approx(det.accuracy, abs=1e-4)
    assert not det.seen_in_training(texts).all()
    p = det.human_probability(texts[:50])
    assert p.shape == (50,) and ((p >= 0) & (p <= 1)).all()


def test_detector_round_trips_and_knows_its_training_turns(tmp_path):
    det = train_detector(n=400, n_test=200, verbose=False)
    path = tmp_path / "d.npz"
    det.save(path)
    back = load_detector(str(path))
    texts = ["Write me a poem about autumn", "Certainly! Here is a poem:\n\n1. Leaves fall"]
    assert np.allclose(back.human_probability(texts), det.human_probability(texts))
    assert back.accuracy == det.accuracy
    from eval.detector import labelled_turns
    from core.assets import sharegpt_file

    train_texts, _ = labelled_turns(sharegpt_file(), 400, 200)["train"]
    assert back.seen_in_training(train_texts).all()


@pytest.mark.parametrize("content", [b"not a detector", b""])
def test_a_detector_file_that_does_not_load_is_a_clear_error(tmp_path, content):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(content)
    with pytest.raises(UsageError, match="broken.npz: cannot be loaded"):
        load_detector(str(bad))
    proc = run_cli("human-likeness", "--data", str(bad), "--detector", str(bad), check=False)
    assert proc.returncode == 2 and "cannot be loaded" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(UsageError, match="no such file"):
        load_detector(str(tmp_path / "missing.npz"))


def test_hugging_face_classifier_as_detector(tmp_path, tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=2,
                         id2label={0: "ChatGPT", 1: "Human"}, label2id={"ChatGPT": 0, "Human": 1},
                         pad_token_id=tiny_tokenizer.eos_token_id)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    tok = tiny_tokenizer
    tok.pad_token = tok.eos_token
    tok.save_pretrained(tmp_path)
    det = load_detector(str(tmp_path))
    assert isinstance(det, HFDetector) and det.label == "Human"
    p = det.human_probability(["hello there", "Certainly! Here is the answer."])
    assert p.shape == (2,) and ((p > 0) & (p < 1)).all()
    with pytest.raises(UsageError, match="none is 'robot'"):
        load_detector(f"{tmp_path}#robot")


# -- generation metrics ---------------------------------------------------------------------------------
def test_role_adherence_with_a_local_model_is_the_detectors_verdict(tiny_dir, detector_file, tmp_path):
    saved = tmp_path / "turns.jsonl"
    r = result(tmp_path, "role-adherence", "--model", str(tiny_dir), "--detector", str(detector_file),
               "--samples", "1", "--max-new-tokens", "12", "--save", str(saved), "--name", "tiny")
    probes = sim.load_probes(str(sim.DEFAULT_PROBES))
    assert r["metric"] == "role_adherence" and r["probes"] == len(probes) == 36 and r["n"] == 36
    assert set(r["by_kind"]) == {"question", "help", "handover"}
    generated = [c.turns[-1].text for c in iter_conversations(saved)]
    det = NgramDetector.load(detector_file)  # the detector's own verdict, turn by turn; an empty turn is nobody's
    expected = np.mean([bool(t.strip()) and bool(det.is_human([t])[0]) for t in generated])
    assert r["role_adherence"] == pytest.approx(expected, abs=1e-4)
    assert r["detector_accuracy"] > 0.8


def test_diversity_of_openings_local_and_real(tiny_dir, real_file, tmp_path):
    saved = tmp_path / "openings.jsonl"
    r = result(tmp_path, "diversity", "--model", str(tiny_dir), "--n", "6", "--max-new-tokens", "12",
               "--save", str(saved))
    openings = [c.turns[0].text for c in iter_conversations(saved)]
    assert r["n"] == 6 == len(openings) and r["embedder"] == "minilm"
    assert (r["distinct_1"], r["pairwise_similarity"]) == \
        pytest.approx(direct_diversity(openings, minilm_vectors(openings)), abs=1e-3)
    ref = result(tmp_path, "diversity", "--data", str(real_file), "--n", "5", "--name", "ShareGPT humans")
    firsts = [c.turns[0].text for c in iter_conversations(real_file)]
    assert ref["n"] == 5 and ref["data"] == str(real_file) and ref["name"] == "ShareGPT humans"
    assert len(firsts) == 8  # five of the eight openings, drawn: the figures are those of one of the 56 draws
    vectors = minilm_vectors(firsts)
    draws = [direct_diversity([firsts[i] for i in pick], vectors) for pick in itertools.combinations(range(8), 5)]
    assert any((ref["distinct_1"], ref["pairwise_similarity"]) == pytest.approx(d, abs=1e-3) for d in draws)


def minilm_vectors(texts: list[str]) -> dict[str, np.ndarray]:
    from sentence_transformers import SentenceTransformer

    from core.assets import minilm_dir

    return dict(zip(texts, SentenceTransformer(str(minilm_dir()), device="cpu").encode(texts)))


def direct_diversity(texts: list[str], vectors: dict[str, np.ndarray]) -> tuple[float, float]:
    """The independent computation: distinct lower-cased words over all words; the mean cosine of the texts'
    MiniLM embeddings over all pairs of different texts."""
    import re

    words = [w for t in texts for w in re.findall(r"\w+", t.lower())]
    x = np.array([vectors[t] for t in texts], dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n = len(texts)
    return len(set(words)) / len(words), ((x @ x.T).sum() - n) / (n * (n - 1))


def test_distinct_1_and_reservoir():
    assert sim.distinct_1(["a b a", "B c"]) == pytest.approx(3 / 5)
    assert sim.distinct_1([""]) == 0.0
    sample = sim.reservoir(iter(range(1000)), 10, seed=1)
    assert len(sample) == 10 == len(set(sample)) and sample == sorted(sample)
    assert sim.reservoir(iter(range(3)), 10, seed=1) == [0, 1, 2]


def test_human_likeness_of_real_turns_leaves_out_the_detectors_training_turns(detector_file, tmp_path):
    from eval.detector import labelled_turns
    from core.assets import sharegpt_file

    sides = labelled_turns(sharegpt_file(), 3000, 1000)
    train_h = [t for t, y in zip(*sides["train"]) if y][:20]
    test_h = [t for t, y in zip(*sides["test"]) if y][:40]
    data = tmp_path / "humans.jsonl"
    write_jsonl(data, ({"id": str(i), "conversations": [{"from": "human", "value": t}]}
                       for i, t in enumerate(train_h + test_h)))
    r = result(tmp_path, "human-likeness", "--data", str(data), "--detector", str(detector_file), "--n", "100")
    det = NgramDetector.load(detector_file)
    unseen = [t for t in train_h + test_h if not det.seen_in_training([t])[0]]
    assert r["excluded_seen_in_training"] == len(train_h + test_h) - len(unseen) >= 20
    assert r["n"] == len(unseen) and r["human_likeness"] == pytest.approx(det.is_human(unseen).mean(), abs=1e-4)
    assert r["human_likeness"] > 0.7  # real human turns the detector never saw


def test_endpoint_simulators_socratic_and_roleplay(detector_file, tmp_path, servers):
    import httpx

    servers.append(srv := fault_server(tmp_path, "sim", "--role", "human"))
    r = result(tmp_path, "role-adherence", "--base-url", srv.url, "--detector", str(detector_file),
               "--samples", "1", "--name", "fault")
    assert r["n"] == 36 and r["model"] == "fault-teacher" and r["base_url"] == srv.url
    h = result(tmp_path, "human-likeness", "--base-url", srv.url, "--detector", str(detector_file), "--n", "5",
               "--simulator-kind", "roleplay")
    assert h["n"] == 5 and h["simulator_kind"] == "roleplay" and 0 <= h["human_likeness"] <= 1
    assert httpx.get(srv.url.removesuffix("/v1") + "/stats").json()["ok"] == 36 + 5


def test_generation_failures_are_counted_not_fatal(detector_file, tmp_path, servers):
    servers.append(srv := fault_server(tmp_path, "sim", "--role", "human", "--max-context", "78"))
    r = result(tmp_path, "role-adherence", "--base-url", srv.url, "--detector", str(detector_file),
               "--samples", "1", "--max-retries", "0")
    # probes of 78 words or more (system prompt included) do not fit the server's context: skipped, counted
    assert 0 < r["skipped"] < 36 and r["n"] == 36 - r["skipped"]
    assert r["skipped_reasons"] == {"no room to generate": r["skipped"]}


def test_judge_detector_against_a_real_local_server(tmp_path, servers):
    servers.append(srv := fault_server(tmp_path, "judge"))
    det = load_detector(f"judge:fault-teacher@{srv.url}")
    p = det.human_probability(["hello", "Certainly! Here is"])
    # this server answers "Answer 1: ..." to anything: no usable verdict, counted, never a crash
    assert np.isnan(p).all() and det.unjudged == 2 and not det.is_human(["x"]).any()


# -- termination ----------------------------------------------------------------------------------------
ENDING = [
    [("What is the capital of France?", "Paris is the capital of France."), ("Tell me a joke about cats.",
     "Why did the cat sit on the computer? To keep an eye on the mouse.")],
    [("How do I sort a list in Python?", "Use sorted(xs) or xs.sort()."), ("Explain gradient descent.",
     "It walks downhill on the loss surface.")],
]


def conversations_that_end(repeat: int = 1) -> list[Conversation]:
    convs = []
    for k, rounds in enumerate(ENDING * repeat):
        turns = [t for q, a in rounds for t in (Turn(HUMAN, q), Turn(GPT, a))]
        convs.append(Conversation(f"c{k}", turns))
    return convs


def marker_turn_probability(model, tokenizer, history: list[Turn]) -> float:
    """The independent computation: the history and the marker as the next human turn, encoded as the trainer
    encodes it; p(every token of that last turn) from one forward pass."""
    import torch

    row = Encoder(tokenizer, HUMAN, "dyadic").encode(Conversation("p", [*history, Turn(HUMAN, END_OF_CONVERSATION)]))
    ids, labels = row["input_ids"], row["labels"]
    start = max(i for i, lab in enumerate(labels) if lab == IGNORE_INDEX) + 1
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, start - 1:-1].double()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[start:])[:, None]).sum().exp().item()


def test_termination_of_a_model_that_learned_the_end_marker(socratic_that_ends, tiny_dir, tmp_path):
    """Two decision points per conversation (after each answer), the marker's probability at each well clear of the
    0.5 threshold (checked here, independently): every last answer is an end, no first answer is."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny import MARGIN

    model_dir, data = socratic_that_ends.path, socratic_that_ends.data
    tok, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir).eval()
    convs = list(iter_conversations(data))
    p = {(c.id, k): marker_turn_probability(model, tok, c.turns[:k]) for c in convs for k in (2, 4)}
    assert all(v >= MARGIN if k == 4 else v <= 1 - MARGIN for (_, k), v in p.items()), p
    trained = result(tmp_path, "termination", "--model", str(model_dir), "--data", str(data))
    assert (trained["n"], trained["positives"], trained["conversations"]) == (8, 4, 4)
    assert (trained["predicted"], trained["true_positives"]) == (4, 4)
    assert trained["precision"] == trained["recall"] == trained["f1"] == 1.0
    untrained = result(tmp_path, "termination", "--model", str(tiny_dir), "--data", str(data))
    assert untrained["predicted"] == 0 and untrained["f1"] == 0.0
    assert max(marker_turn_probability(AutoModelForCausalLM.from_pretrained(tiny_dir), tok, c.turns)
               for c in convs) < 1e-6  # the untrained model's margin


def test_termination_asks_about_the_marker_the_checkpoint_learned(tiny_dir, tmp_path):
    """A checkpoint of the original's ``<e>`` experiment is scored on ``<e>``, a model without a record on the
    project's marker."""
    import shutil

    from transformers import AutoTokenizer

    from model.dyadic import SOCRATIC_SYSTEM

    ckpt = Path(shutil.copytree(tiny_dir, tmp_path / "e-experiment"))
    (ckpt / "platolm_run.json").write_text(json.dumps({"template": "dyadic", "train_role": HUMAN,
                                                       "system_prompt": SOCRATIC_SYSTEM, "end_of_conversation": "<e>"}))
    assert (sim.learned_end_marker(tiny_dir), sim.learned_end_marker(ckpt)) == (END_OF_CONVERSATION, "<e>")
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    point = ("c", [Turn(HUMAN, "How do I sort a list?"), Turn(GPT, "Use sorted(xs).")], True)
    for marker in ("<e>", END_OF_CONVERSATION):
        [row] = sim.marker_rows(Encoder(tok, HUMAN, "dyadic"), [point], 10_000, "f", BadRecordSummary(), marker)
        scored = tok.decode([i for i, lab in zip(row["input_ids"], row["labels"]) if lab != IGNORE_INDEX])
        assert marker in scored and "sorted" not in scored
    data = tmp_path / "heldout.jsonl"
    write_jsonl(data, [Conversation("c", point[1]).to_sharegpt()])
    assert result(tmp_path, "termination", "--model", str(ckpt), "--data", str(data))["marker"] == "<e>"


def test_termination_gold_follows_the_segments_that_really_ended(tmp_path):
    convs = [Conversation("a_0", [Turn(HUMAN, "q"), Turn(GPT, "a")]),
             Conversation("a_1", [Turn(HUMAN, "q2"), Turn(GPT, "b")]),
             Conversation("b_0", [Turn(GPT, "hi"), Turn(HUMAN, "q"), Turn(GPT, "a"), Turn(HUMAN, "q3")])]
    data = tmp_path / "segments.jsonl"
    write_jsonl(data, (c.to_sharegpt() for c in convs))
    args = sim.build_parser().parse_args(["termination", "--model", "x", "--data", str(data)])
    gold = [(cid, g) for cid, _, g in sim.termination_points(args, BadRecordSummary())]
    assert gold == [("a_0", False), ("a_1", True), ("b_0", False), ("b_0", False)]
    assert [g for _, g in sim.decision_points(convs[0], False)] == [False]
    assert [g for _, g in sim.decision_points(convs[1], True)] == [True]
    assert [g for _, g in sim.decision_points(convs[2], True)] == [False, False]  # ends on a human turn


def test_termination_at_an_endpoint_that_never_ends(tmp_path, servers):
    servers.append(srv := fault_server(tmp_path, "sim", "--role", "human"))
    data = tmp_path / "heldout.jsonl"
    write_jsonl(data, (c.to_sharegpt() for c in conversations_that_end()))
    r = result(tmp_path, "termination", "--base-url", srv.url, "--data", str(data))
    assert r["n"] == 4 and r["predicted"] == 0 and r["recall"] == 0.0 and r["positives"] == 2


def test_cli_help_and_usage_errors():
    proc = run_cli("--help", in_process=False)
    assert all(c in proc.stdout for c in ("perplexity", "diversity", "human-likeness", "role-adherence", "termination"))
    proc = run_cli("diversity", "--n", "3", check=False)
    assert proc.returncode == 2 and "--model PATH" in proc.stderr
    proc = run_cli("role-adherence", "--model", "x", "--simulator-kind", "roleplay", check=False)
    assert proc.returncode == 2 and "needs an endpoint" in proc.stderr
