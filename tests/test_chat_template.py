"""The dyadic format as a chat template: what a server renders (apply_chat_template, then tokenised without
special tokens, as vLLM does) equals model.dyadic's rendering and token ids, for both roles.

Real conversations (the first ShareGPT records, multi-round ones among them) and hand-made edge cases, on two
tokenizers: the tiny LLaMA-style one (adds <s> itself, so the template starts with it) and SmolLM2's (adds
nothing). A checkpoint saved by the trainer carries its role's template.
"""
from __future__ import annotations

import itertools
import json

import pytest

from core.conversation import GPT, HUMAN, BadRecordSummary, Conversation, Turn, iter_conversations
from model.dyadic import (CHAT_TEMPLATES, PLATOLM_CHAT_TEMPLATE, SOCRATIC_CHAT_TEMPLATE, SYSTEM_PROMPTS, Template,
                          default_system, dyadic_chat_template, install_chat_template, tokenizer_adds_bos)

EDGE = [
    Conversation("emoji-cjk", [Turn(HUMAN, "Ça va? 😀🧪 你好，世界！ 東京タワー"), Turn(GPT, "👍 はい。")]),
    Conversation("code", [Turn(HUMAN, "Fix:\n```python\ndef f(x):\n\treturn x**2  # {{ not jinja }} {% raw %}\n```"),
                          Turn(GPT, "Use `x ** 2`;\n  indentation   kept.  "), Turn(HUMAN, "  leading and trailing  ")]),
    Conversation("literal-specials", [Turn(HUMAN, "What do <s> and </s> mean? Human: Assistant: <s>"),
                                      Turn(GPT, "Sequence markers: <s>…</s>.")]),
    Conversation("own-system", [Turn(HUMAN, "hi"), Turn(GPT, "hello")], system="Be terse.\n\n"),
    Conversation("empty-system", [Turn(HUMAN, "hi"), Turn(GPT, "hello")], system=""),
    Conversation("starts-with-gpt", [Turn(GPT, "Welcome!"), Turn(HUMAN, "Thanks."), Turn(GPT, "Sure.")]),
]


@pytest.fixture(scope="module")
def conversations():
    from core.assets import sharegpt_file

    real = list(itertools.islice(iter_conversations(sharegpt_file(), summary=BadRecordSummary(show_first=0)), 40))
    assert sum(len(c.turns) >= 6 for c in real) >= 10  # multi-round conversations are among them
    return real + EDGE


@pytest.fixture(params=["tiny", "smollm2"])
def tokenizer(request):
    """A fresh copy (templates are written into it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(request.getfixturevalue(f"{request.param}_dir"))


def messages_of(turns, system=None) -> list[dict]:
    conv = Conversation("m", list(turns), system)
    return conv.to_messages()["messages"]


def served_ids(tokenizer, messages, **kwargs) -> tuple[str, list[int]]:
    """What a server does: render the template, tokenise without adding special tokens."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    return text, tokenizer(text, add_special_tokens=False).input_ids


def test_named_templates_and_the_bos_rule(tiny_tokenizer, smollm2_tokenizer):
    assert CHAT_TEMPLATES == {"platolm": PLATOLM_CHAT_TEMPLATE, "socratic": SOCRATIC_CHAT_TEMPLATE}
    assert dyadic_chat_template(GPT) == PLATOLM_CHAT_TEMPLATE and dyadic_chat_template(HUMAN) == SOCRATIC_CHAT_TEMPLATE
    assert json.dumps(SYSTEM_PROMPTS[HUMAN]) in SOCRATIC_CHAT_TEMPLATE
    assert json.dumps(SYSTEM_PROMPTS[GPT]) in PLATOLM_CHAT_TEMPLATE
    assert tokenizer_adds_bos(tiny_tokenizer) and not tokenizer_adds_bos(smollm2_tokenizer)
    assert dyadic_chat_template(HUMAN, tokenizer=smollm2_tokenizer) != SOCRATIC_CHAT_TEMPLATE  # no leading BOS
    with pytest.raises(ValueError, match="role"):
        dyadic_chat_template("system")


@pytest.mark.parametrize("role", [HUMAN, GPT])
def test_whole_conversations_render_as_the_dyadic_template(tokenizer, role, conversations):
    install_chat_template(tokenizer, role)
    lead = tokenizer.bos_token if tokenizer_adds_bos(tokenizer) else ""
    dyadic = Template(tokenizer)
    for conv in conversations:
        messages = conv.to_messages()["messages"]
        text, ids = served_ids(tokenizer, messages)
        expected = dyadic.render(conv.turns, default_system(role, conv)).text
        assert text == lead + expected, conv.id
        assert ids == tokenizer(expected).input_ids, conv.id
        assert tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False) == ids


