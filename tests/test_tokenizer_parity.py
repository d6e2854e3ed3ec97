"""Tokenizer parity with the original: the ids and labels model.dyadic gives a LLaMA-style tokenizer equal what the
original's training code computed with its *slow* LlamaTokenizer (transformers 4.28).

A sentencepiece BPE model with byte fallback, ``<unk>``/``<s>``/``</s>`` and the dummy prefix (LLaMA's settings) is
trained for the session (conftest's ``llama_spm``, tests/llama_spm.py). The reference is sentencepiece itself, driven the way the 4.28 slow tokenizer drove it: split the
text at special tokens, strip the whitespace next to each (they were re-added as plain strings), encode every
piece, put ``<s>`` in front; the labels are the original ``preprocess``'s (from the ``<s>`` of a trained turn to its
``</s>``, found by tokenising the text up to there). The fast tokenizer is the one transformers 5 builds for
LLaMA (``LlamaTokenizer`` from the vocabulary and merges, as it does from a ``tokenizer.json``).
"""
from __future__ import annotations

import pytest

from core.conversation import GPT, HUMAN, Conversation
from model.dyadic import (IGNORE_INDEX, ROLE_PREFIX, SYSTEM_PROMPTS, Encoder, Template, install_chat_template,
                          match_slow_llama)
from tests.llama_spm import DIALOGUES, llama_tokenizer, slow_ids


@pytest.fixture(scope="module")
def spm_model(llama_spm):
    return llama_spm


@pytest.fixture
def fast(spm_model):
    """transformers 5's LLaMA tokenizer for this vocabulary, as it loads one (legacy=False)."""
    return llama_tokenizer(spm_model)


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
