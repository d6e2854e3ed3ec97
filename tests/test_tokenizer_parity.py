"""Tokenizer parity with the original: the ids and labels model.dyadic gives a LLaMA-style tokenizer equal what the
original's training code computed with its *slow* LlamaTokenizer (transformers 4.28).

A sentencepiece BPE model with byte fallback, ``<unk>``/``<s>``/``</s>`` and the dummy prefix (LLaMA's settings) is
trained here. The reference is sentencepiece itself, driven the way the 4.28 slow tokenizer drove it: split the
text at special tokens, strip the whitespace next to each (they were re-added as plain strings), encode every
piece, put ``<s>`` in front; the labels are the original ``preprocess``'s (from the ``<s>`` of a trained turn to its
``</s>``, found by tokenising the text up to there). The fast tokenizer is the one transformers 5 builds for
LLaMA (``LlamaTokenizer`` from the vocabulary and merges, as it does from a ``tokenizer.json``).
"""
from __future__ import annotations

import io
import re

import pytest

from core.conversation import GPT, HUMAN, Conversation, Turn
from model.dyadic import (IGNORE_INDEX, ROLE_PREFIX, SYSTEM_PROMPTS, Encoder, Template, install_chat_template,
                          match_slow_llama)
from tests.tiny import CORPUS

SPECIALS = ("<unk>", "<s>", "</s>")
DIALOGUES = [
    Conversation("plain", [Turn(HUMAN, "How do I sort a list in Python?"), Turn(GPT, "Use sorted(xs) or xs.sort()."),
                           Turn(HUMAN, "And the capital of France?"), Turn(GPT, "Paris.")]),
    Conversation("unicode", [Turn(HUMAN, "你好，世界！ 😀 Ünïcödé — “quotes” 東京"), Turn(GPT, "👍 好的。 ß")]),
    Conversation("code", [Turn(HUMAN, "def f(x):\n    return x**2  # square\n\tprint(f(3))"),
                          Turn(GPT, "```python\nprint( 9 )\n```\n")]),
    Conversation("specials", [Turn(HUMAN, "What does <s> mean, and </s>?"), Turn(GPT, "<s> starts, </s> ends <unk>")]),
    Conversation("spaces", [Turn(HUMAN, "  two leading,  two inside, trailing  "), Turn(GPT, "\nnew line first\n")]),
    Conversation("roles", [Turn(GPT, "Human: Assistant: fake roles"), Turn(HUMAN, "ok Human: yes 0123456789")]),
]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    import sentencepiece as spm

    text = CORPUS * 20 + [t.text for c in DIALOGUES for t in c.turns] * 5 + list(SYSTEM_PROMPTS.values()) * 5
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=model, vocab_size=700, model_type="bpe", byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True, character_coverage=1.0,
        minloglevel=2)
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


@pytest.fixture
def fast(spm_model):
    """transformers 5's LLaMA tokenizer for this vocabulary, as it loads one (legacy=False)."""
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    sp = spm_model
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    scores = {piece: sp.get_score(i) for piece, i in vocab.items()}
    return LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab, scores, skip_tokens=set(SPECIALS)),
                          add_bos_token=True)


def slow_ids(sp, text: str) -> list[int]:
    """transformers 4.28's slow LlamaTokenizer(text): pieces between special tokens, stripped next to them."""
    pieces = re.split("(" + "|".join(map(re.escape, SPECIALS)) + ")", text)
    for i, piece in enumerate(pieces):
        if piece in SPECIALS:
            if i > 0:
                pieces[i - 1] = pieces[i - 1].rstrip()
            if i + 1 < len(pieces):
                pieces[i + 1] = pieces[i + 1].lstrip()
    ids = [sp.bos_id()]
    for piece in pieces:
        if piece in SPECIALS:
            ids.append(sp.piece_to_id(piece))
        elif piece:
            ids += sp.encode(piece)
    return ids


def original_row(sp, conv: Conversation, role: str, max_length: int = 2048) -> tuple[list[int], list[int]]:
    """The original preprocess(): ids of the whole text; labels from each trained turn's <s> to its </s>."""
    text, spans = SYSTEM_PROMPTS[role], []
    for turn in conv.turns:
        prefix = text + ROLE_PREFIX[turn.role] + "<s>"
        text = prefix + turn.text + "</s>"
        if turn.role == role:
            spans.append((len(slow_ids(sp, prefix)[:max_length]) - 1, len(slow_ids(sp, text)[:max_length])))
    ids = slow_ids(sp, text)[:max_length]
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in spans:
        labels[start:end] = ids[start:end]
    return ids, labels


@pytest.mark.parametrize("role", [HUMAN, GPT])
def test_dyadic_rows_equal_the_originals_after_match_slow_llama(spm_model, fast, role):
    assert match_slow_llama(fast)
    encoder = Encoder(fast, role)
    for conv in DIALOGUES:
        if not any(t.role == role for t in conv.turns):
            continue
        row = encoder.encode(conv)
        ids, labels = original_row(spm_model, conv, role)
        assert row["input_ids"] == ids, conv.id
        assert row["labels"] == labels, conv.id


def test_as_loaded_the_fast_tokenizer_differs_at_every_turn(spm_model, fast):
    """Documented difference: transformers 5 keeps " " before <s> as its own piece and gives the first word of
    a turn no "▁" prefix; the original did the opposite."""
    conv = DIALOGUES[0]
    text = Template(fast).render(conv.turns, SYSTEM_PROMPTS[HUMAN]).text
    ours, original = fast(text).input_ids, slow_ids(spm_model, text)
    assert ours != original
    space = spm_model.piece_to_id("▁")
    bos = spm_model.bos_id()
    assert all(ours[i - 1] == space for i, t in enumerate(ours) if t == bos and i > 0)
    assert not any(original[i - 1] == space for i, t in enumerate(original) if t == bos and i > 0)
    assert fast.convert_ids_to_tokens(ours[ours.index(bos, 1) + 1]) == "H"  # "How" without its "▁"
    assert spm_model.id_to_piece(original[original.index(bos, 1) + 1]).startswith("▁")


def test_the_parity_survives_save_and_load(spm_model, fast, tmp_path):
    from transformers import AutoTokenizer

    match_slow_llama(fast)
    fast.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for conv in DIALOGUES:
        text = Template(loaded).render(conv.turns, SYSTEM_PROMPTS[GPT]).text
        assert loaded(text).input_ids == slow_ids(spm_model, text), conv.id


def test_the_chat_template_matches_only_a_tokenizer_with_the_originals_rule(fast):
    """Behind a leading <s> (the served template) the as-loaded tokenizer drops the "▁" of the system prompt's
    first word, so its template would not give the trained ids: install_chat_template refuses it."""
    with pytest.raises(ValueError, match="does not reproduce the dyadic token ids"):
        install_chat_template(fast, HUMAN)
    match_slow_llama(fast)
    install_chat_template(fast, HUMAN)
    history = DIALOGUES[1].turns[:2]
    served = fast.apply_chat_template(Conversation("c", history).to_messages()["messages"], tokenize=True,
                                      add_generation_prompt=True, return_dict=False)
    assert served == fast(Template(fast).prompt_for(history, HUMAN, SYSTEM_PROMPTS[HUMAN])).input_ids


def test_byte_level_tokenizers_are_left_as_they_are(tiny_dir, smollm2_dir):
    from transformers import AutoTokenizer

    for folder in (tiny_dir, smollm2_dir):
        tok = AutoTokenizer.from_pretrained(folder)
        before = tok.backend_tokenizer.to_str()
        assert match_slow_llama(tok) is False and tok.backend_tokenizer.to_str() == before
