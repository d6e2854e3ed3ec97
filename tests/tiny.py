"""Tiny, readable test assets built on the spot: a LLaMA-style BPE tokenizer and a random-init Llama.

The tokenizer is trained with the ``tokenizers`` library on a few sentences; like LLaMA's it has
``<s>``/``</s>`` and adds ``<s>`` at the start of every encoding, and it carries a small chat
template so the ``chat`` mode can be tested with it too.
"""
from __future__ import annotations

from pathlib import Path

CORPUS = [
    "Human: Assistant: How do I sort a list in Python? Use sorted(xs) or xs.sort().",
    "What is the capital of France? Paris is the capital of France.",
    "Tell me a joke about cats. Why did the cat sit on the computer? To keep an eye on the mouse.",
    "Explain gradient descent in one sentence. It walks downhill on the loss surface.",
    "Can you write a haiku about autumn leaves falling slowly to the ground?",
    "The quick brown fox jumps over the lazy dog 0123456789 !?.,;:'\"()[]{}<>/\\-_=+*&^%$#@~`|",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def make_tokenizer(out_dir: str | Path, vocab_size: int = 400):
    """Train a byte-level BPE tokenizer that prepends <s>, save it as a HF tokenizer, return it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]),
    ])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out_dir)
    return hf


def make_llama(out_dir: str | Path, tokenizer=None, hidden: int = 32, layers: int = 2, seed: int = 0):
    """A random-init Llama small enough to train in seconds on a CPU; saved with its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = tokenizer or make_tokenizer(out_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model