@pytest.mark.parametrize("role", [HUMAN, GPT])
def test_generation_prompt_opens_the_roles_turn(tokenizer, role, conversations):
    """Socratic's prompt opens a human turn after every answer; PlatoLM's an assistant turn after every question."""
    install_chat_template(tokenizer, role)
    dyadic = Template(tokenizer)
    follows = GPT if role == HUMAN else HUMAN
    checked = 0
    for conv in conversations:
        system = default_system(role, conv)
        for i, turn in enumerate(conv.turns):
            if turn.role != follows:
                continue
            history = conv.turns[:i + 1]
            _, ids = served_ids(tokenizer, messages_of(history, conv.system), add_generation_prompt=True)
            assert ids == tokenizer(dyadic.prompt_for(history, role, system)).input_ids, (conv.id, i)
            checked += 1
    assert checked > 100


def test_socratic_opens_a_conversation_from_a_system_message_or_nothing(tokenizer):
    """The free mode's first question: a request with only a system message, or with no message at all."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    install_chat_template(tokenizer, HUMAN)
    lead = tokenizer.bos_token if tokenizer_adds_bos(tokenizer) else ""
    dyadic = Template(tokenizer)
    text, ids = served_ids(tokenizer, [{"role": "system", "content": SYSTEM_PROMPTS[HUMAN]}],
                           add_generation_prompt=True)
    assert text == lead + SYSTEM_PROMPTS[HUMAN] + "Human: " + tokenizer.bos_token
    assert ids == tokenizer(dyadic.prompt_for([], HUMAN, SYSTEM_PROMPTS[HUMAN])).input_ids
    # transformers refuses an empty message list before rendering; the template itself renders it (servers that
    # pass one through get the default system prompt)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    empty = env.from_string(tokenizer.chat_template).render(messages=[], add_generation_prompt=True,
                                                            bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token)
    assert empty == text


def test_other_roles_are_refused(tokenizer):
    install_chat_template(tokenizer, GPT)
    with pytest.raises(Exception, match="user and assistant messages"):
        tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "tool", "content": "x"}],
                                      tokenize=False)
    with pytest.raises(Exception, match="user and assistant messages"):  # a system message after the first
        tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "system", "content": "x"}],
                                      tokenize=False)


# -- the trainer writes it into every tokenizer it saves ----------------------------------------------

def train_in_process(role: str, tiny_dir, data, out, *extra: str) -> dict:
    from model.train import main

    system = SYSTEM_PROMPTS[role]
    rc = main(role, system, ["--model", str(tiny_dir), "--data", str(data), "--out", str(out),
                             "--max-length", "256", "--max-steps", "2", "--save-steps", "1",
                             "--per-device-train-batch-size", "2", "--use-cpu", "--report-to", "none",
                             "--data-cache-dir", str(out.parent / "cache"), "--disable-tqdm", "true", *extra])
    assert rc == 0
    return json.loads((out / "platolm_run.json").read_text())


@pytest.mark.parametrize("role", [HUMAN, GPT])
def test_trained_checkpoints_carry_the_roles_template(role, tiny_dir, tmp_path):
    from transformers import AutoTokenizer

    from tests.test_train import write_convs

    data = write_convs(tmp_path / "convs.json", n=8, bad=False)
    out = tmp_path / "out"
    record = train_in_process(role, tiny_dir, data, out)
    assert record["chat_template"] == ("socratic" if role == HUMAN else "platolm")
    history = [Turn(HUMAN, "How do I sort a list?"), Turn(GPT, "Use sorted(xs).")]
    for folder in (out, out / "checkpoint-1", out / "checkpoint-2"):
        tok = AutoTokenizer.from_pretrained(folder)
        ids = tok.apply_chat_template(messages_of(history), add_generation_prompt=True, tokenize=True,
                                      return_dict=False)
        assert ids == tok(Template(tok).prompt_for(history, role, SYSTEM_PROMPTS[role])).input_ids, folder


def test_chat_template_runs_wrap_the_base_models_template(tiny_dir, tmp_path):
    """(tests/test_servable.py checks what the wrapped template renders.)"""
    from transformers import AutoTokenizer

    from model.dyadic import base_chat_template
    from tests.test_train import write_convs
    from tests.tiny import CHAT_TEMPLATE

    data = write_convs(tmp_path / "convs.json", n=8, bad=False)
    record = train_in_process(HUMAN, tiny_dir, data, tmp_path / "out", "--template", "chat")
    assert record["chat_template"] == "socratic"
    assert base_chat_template(AutoTokenizer.from_pretrained(tmp_path / "out").chat_template) == CHAT_TEMPLATE
