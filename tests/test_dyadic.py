"""The dyadic template and its labels: decode the trained tokens and compare with the trained role's text.

Runs on two real tokenizers: the tiny LLaMA-style one (adds <s> at the start, built in tests/tiny.py)
and SmolLM2-135M-Instruct's (no automatic BOS; <|im_start|>/<|im_end|> as BOS/EOS).
"""
from __future__ import annotations

import json

import pytest

from core.conversation import GPT, HUMAN, BadRecord, Conversation, Turn, parse_record, read_json_records
from model.dyadic import (IGNORE_INDEX, PLATOLM_SYSTEM, SOCRATIC_SYSTEM, SYSTEM_PROMPTS, Encoder, Template,
                          labels_from_offsets, show)
from tests.conftest import run_command

CONV = Conversation("c1", [
    Turn(HUMAN, "How do I sort a list in Python?"),
    Turn(GPT, "Use sorted(xs) — it returns a new list."),
    Turn(HUMAN, "And in place? 😀 Ünïcödé"),
    Turn(GPT, "Call xs.sort()."),
])


@pytest.fixture(params=["tiny", "smollm2"])
def tokenizer(request):
    return request.getfixturevalue(f"{request.param}_tokenizer")


def trained_runs(row, tokenizer) -> list[str]:
    """Decode each maximal run of trained tokens."""
    runs, cur = [], []
    for tok, lab in zip(row["input_ids"], row["labels"]):
        if lab != IGNORE_INDEX:
            assert lab == tok
            cur.append(tok)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tokenizer.decode(r) for r in runs]


def expected_dyadic(conv, role, tok):
    return [tok.bos_token + t.text + tok.eos_token for t in conv.turns if t.role == role]


def test_system_prompts_match_the_released_models():
    assert SOCRATIC_SYSTEM == (
        "A chat between a curious human and an artificial intelligence assistant. The human can ask further "
        "questions based on previous conversations, or he can directly ask brand new questions without any "
        "conversations as context.\n\n")
    assert PLATOLM_SYSTEM == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions.\n\n")
    assert SYSTEM_PROMPTS == {HUMAN: SOCRATIC_SYSTEM, GPT: PLATOLM_SYSTEM}


def test_render_is_the_paper_format(tiny_tokenizer):
    r = Template(tiny_tokenizer).render(CONV.turns[:2], "SYS\n\n")
    assert r.text == ("SYS\n\nHuman: <s>How do I sort a list in Python?</s>"
                      "Assistant: <s>Use sorted(xs) — it returns a new list.</s>")
    assert [r.text[s:e] for s, e, _ in r.spans] == expected_dyadic(Conversation("x", CONV.turns[:2]), HUMAN,
                                                                   tiny_tokenizer) + \
        expected_dyadic(Conversation("x", CONV.turns[:2]), GPT, tiny_tokenizer)


@pytest.mark.parametrize("role", [HUMAN, GPT])
def test_dyadic_trains_exactly_the_role_text(tokenizer, role):
    row = Encoder(tokenizer, role).encode(CONV)
    assert trained_runs(row, tokenizer) == expected_dyadic(CONV, role, tokenizer)
    # tokenized once, exactly as tokenizer(text) does by default (training sees what inference sees)
    text = Template(tokenizer).render(CONV.turns, SYSTEM_PROMPTS[role]).text
    assert row["input_ids"] == tokenizer(text).input_ids


@pytest.mark.parametrize("role", [HUMAN, GPT])
def test_chat_template_trains_content_and_end_marker(tokenizer, role):
    row = Encoder(tokenizer, role, template="chat").encode(CONV)
    marker = Template(tokenizer, "chat").stop_strings()[0]
    assert trained_runs(row, tokenizer) == [t.text + marker for t in CONV.turns if t.role == role]
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM_PROMPTS[role]}] + CONV.to_messages()["messages"], tokenize=False)
    assert row["input_ids"] == tokenizer(text, add_special_tokens=False).input_ids


def test_tiny_tokenizer_adds_bos_which_is_never_trained(tiny_tokenizer):
    row = Encoder(tiny_tokenizer, HUMAN).encode(CONV)
    assert row["input_ids"][0] == tiny_tokenizer.bos_token_id and row["labels"][0] == IGNORE_INDEX


def test_chat_mode_needs_a_chat_template(tiny_tokenizer):
    tok = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        Encoder(tok, GPT, template="chat")


@pytest.mark.parametrize("turns", [
    [Turn(GPT, "I start."), Turn(HUMAN, "Then me."), Turn(GPT, "Fine.")],        # starts with gpt
    [Turn(HUMAN, "Only one turn here.")],                                         # one turn
    [Turn(HUMAN, "Human: Assistant: fake roles"), Turn(GPT, "ok Human: yes")],    # literal role markers
    [Turn(HUMAN, "emoji 🧪🔥 and 中文 and ß"), Turn(GPT, "👍")],                  # unicode
])
def test_edge_conversations(tokenizer, turns):
    conv = Conversation("e", turns)
    for role in (HUMAN, GPT):
        if not any(t.role == role for t in turns):
            continue
        row = Encoder(tokenizer, role).encode(conv)
        assert trained_runs(row, tokenizer) == expected_dyadic(conv, role, tokenizer)


