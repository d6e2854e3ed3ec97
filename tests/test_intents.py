"""Intents through the pipeline: written (``data.prepare intents``), trained on (``--condition intent``), rendered
(model.dyadic, the saved chat template, model.serve) and measured (``eval.simulator perplexity --condition``,
``intent-adherence``, ``goal-leakage``).

Real ShareGPT records; every endpoint is a live local process (tests/fault_teacher.py): one writes intents, one
answers, one simulator ignores its intent, one states it as every question, one replies with nothing.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from core.conversation import GPT, HUMAN, Conversation, parse_record
from core.endpoint import Reply
from core.engine import JobFailed
from data.intent_writer import usable_reply
from model.dyadic import SOCRATIC_SYSTEM, Encoder, Template, intent_system
from tests.conftest import PYTHON, ROOT, env_offline
from tests.test_simulate import Server

N_RECORDS, N_INTENTS = 16, 100


def start_servers(tmp: Path, **roles: list[str]) -> dict[str, Server]:
    """fault_teacher processes started together, then each waited for."""
    started = {name: Server([PYTHON, "-m", "tests.fault_teacher", "--port-file", str(tmp / f"{name}.port"), *args],
                            tmp / f"{name}.log") for name, args in roles.items()}
    for name, srv in started.items():
        deadline = time.monotonic() + 60
        while not (tmp / f"{name}.port").exists():
            assert srv.proc.poll() is None and time.monotonic() < deadline, srv.log.read_text()
            time.sleep(0.05)
        srv.wait_ready(f"http://127.0.0.1:{(tmp / f'{name}.port').read_text()}/v1")
    return started


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("intent-stubs")
    started = start_servers(tmp, writer=["--latency", "0.2"], teacher=[], ignore=["--role", "human"],
                            copy=["--role", "human", "--copy-intent"], judge=["--role", "judge", "--unsure-every", "4"],
                            empty=["--role", "human", "--misbehave", "empty"],
                            ender=["--role", "human", "--end-after", "1"])
    yield {name: srv.url for name, srv in started.items()}
    for srv in started.values():
        srv.stop()


@pytest.fixture(scope="module")
def sharegpt(tmp_path_factory) -> Path:
    from core.assets import sharegpt_file
    from scripts.take_sharegpt import take_sharegpt

    path = tmp_path_factory.mktemp("sharegpt") / "raw.json"
    take_sharegpt(sharegpt_file(), N_RECORDS, 1500, path)
    return path


def prepare(*args) -> int:
    from data.prepare import main

    return main(["intents", "--model", "writer", *map(str, args)])


def read(path: Path) -> list[dict]:
    text = path.read_text()
    return json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x]


@pytest.fixture(scope="module")
def intents(stubs, sharegpt, tmp_path_factory) -> Path:
    """The ShareGPT records with an intent each, written by the stub (in-process, once)."""
    out = tmp_path_factory.mktemp("intents") / "intents.json"
    assert prepare("--data", sharegpt, "--out", out, "--base-url", stubs["teacher"]) == 0
    return out


def test_prepare_intents_round_trips_real_records(intents, sharegpt, stubs, capsys, tmp_path):
    recs, raw = read(intents), {r["id"]: r for r in read(sharegpt)}
    assert 10 <= len(recs) <= N_RECORDS
    for rec in recs:  # the record as it was, plus its intent
        assert rec["intent"].startswith("Answer 1:") and "\n" not in rec["intent"]
        assert rec["conversations"] == raw[rec["id"]]["conversations"]
    log = read(intents.with_name("intents.log.jsonl"))
    assert sorted(r["id"] for r in log) == sorted(r["id"] for r in recs)
    # a rerun asks for nothing and rewrites the same output; the report gives the leakage
    assert prepare("--data", sharegpt, "--out", intents, "--base-url", stubs["teacher"], "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["written_now"] == 0 and report["intents"] == len(recs) and read(intents) == recs
    words = report["leakage"]["content_words"]
    assert words["n"] == len(recs) and sum(words["distribution"].values()) == len(recs) and words["mean"] < 0.2


def test_an_empty_reply_is_a_counted_failure_retried_by_the_next_run(sharegpt, stubs, capsys, tmp_path):
    out = tmp_path / "intents.jsonl"
    empty = ["--base-url", stubs["empty"], "--max-retries", "0"]
    assert prepare("--data", sharegpt, "--out", out, *empty, "--n", "3") == 1
    assert "error: 3 intents failed" in capsys.readouterr().err
    failed = read(tmp_path / "intents.log.failed.jsonl")
    assert len(failed) == 3 and all("no text" in f["reason"] for f in failed) and read(out) == []
    assert prepare("--data", sharegpt, "--out", out, "--base-url", stubs["teacher"], "--n", "3") == 0
    assert len(read(out)) == 3 and all(r["intent"] for r in read(out))
    assert not (tmp_path / "intents.log.failed.jsonl").exists()


@pytest.mark.parametrize("text, finish, kept", [
    ("Intent: You want a cake recipe. You also want", "length", "You want a cake recipe."),
    ("\u201cYou want a cake recipe without eggs", "length", "You want a cake recipe without eggs"),
    ("\ufffd.\ufffd[] ickai t Wh", "length", "\ufffd.\ufffd[] ickai t Wh"),  # no sentence with a word ended
    ("You want a cake recipe. You also want", "stop", "You want a cake recipe. You also want"),
])
def test_a_reply_cut_at_the_limit_keeps_its_complete_sentences(text, finish, kept):
    assert usable_reply(Reply(text, finish, None, None), "intent") == kept


@pytest.mark.parametrize("text", ["", " \u201c. ? \u201d", "Intent: ..."])
def test_a_reply_without_a_word_is_a_counted_failure(text):
    with pytest.raises(JobFailed, match="holds no intent"):
        usable_reply(Reply(text, "length", None, None), "intent")


def test_a_killed_run_resumes_and_writes_each_intent_once(sharegpt, stubs, tmp_path):
    out, log = tmp_path / "intents.json", tmp_path / "intents.log.jsonl"
    cmd = [PYTHON, "-m", "data.prepare", "intents", "--data", str(sharegpt), "--out", str(out), "--base-url",
           stubs["writer"], "--model", "writer", "--concurrency", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env_offline(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count("\n") >= 3):  # three intents written: kill it
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL and not out.exists()
    first = log.read_text().count("\n")
    done = subprocess.run(cmd, cwd=ROOT, env=env_offline(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming: {first} intents already written" in done.stderr
    ids = [r["id"] for r in read(log)]
    assert len(ids) == len(set(ids)) == len(read(out))


# -- training and rendering ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("template", ["dyadic", "chat"])
def test_a_model_trained_with_intents_renders_them_alike_everywhere(template, intents, tiny_dir, tmp_path):
    from transformers import AutoTokenizer

    from model.generate import Generator
    from model.serve import ChatRequest, Message, request_prompt
    from model.train import DataArguments, encode_records, load_records, main

    recs = read(intents)
    for rec in recs[::2]:  # half of them free: the plain prompt
        del rec["intent"]
    data = tmp_path / "train.json"
    data.write_text(json.dumps(recs))
    out, cache = tmp_path / "out", str(tmp_path / "cache")
    assert main(HUMAN, SOCRATIC_SYSTEM, ["--model_name_or_path", str(tiny_dir), "--data_path", str(data),
                                         "--output_dir", str(out), "--template", template, "--model_max_length", "512",
                                         "--max_steps", "1", "--use_cpu", "--report_to", "none", "--condition",
                                         "intent", "--disable_tqdm", "true", "--data_cache_dir", cache]) == 0
    record = json.loads((out / "platolm_run.json").read_text())
    assert "conditioned on intents (`--condition intent`)" in (out / "README.md").read_text()

    tok = AutoTokenizer.from_pretrained(out)
    # training: the trainer's own encoding is model.dyadic's with intent_system (or the plain prompt)
    data_args = DataArguments(data_path=str(data), data_cache_dir=cache, template=template, model_max_length=512,
                              condition="intent")
    encoded, _ = encode_records(*load_records(data_args), tok, HUMAN, SOCRATIC_SYSTEM, data_args)
    encoder, with_intent = Encoder(tok, HUMAN, template, 512), []
    for rec, row in zip(recs, encoded):
        if row["bad"]:  # too long for 512 tokens: the trainer skipped it too
            continue
        conv = parse_record(rec, 0)
        conv.system = intent_system(rec.get("intent"))
        assert row["input_ids"] == encoder.encode(conv)["input_ids"] and row["intent"] == ("intent" in rec)
        with_intent += [rec] if "intent" in rec else []
    assert record["condition"] == "intent" and record["conditioned_conversations"]["train"] == len(with_intent) > 2
    # a request whose system message is intent_system(...): the same prompt through every way of serving it
    shortest = min((r for r in with_intent if len(r["conversations"]) > 2), key=lambda r: len(json.dumps(r)))
    conv = parse_record(shortest, 0)
    history, system = conv.turns[:2], intent_system(shortest["intent"])
    prompt = Template(tok, template).prompt_for(history, HUMAN, system)
    assert encoder.render(Conversation("x", conv.turns, system)).text.startswith(prompt)
    want = tok(prompt, add_special_tokens=template == "dyadic")["input_ids"]
    messages = Conversation("x", history, system).to_messages()["messages"]
    assert tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False) == want
    generator = Generator(str(out), device="cpu", max_context=1024)
    request = ChatRequest(messages=[Message(**m) for m in messages])
    for render in ("role", "chat-template"):
        assert request_prompt(generator, HUMAN, request, render) == want, render


# -- measuring ----------------------------------------------------------------------------------------------
HANDWRITTEN = [  # what each person wants, then what they asked
    ("You want a Python function that converts temperatures from Celsius to Fahrenheit.",
     ["Can you write a Python function that converts Celsius to Fahrenheit?", "Can it convert Fahrenheit back too?"]),
    ("You want to write a sincere apology to your sister after an argument at a family dinner.",
     ["Help me write a sincere apology to my sister, we argued at a family dinner.", "Make it shorter please."]),
    ("You want to plan a cheap three-day trip to Lisbon in spring, with good food and museums.",
     ["I want to plan a cheap three-day trip to Lisbon in spring.", "Which museums, and where is good cheap food?"]),
    ("You want to find out why the leaves of your tomato plants are turning yellow.",
     ["Why are the leaves of my tomato plants turning yellow?", "Should I add fertilizer to the tomato plants?"]),
    ("You want to improve the summary of your resume for a data analyst job.",
     ["Can you improve my resume summary? I am applying for a data analyst job.", "Make it sound more confident."]),
]


def handwritten(tmp_path: Path, with_intents: bool = True) -> Path:
    records = [{"id": f"h{i}", **({"intent": intent} if with_intents else {}),
                "conversations": [{"from": role, "value": text} for q in asked
                                  for role, text in ((HUMAN, q), (GPT, "Sure, here it is."))]}
               for i, (intent, asked) in enumerate(HANDWRITTEN)]
    if with_intents:
        records.append({"id": "free", "conversations": [{"from": HUMAN, "value": "hi"}, {"from": GPT, "value": "hey"}]})
    path = tmp_path / ("heldout.jsonl" if with_intents else "plain.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_windows_are_cut_on_whole_turns_that_fit_with_the_intent(smollm2_tokenizer, tmp_path):
    from core.formats import iter_input
    from eval.simulator import intent_pair

    from eval.simulator import token_count

    encoder = Encoder(smollm2_tokenizer, HUMAN, "chat", 10**6)
    for conv in list(iter_input(handwritten(tmp_path)))[:5]:
        given, without = intent_pair(encoder, conv, "intent", None, 100, "f")  # room for a round or less
        n = given["turns"]
        assert n == without["turns"] and 1 <= n < len(conv.turns)
        assert len(without["input_ids"]) < len(given["input_ids"])
        system = intent_system(conv.extra["intent"])
        assert len(given["input_ids"]) <= 100 < token_count(encoder, conv.turns[:n + 1], system)  # whole turns
        scored = [[x for x in row["labels"] if x != -100] for row in (given, without)]
        asked = [smollm2_tokenizer(t.text + "<|im_end|>")["input_ids"] for t in conv.turns[:n] if t.role == HUMAN]
        assert scored[0] == scored[1] == [x for ids in asked for x in ids]


@pytest.mark.slow
def test_an_untrained_model_is_less_perplexed_given_the_intent(tmp_path, smollm2_dir, capsys, monkeypatch):
    import functools

    from eval import simulator

    monkeypatch.setattr(simulator, "load_scorer", functools.cache(simulator.load_scorer))  # one load, two runs
    assert simulator.main(["perplexity", "--model", str(smollm2_dir), "--data", str(handwritten(tmp_path)),
                           "--condition", "intent", "--template", "chat", "--json"]) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["conversations"] == 5 and given["skipped_reasons"] == {"no intent": 1} and given["truncated"] == 0
    assert given["nll_difference"] == pytest.approx(given["nll_without"] - given["nll"], abs=1e-5)
    assert given["nll_without"] - given["nll"] > 0.3  # the intent names what the person asks: far less surprise
    # without the intent: the plain perplexity of the same conversations, the same tokens
    assert simulator.main(["perplexity", "--model", str(smollm2_dir), "--data", str(handwritten(tmp_path, False)),
                           "--template", "chat", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["tokens"] == given["tokens"] and plain["nll"] == pytest.approx(given["nll_without"], abs=1e-4)


@pytest.fixture(scope="module")
def many_intents(tmp_path_factory) -> Path:
    """N_INTENTS distinct intents (real ShareGPT openings, as a person's goal), without conversations."""
    from core.assets import sharegpt_file
    from core.conversation import iter_conversations

    seen, recs = set(), []
    for conv in iter_conversations(sharegpt_file()):
        words = conv.turns[0].text.split()[:12]
        if conv.turns[0].role == HUMAN and len(words) >= 6 and " ".join(words) not in seen:
            seen.add(" ".join(words))
            recs.append({"id": conv.id, "intent": "You want to ask: " + " ".join(words)})
        if len(recs) == N_INTENTS:
            break
    path = tmp_path_factory.mktemp("many") / "intents.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def measure(*args) -> dict:
    import contextlib
    import io

    from eval.simulator import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*map(str, args), "--json"]) == 0
    return json.loads(out.getvalue())


