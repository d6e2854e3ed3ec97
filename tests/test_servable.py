"""Every checkpoint the trainer saves serves its trained role through an unmodified chat-template server.

A ``--template chat`` run saves a chat template derived from the base model's (model.role_template): it renders
real ShareGPT conversations with the trainer's text and ids, its generation prompt opens the trained role's
turn, a request without a system message gets the trained prompt, and any system message (an intent-carrying
one too) renders as training renders a record's own. transformers' pipeline and ``model.serve --render
chat-template`` (what vLLM does) use it; every saved checkpoint has a model card; the commands that load a
checkpoint follow its record (model.checkpoint).

Two template families are trained: SmolLM2's ChatML (its tokenizer on a tiny random model of its vocabulary) and
a Llama-3-style template written here into a copy of the tiny tokenizer; a Mistral-style one (no system message,
alternating roles) shows the fallbacks. The trained checkpoints are built once per session, each in seconds.
"""
from __future__ import annotations

import io
import itertools
import json
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from core.conversation import GPT, HUMAN, BadRecordSummary, Turn, iter_conversations, openai_messages
from model.checkpoint import CHAT_TEMPLATE_NAMES, MODEL_CARD, RUN_RECORD, model_card, read_checkpoint
from model.dyadic import ROLE_TEMPLATE_MARK, SYSTEM_PROMPTS, Encoder, Template, base_chat_template
from model.role_template import INTENT_PROBE, derive_role_template, install_role_template
from tests.conftest import PYTHON
from tests.test_chat_template import EDGE
from tests.servers import Server, fault_server, free_port
from tests.test_simulate import read, simulate

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
LLAMA3_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token }}{% else %}{{ raise_exception('Only user and assistant roles "
    "are supported!') }}{% endif %}{% endfor %}")
OPENING = {("llama3", HUMAN): "<|start_header_id|>user<|end_header_id|>\n\n",
           ("llama3", GPT): "<|start_header_id|>assistant<|end_header_id|>\n\n",
           ("smollm2", HUMAN): "<|im_start|>user\n", ("smollm2", GPT): "<|im_start|>assistant\n"}
FAMILIES_ROLES = list(itertools.product(["llama3", "smollm2"], [HUMAN, GPT]))
MODULES = {HUMAN: "model.sft_socratic", GPT: "model.sft_platolm"}


@pytest.fixture(scope="session")
def bases(tmp_path_factory, smollm2_dir) -> dict[str, Path]:
    """Tiny random Llamas: on a Llama-3-style template (the tiny tokenizer with its special tokens), and on
    SmolLM2's tokenizer (its vocabulary, its ChatML template)."""
    from transformers import AutoTokenizer

    from tests.tiny import make_llama, make_tokenizer

    root = tmp_path_factory.mktemp("bases")
    tok = make_tokenizer(root / "llama3")
    tok.add_special_tokens({"additional_special_tokens": LLAMA3_TOKENS})
    tok.chat_template = LLAMA3_TEMPLATE
    make_llama(root / "llama3", tokenizer=tok)
    make_llama(root / "smollm2", tokenizer=AutoTokenizer.from_pretrained(smollm2_dir))
    return {"llama3": root / "llama3", "smollm2": root / "smollm2"}


@pytest.fixture(scope="session")
def sharegpt() -> list:
    """The first real ShareGPT conversations (multi-round ones among them) and hand-made edge cases."""
    from core.assets import sharegpt_file

    real = list(itertools.islice(iter_conversations(sharegpt_file(), summary=BadRecordSummary(show_first=0)), 40))
    return real + EDGE


def train(role: str, model, out: Path, data: Path, *extra: str) -> Path:
    """A short in-process run of the role's trainer (two steps, a checkpoint after each)."""
    from model.train import main

    rc = main(role, SYSTEM_PROMPTS[role], [
        "--model", str(model), "--data", str(data), "--out", str(out),
        "--max-length", "512", "--max-steps", "2", "--save-steps", "1", "--per-device-train-batch-size", "4",
        "--eval-ratio", "0.2", "--use-cpu", "--report-to", "none", "--disable-tqdm", "true",
        "--data-cache-dir", str(data.parent / "cache"), *extra])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory, bases, sharegpt):
    """(family, role) -> the output directory of a --template chat run, trained on first use."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "sharegpt.json"
    data.write_text(json.dumps([c.to_sharegpt() for c in sharegpt[:24]]), encoding="utf-8")
    done: dict[tuple[str, str], Path] = {}

    def get(family: str, role: str) -> Path:
        if (family, role) not in done:
            done[family, role] = train(role, bases[family], root / f"{family}-{role}", data, "--template", "chat")
        return done[family, role]

    get.data = data
    return get


def tokenizer_of(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# -- the saved template renders as training did ------------------------------------------------------

@pytest.mark.parametrize("family,role", FAMILIES_ROLES)
def test_saved_template_renders_real_conversations_as_training_and_opens_the_trained_role(
        family, role, bases, trained, sharegpt):
    out = trained(family, role)
    saved, base = tokenizer_of(out), tokenizer_of(bases[family])
    record = json.loads((out / RUN_RECORD).read_text())
    assert record["template"] == "chat" and record["chat_template"] == CHAT_TEMPLATE_NAMES[role]
    assert record["system_prompt"] == SYSTEM_PROMPTS[role]
    assert base_chat_template(saved.chat_template) == base.chat_template != saved.chat_template
    encoder = Encoder(base, role, "chat", max_length=10**9)  # the trainer's text and ids, uncut
    chat = Template(base, "chat")
    checked = 0
    for conv in sharegpt:
        if not any(t.role == role for t in conv.turns):
            continue  # the trainer drops it too
        own = conv.to_messages()["messages"]  # the record's own system message, when it has one
        text = saved.apply_chat_template(own, tokenize=False)
        assert text == encoder.render(conv).text, conv.id
        assert saved(text, add_special_tokens=False).input_ids == encoder.encode(conv)["input_ids"], conv.id
        system = conv.system if conv.system is not None else SYSTEM_PROMPTS[role]
        prompt = saved.apply_chat_template(own, tokenize=False, add_generation_prompt=True)
        assert prompt == chat.prompt_for(conv.turns, role, system) and prompt.endswith(OPENING[family, role])
        intent = SYSTEM_PROMPTS[role] + INTENT_PROBE  # longer than the role's prompt, as issue 20's will be
        with_intent = [{"role": "system", "content": intent}, *openai_messages(conv.turns)]
        assert saved.apply_chat_template(with_intent, tokenize=False) == chat.render(conv.turns, intent).text
        checked += 1
    assert checked >= 30
    # no system message: the trained prompt, not the base model's default
    ask = [Turn(HUMAN, "How do I sort a list in Python?")]
    plain = openai_messages(ask)
    assert saved.apply_chat_template(plain, tokenize=False) == chat.render(ask, SYSTEM_PROMPTS[role]).text
    assert SYSTEM_PROMPTS[role].strip() in saved.apply_chat_template(plain, tokenize=False)


def test_a_request_ending_in_a_user_message_or_holding_only_a_system_message_opens_a_user_turn(trained):
    saved = tokenizer_of(trained("llama3", HUMAN))
    opening = OPENING["llama3", HUMAN]
    for messages in ([{"role": "user", "content": "Hi!"}], [{"role": "system", "content": "Be curious."}]):
        assert saved.apply_chat_template(messages, tokenize=False, add_generation_prompt=True).endswith(opening)


def test_fallbacks_where_the_base_refuses_a_system_message_or_two_user_turns_in_a_row(tiny_tokenizer):
    from copy import deepcopy

    tok = deepcopy(tiny_tokenizer)
    tok.chat_template = MISTRAL_TEMPLATE
    notes = install_role_template(tok, HUMAN, SYSTEM_PROMPTS[HUMAN])  # passes its probe check
    assert len(notes) == 2 and "no system message" in notes[0] and "empty assistant message" in notes[1]
    ask = [{"role": "user", "content": "Hi"}]
    prompt = tok.apply_chat_template(ask, tokenize=False, add_generation_prompt=True)
    assert prompt == "<s>[INST] Hi [/INST]</s>[INST] "  # an empty answer, then the user's turn opens
    system = [{"role": "system", "content": "Be terse."}, *ask]
    assert tok.apply_chat_template(system, tokenize=False) == tok.apply_chat_template(ask, tokenize=False)


def test_a_base_template_that_cannot_open_a_user_turn_is_kept_and_the_card_says_so(tiny_tokenizer):
    from copy import deepcopy

    from model.train import DataArguments, prepare_chat_template

    tok = deepcopy(tiny_tokenizer)
    tok.chat_template = ("{% for m in messages %}{% if loop.last and m['role'] == 'user' %}{{ raise_exception("
                         "'the assistant speaks last') }}{% endif %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ValueError, match="cannot open a user turn"):
        derive_role_template(tok, HUMAN, SYSTEM_PROMPTS[HUMAN])
    said = []
    name, notes = prepare_chat_template(tok, HUMAN, SYSTEM_PROMPTS[HUMAN], DataArguments(template="chat"), said.append)
    assert name is None and said[0].startswith("warning: no chat template that serves the trained role fits")
    card = model_card({"train_role": HUMAN, "template": "chat", "system_prompt": "S", "chat_template": None,
                       "chat_template_notes": notes}, "runs/x")
    assert "base model's own, unchanged" in card and notes[0] in card and "vllm serve" not in card


def test_base_without_a_chat_template_is_refused_before_any_training_step(tiny_tokenizer, tmp_path, capsys):
    from copy import deepcopy

    from model.train import main

    tok = deepcopy(tiny_tokenizer)
    tok.chat_template = None
    tok.save_pretrained(tmp_path / "plain")
    rc = main(HUMAN, SYSTEM_PROMPTS[HUMAN], ["--model", str(tmp_path / "plain"), "--data",
                                             str(tmp_path / "none.json"), "--out", str(tmp_path / "out"),
                                             "--template", "chat", "--use-cpu", "--report-to", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == [f"error: --template chat: {tmp_path / 'plain'} has no chat template; use --template dyadic"]
    assert not (tmp_path / "out").exists()


# -- ordinary clients ---------------------------------------------------------------------------------

def test_pipeline_on_a_chat_socratic_builds_a_prompt_that_opens_a_user_turn(trained):
    from transformers import pipeline

    out = trained("llama3", HUMAN)
    pipe = pipeline("text-generation", model=str(out), device="cpu")
    prompts, generate = [], pipe.model.generate

    def recording(*args, **kwargs):
        prompts.append(kwargs["input_ids"][0].tolist())
        return generate(*args, **kwargs)

    pipe.model.generate = recording
    turns = [Turn(HUMAN, "How do I sort a list in Python?"), Turn(GPT, "Use sorted(xs) or xs.sort().")]
    expected = Template(pipe.tokenizer, "chat").prompt_for(turns, HUMAN, SYSTEM_PROMPTS[HUMAN])
    assert expected.endswith(OPENING["llama3", HUMAN])
    for kwargs in ({}, {"continue_final_message": False}):  # the pipeline's default (a prefill), vLLM's
        reply = pipe(openai_messages(turns), max_new_tokens=3, do_sample=False, return_full_text=False, **kwargs)
        assert isinstance(reply[0]["generated_text"], str)
        assert prompts[-1] == pipe.tokenizer(expected, add_special_tokens=False).input_ids


def test_model_serve_chat_template_mode_builds_the_prompt_of_role_human(trained):
    from model.generate import Generator
    from model.serve import APIError, ChatRequest, request_prompt

    gen = Generator(str(trained("llama3", HUMAN)), device="cpu")
    for messages in ([{"role": "system", "content": SYSTEM_PROMPTS[HUMAN]}],
                     [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
                     [{"role": "system", "content": SYSTEM_PROMPTS[HUMAN] + INTENT_PROBE},
                      {"role": "user", "content": "Hi"}]):
        req = ChatRequest(messages=messages, truncate_prompt_tokens=64)
        assert request_prompt(gen, HUMAN, req, "chat-template") == request_prompt(gen, HUMAN, req)
    with pytest.raises(APIError, match="chat template refuses"):  # transformers refuses an empty conversation
        request_prompt(gen, HUMAN, ChatRequest(messages=[]), "chat-template")


@pytest.mark.slow
def test_data_simulate_against_the_served_chat_template_gives_the_sessions_of_role_human(trained, tmp_path,
                                                                                         servers):  # noqa: F811
    out = trained("llama3", HUMAN)
    servers.append(teacher := fault_server(tmp_path, "teacher", "--answer-words", "6"))
    started = {}
    for name, extra in (("chat-template", ["--render", "chat-template"]), ("role", ["--role", HUMAN])):
        port = free_port()
        servers.append(srv := Server([PYTHON, "-m", "model.serve", "--model", str(out), "--port", str(port),
                                      "--device", "cpu", *extra], tmp_path / f"{name}.log"))
        started[name] = (srv, f"http://127.0.0.1:{port}/v1")
    sessions = {}
    for name, (srv, url) in started.items():
        srv.wait_ready(url)
        health = httpx.get(url.removesuffix("/v1") + "/health").json()
        assert health["role"] == HUMAN and health["render"] == name  # the role the checkpoint records
        simulate(tmp_path, "--simulator", url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
                 "--num-sessions", "3", "--concurrency", "1", "--simulator-temperature", "0", "--max-new-tokens",
                 "8", "--max-context", "400", "--max-turns", "3", "--out", str(tmp_path / f"{name}.jsonl"))
        sessions[name] = {r["id"]: r["conversations"] for r in read(tmp_path / f"{name}.jsonl")}
    assert len(sessions["role"]) == 3 and sessions["chat-template"] == sessions["role"]
    assert all(len(c) >= 2 for c in sessions["role"].values())


# -- model cards -------------------------------------------------------------------------------------

@pytest.mark.parametrize("family,role", FAMILIES_ROLES)
def test_every_saved_checkpoint_has_a_model_card(family, role, trained):
    out = trained(family, role)
    folders = [out, *sorted(out.glob("checkpoint-*"))]
    assert len(folders) == 3
    for folder in folders:
        card = (folder / MODEL_CARD).read_text()
        record = json.loads((folder / RUN_RECORD).read_text())
        assert record["train_role"] == role and record["steps"] == (2 if folder == out else int(folder.name[11:]))
        assert f"# {'Socratic' if role == HUMAN else 'PlatoLM'}" in card and f"role: `{role}`" in card
        assert SYSTEM_PROMPTS[role].strip() in card and f"vllm serve {folder}" in card
        assert ("opens a user turn" if role == HUMAN else "opens an assistant turn") in card
        assert f"steps: {record['steps']}" in card and str(trained.data) in card
    assert "held-out loss" in (out / MODEL_CARD).read_text()


# -- commands follow the checkpoint ------------------------------------------------------------------

@pytest.mark.parametrize("role", [HUMAN, GPT])
def test_chat_clis_without_template_generate_what_they_generate_with_it(role, trained, monkeypatch, capsys):
    from model.chat_cli import main
    from model.generate import Generator

    out = trained("llama3", role)
    assert Generator(str(out), device="cpu").template.template == "chat"
    capsys.readouterr()

    def chat(*extra: str) -> tuple[str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO("Paris is the capital of France.\nThanks!\n"))
        assert main(role, SYSTEM_PROMPTS[role], "chat", ["--model", str(out), "--temperature", "0",
                                                         "--max-new-tokens", "8", "--device", "cpu", *extra]) == 0
        captured = capsys.readouterr()
        return captured.out, captured.err

    followed, _ = chat()
    assert followed.strip() and followed == chat("--template", "chat")[0]
    assert (f"warning: --template dyadic contradicts {out / RUN_RECORD} (trained with --template chat)"
            in chat("--template", "dyadic")[1])


def test_eval_simulator_without_template_generates_and_scores_as_with_it(trained, tmp_path):
    from eval.simulator import main

    out = trained("llama3", HUMAN)
    results = {}
    for name, extra in (("followed", []), ("given", ["--template", "chat"])):
        save = tmp_path / f"{name}.jsonl"
        assert main(["diversity", "--model", str(out), "--n", "3", "--max-new-tokens", "6", "--temperature", "0",
                     "--device", "cpu", "--save", str(save), "--out", str(tmp_path / f"{name}-div.json"), *extra]) == 0
        assert main(["perplexity", "--model", str(out), "--data", str(trained.data), "--limit", "4",
                     "--device", "cpu", "--out", str(tmp_path / f"{name}-ppl.json"), *extra]) == 0
        results[name] = (save.read_text(), json.loads((tmp_path / f"{name}-ppl.json").read_text()))
    assert results["followed"][0] == results["given"][0]
    assert results["followed"][1]["nll"] == results["given"][1]["nll"] and results["followed"][1]["template"] == "chat"


def test_the_trainer_continues_and_resumes_with_the_recorded_template(bases, trained, tmp_path, capsys):
    socratic = trained("llama3", HUMAN)
    # continue: PlatoLM from the chat Socratic, no --template: chat, on the base template (not wrapped twice)
    platolm = train(GPT, socratic, tmp_path / "platolm", trained.data)
    saved = tokenizer_of(platolm).chat_template
    assert read_checkpoint(platolm).template == "chat" and read_checkpoint(platolm).chat_template_role == GPT
    assert saved.count(ROLE_TEMPLATE_MARK) == 1 and base_chat_template(saved) == LLAMA3_TEMPLATE
    # resume: a copy of the Socratic run, two more steps, no --template
    resumed = tmp_path / "resumed"
    shutil.copytree(socratic, resumed)
    capsys.readouterr()
    train(HUMAN, bases["llama3"], resumed, trained.data, "--max-steps", "4")
    assert f"resuming from {resumed / 'checkpoint-2'}" in capsys.readouterr().err
    record = json.loads((resumed / RUN_RECORD).read_text())
    assert record["template"] == "chat" and record["steps"] == 4
