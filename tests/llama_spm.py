"""A LLaMA-style sentencepiece tokenizer trained on the spot, and the original's slow tokenizer as a reference.

A sentencepiece BPE model with byte fallback, ``<unk>``/``<s>``/``</s>`` and the dummy prefix (LLaMA's settings);
:func:`llama_tokenizer` is the fast tokenizer transformers 5 builds for LLaMA from its vocabulary and merges (as it
does from a ``tokenizer.json``, ``legacy=False``); :func:`slow_ids` is sentencepiece driven the way transformers
4.28's slow ``LlamaTokenizer`` drove it: split the text at special tokens, strip the whitespace next to each (they
were re-added as plain strings), encode every piece, put ``<s>`` in front. Shared by conftest's fixtures
(``llama_spm``, ``llama_spm_dir``) and tests/test_tokenizer_parity.py.
"""
from __future__ import annotations

import io
import re

from core.conversation import GPT, HUMAN, Conversation, Turn
from model.dyadic import SYSTEM_PROMPTS
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


def train_spm(vocab_size: int = 700):
    """The sentencepiece model (a ``SentencePieceProcessor``) with LLaMA's settings, trained on a few sentences."""
    import sentencepiece as spm

    text = CORPUS * 20 + [t.text for c in DIALOGUES for t in c.turns] * 5 + list(SYSTEM_PROMPTS.values()) * 5
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
        allow_whitespace_only_pieces=True, character_coverage=1.0, minloglevel=2)
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def llama_tokenizer(sp):
    """transformers 5's LLaMA tokenizer for this vocabulary, as it loads one (legacy=False)."""
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges

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