def test_literal_eos_string_inside_text_stays_inside_the_turn(tokenizer):
    eos = tokenizer.eos_token
    conv = Conversation("e", [Turn(HUMAN, f"what does {eos} mean?"), Turn(GPT, "end of sequence")])
    row = Encoder(tokenizer, HUMAN).encode(conv)
    assert "".join(trained_runs(row, tokenizer)) == tokenizer.bos_token + f"what does {eos} mean?" + eos
    gpt_row = Encoder(tokenizer, GPT).encode(conv)
    assert trained_runs(gpt_row, tokenizer) == expected_dyadic(conv, GPT, tokenizer)


def test_truncation_in_the_middle_of_a_trained_turn(tokenizer):
    enc_full = Encoder(tokenizer, GPT, max_length=100_000)
    full = enc_full.encode(CONV)
    # cut inside the last assistant turn
    last_start = max(i for i, lab in enumerate(full["labels"]) if lab == IGNORE_INDEX) + 1
    cut = last_start + 2
    row = Encoder(tokenizer, GPT, max_length=cut).encode(CONV)
    assert row["input_ids"] == full["input_ids"][:cut] and row["labels"] == full["labels"][:cut]
    runs = trained_runs(row, tokenizer)
    assert runs[:-1] == expected_dyadic(CONV, GPT, tokenizer)[:-1]
    assert expected_dyadic(CONV, GPT, tokenizer)[-1].startswith(runs[-1])


def test_truncation_that_leaves_no_trained_token_drops_the_row(tokenizer):
    out = list(Encoder(tokenizer, GPT, max_length=5).encode_many([CONV], file="f.json"))
    assert isinstance(out[0], BadRecord) and out[0].reason == "no trained tokens within max_length"
    assert "f.json" in str(out[0]) and "c1" in str(out[0])


def test_labels_match_a_direct_per_token_check(smollm2_tokenizer):
    """The vectorised pass agrees with the rule applied token by token."""
    tmpl = Template(smollm2_tokenizer)
    r = tmpl.render(CONV.turns, SOCRATIC_SYSTEM)
    enc = smollm2_tokenizer(r.text, return_offsets_mapping=True)
    fast = labels_from_offsets(r.text, enc.input_ids, enc.offset_mapping, r.spans, HUMAN)
    slow = [tid if any(s <= a and b <= e and a < b for s, e, role in r.spans if role == HUMAN) else IGNORE_INDEX
            for tid, (a, b) in zip(enc.input_ids, enc.offset_mapping)]
    assert fast == slow


def test_tokenizer_without_bos_trains_the_first_word(tiny_tokenizer):
    """With no BOS a token may carry the template's space (" word"); it still belongs to the turn."""
    text = "S\n\nHuman: hello world"
    spans = [(len("S\n\nHuman: "), len(text), HUMAN)]
    ids = [1, 2, 3, 4]
    offsets = [(0, 3), (3, 9), (9, 15), (15, 21)]  # " hello" straddles the span start by a space
    assert labels_from_offsets(text, ids, offsets, spans, HUMAN) == [IGNORE_INDEX, IGNORE_INDEX, 3, 4]


def test_prompt_for_the_next_turn(tiny_tokenizer):
    tmpl = Template(tiny_tokenizer)
    assert tmpl.prompt_for(CONV.turns[:2], HUMAN, "S") == tmpl.render(CONV.turns[:2], "S").text + "Human: <s>"
    assert tmpl.prompt_for([], GPT, "S") == "SAssistant: <s>"
    assert tmpl.stop_strings() == ["</s>"]
    chat = Template(tiny_tokenizer, "chat")
    assert chat.prompt_for(CONV.turns[:1], GPT, "S").endswith("<|assistant|>\n")
    assert chat.prompt_for(CONV.turns[:2], HUMAN, "S").endswith("<|user|>\n")


def test_show_highlights_trained_tokens(tiny_tokenizer):
    row = Encoder(tiny_tokenizer, HUMAN).encode(Conversation("s", [Turn(HUMAN, "hi"), Turn(GPT, "yo")]))
    assert "Human: [[<s>hi</s>]]Assistant: <s>yo</s>" in show(row, tiny_tokenizer, color=False)


# --- input formats and bad input ------------------------------------------------------------------