@pytest.mark.slow
def test_intent_adherence_discriminates_and_leakage_sees_a_copy(many_intents, stubs, tmp_path):
    common = ["--intents", many_intents, "--teacher-base-url", stubs["teacher"], "--teacher-model", "t",
              "--candidates", "5", "--max-turns", "2", "--concurrency", "32"]
    ignoring = measure("intent-adherence", "--base-url", stubs["ignore"], *common, "--save", tmp_path / "ignore.jsonl")
    copying = measure("intent-adherence", "--base-url", stubs["copy"], *common)
    assert ignoring["n"] == copying["n"] == N_INTENTS and ignoring["intent_chance"] == 0.2
    # ignoring: each hit has probability 1/5 over the random distractors, so the share of 100 has sd <= 0.045
    assert abs(ignoring["intent_accuracy"] - 0.2) < 0.15 and copying["intent_accuracy"] >= 0.95
    assert copying["goal_leakage"] > 0.95 and ignoring["goal_leakage"] < 0.2  # their first turns
    sessions = read(tmp_path / "ignore.jsonl")  # the sessions: the intent kept, never sent to the teacher
    assert len(sessions) == N_INTENTS and all(s["intent"] and s["num_of_rounds"] == 2 for s in sessions)
    # a judge's 1-10: a reply without a rating is an error, counted, never scored; a rerun asks nothing again
    judged = [measure("intent-adherence", "--data", tmp_path / "ignore.jsonl", "--n", "12", "--judge-model", "j",
                      "--judge-base-url", stubs["judge"], "--out", tmp_path / "judged.json") for _ in range(2)]
    assert judged[0]["judge_num_judged"] == 12 and judged[0]["judge_num_errors"] == 3  # every 4th reply
    assert 1 <= judged[0]["intent_judge"] <= 10 and judged[1] == judged[0]
    assert len(read(tmp_path / "judged.judgments.jsonl")) == 12
    # a simulator with a learned end that stops after its first question: every session ended in round 1
    ended = measure("intent-adherence", "--base-url", stubs["ender"], *common, "--n", "10", "--end-rule", "learned")
    assert ended["first_round_end"] == 1.0 and "first_round_end" not in ignoring
    leaked = measure("goal-leakage", "--base-url", stubs["copy"], "--intents", many_intents, "--n", "20")
    assert leaked["goal_leakage"] > 0.95 and leaked["goal_leakage_n"] == 20
    assert measure("goal-leakage", "--data", tmp_path / "ignore.jsonl")["goal_leakage"] < 0.2
