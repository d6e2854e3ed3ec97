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


# -- a tiny Socratic that learned to end conversations (fixture ``socratic_that_ends``) -------------------------
FOLLOW_UP = "Can you say more about that?"
# what "all but certain" means: p >= MARGIN for the one outcome, <= 1 - MARGIN for the other; float noise across
# processors is orders of magnitude smaller, and greedy decoding or sampling at temperature 0.01 follows it
MARGIN = 0.9


def ending_conversations(n: int = 4) -> list[dict]:
    """Two-round conversations that all ended (ShareGPT records): an opening question, the answer
    tests/fault_teacher.py gives to it, the same follow-up question, that server's answer to it; so a simulation
    seeded with a first round and answered by that server meets exactly what the model was trained on."""
    from tests.fault_teacher import teacher_answer

    records = []
    for i in range(n):
        q = CORPUS[i][:24 + 3 * i].strip()
        turns = [q, teacher_answer(1, q), FOLLOW_UP, teacher_answer(2, FOLLOW_UP)]
        records.append({"id": f"end{i}", "conversations": [
            {"from": ("human", "gpt")[k % 2], "value": text} for k, text in enumerate(turns)]})
    return records


def continuation_probability(model, tokenizer, prompt_ids: list[int], text: str) -> float:
    """p(the model writes ``text`` then its EOS | prompt ids): one forward pass, float64 log-probabilities."""
    import torch

    cont = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + cont])).logits[0, len(prompt_ids) - 1:-1].double()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(cont)[:, None]).sum().exp().item()


def end_probabilities(model_dir, records: list[dict]) -> dict[str, list[float]]:
    """p(end marker) after every answer, split by whether the conversation ends there (``end``/``go_on``), p(end
    marker) before the first question (``opening``) and p(the follow-up question) after each first answer, all as
    the simulator prompts the model (model.generate's dyadic prompt with Socratic's system prompt)."""
    from core.conversation import HUMAN, Turn
    from model.dyadic import END_OF_CONVERSATION
    from model.generate import Generator

    gen = Generator(str(model_dir), device="cpu", dtype="float32")
    out: dict[str, list[float]] = {"end": [], "go_on": [], "follow_up": [], "opening": []}

    def p(turns, text):
        return continuation_probability(gen.model, gen.tokenizer, gen.prompt_ids(turns, HUMAN), text)

    out["opening"].append(p([], END_OF_CONVERSATION))
    for rec in records:
        turns = [Turn(t["from"], t["value"]) for t in rec["conversations"]]
        for k in range(2, len(turns) + 1, 2):
            out["end" if k == len(turns) else "go_on"].append(p(turns[:k], END_OF_CONVERSATION))
        out["follow_up"].append(p(turns[:2], FOLLOW_UP))
    return out