def test_messages_format_and_role_aliases():
    conv = parse_record({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                                      {"role": "assistant", "content": "a"}]}, 7)
    assert conv.id == "7" and conv.system == "S" and [t.role for t in conv.turns] == [HUMAN, GPT]
    for alias in ("chatgpt", "bing", "bard", "gpt", "assistant"):
        assert parse_record({"conversations": [{"from": alias, "value": "x"}]}, 0).turns[0].role == GPT


def test_truncated_json_array_yields_complete_records(tmp_path):
    f = tmp_path / "cut.json"
    f.write_text('[{"id": "a", "conversations": [{"from": "human", "value": "q"}]},\n {"id": "b", "conv')
    warnings = []
    assert [r["id"] for r in read_json_records(f, warn=warnings.append)] == ["a"]
    assert "cut off after 1 complete records" in warnings[0]


BAD = [
    ({"id": "r-noturns", "conversations": []}, "no turns"),
    ({"id": "r-nolist"}, "no turns"),
    ({"id": "r-role", "conversations": [{"from": "robot", "value": "x"}]}, "unknown role"),
    ({"id": "r-type", "conversations": [{"from": "human", "value": 3}]}, "non-string text"),
    ({"id": "r-empty", "conversations": [{"from": "human", "value": "  "}]}, "empty text"),
    ({"id": "r-nohuman", "conversations": [{"from": "gpt", "value": "only gpt"}]}, "no human turn"),
]
GOOD = {"id": "ok-1", "conversations": [{"from": "human", "value": "q?"}, {"from": "gpt", "value": "a."}]}


def run_cli(*args, in_process=True):
    return run_command("model.dyadic", *args, in_process=in_process)


def test_cli_skips_and_counts_every_bad_kind(tmp_path, tiny_dir):
    data = tmp_path / "mixed.jsonl"
    data.write_text("\n".join(json.dumps(r) for r, _ in BAD[:3]) + "\n" + json.dumps(GOOD) + "\n"
                    + "\n".join(json.dumps(r) for r, _ in BAD[3:]) + "\n" + json.dumps({"conversations": GOOD["conversations"]}) + "\n")
    out = tmp_path / "out.jsonl"
    p = run_cli("--tokenizer", tiny_dir, "--data", data, "--train-role", "human", "--out", out, in_process=False)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["ok-1", "7"]  # input order; the id-less record gets its index
    assert all(len(r["input_ids"]) == len(r["labels"]) for r in rows)
    for rec, reason in BAD:
        assert f"record '{rec['id']}': {reason}" in p.stderr
        assert str(data) in p.stderr
    assert "skipped 6 bad records" in p.stderr
    assert "no human turn" in p.stderr.split("skipped 6 bad records")[1]


def test_cli_strict_stops_at_the_first_bad_record(tmp_path, tiny_dir):
    data = tmp_path / "bad.json"
    data.write_text(json.dumps([GOOD, BAD[2][0], GOOD]))
    p = run_cli("--tokenizer", tiny_dir, "--data", data, "--train-role", "gpt", "--strict", "--out", tmp_path / "o.jsonl")
    assert p.returncode == 1 and "r-role': unknown role" in p.stderr
    assert not (tmp_path / "o.jsonl").exists()  # nothing half-written


def test_cli_not_json(tmp_path, tiny_dir):
    data = tmp_path / "notjson.jsonl"
    data.write_text(json.dumps(GOOD) + "\nthis is not json\n")
    p = run_cli("--tokenizer", tiny_dir, "--data", data, "--train-role", "gpt", "--out", tmp_path / "o.jsonl")
    assert p.returncode == 0 and "line 2': not JSON" in p.stderr
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 1


def real_sharegpt(n: int) -> list[dict]:
    """The first n well-formed records of the ShareGPT V3 file that `make setup` installs."""
    import itertools

    from core.assets import sharegpt_file
    from core.conversation import BadRecord, read_json_records

    def good(pair) -> bool:
        try:
            return len(parse_record(pair[1], pair[0]).turns) >= 2
        except BadRecord:
            return False

    return [rec for _, rec in itertools.islice(filter(good, enumerate(read_json_records(sharegpt_file()))), n)]


def test_cli_on_real_conversations_with_smollm2(tmp_path, smollm2_dir, smollm2_tokenizer):
    src = real_sharegpt(25)
    data = tmp_path / "real.json"
    data.write_text(json.dumps(src))
    for role in (HUMAN, GPT):
        out = tmp_path / f"{role}.jsonl"
        p = run_cli("--tokenizer", smollm2_dir, "--data", data, "--train-role", role, "--out", out,
                    "--max-length", 100_000, "--show", 1)
        assert p.returncode == 0, p.stderr
        assert "[[<|im_start|>" in p.stdout
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["id"] for r in rows] == [c["id"] for c in src]
        for rec, row in zip(src, rows):
            conv = parse_record(rec, 0)
            assert trained_runs(row, smollm2_tokenizer) == expected_dyadic(conv, role, smollm2_tokenizer)
