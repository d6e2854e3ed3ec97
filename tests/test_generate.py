"""model.generate: batched and streamed next-turn generation for both roles, on real models."""
from __future__ import annotations

import importlib.util
import subprocess

import pytest

from core.conversation import GPT, HUMAN, Turn
from model.dyadic import PLATOLM_SYSTEM, SOCRATIC_SYSTEM, Template
from model.generate import ContextOverflow, Generator, _IncrementalText, cut_at_stop, held_back
from tests.conftest import PYTHON, ROOT, env_offline

pytestmark = pytest.mark.xdist_group("generate")  # one worker: its module fixtures are built once

CONVS = [
    [Turn(HUMAN, "What is the capital of France?")],
    [Turn(HUMAN, "Tell me a joke about cats."), Turn(GPT, "Why did the cat sit on the computer?"),
     Turn(HUMAN, "Explain gradient descent in one sentence.")],
]


@pytest.fixture(scope="module")
def tiny_gen(tiny_dir):
    return Generator(str(tiny_dir))


@pytest.fixture(scope="module")
def smol_gen(smollm2_dir):
    return Generator("smollm2", device="cpu")


def test_default_system_follows_the_role(tiny_gen, tiny_tokenizer):
    template = Template(tiny_tokenizer)
    turns = CONVS[1]
    assert tiny_gen.prompt_text(turns, HUMAN) == template.prompt_for(turns, HUMAN, SOCRATIC_SYSTEM)
    assert tiny_gen.prompt_text(turns, GPT) == template.prompt_for(turns, GPT, PLATOLM_SYSTEM)
    assert tiny_gen.prompt_text(turns, GPT, "S. ") == template.prompt_for(turns, GPT, "S. ")
    ids = tiny_gen.prompt_ids(turns, HUMAN)
    assert ids == tiny_tokenizer(template.prompt_for(turns, HUMAN, SOCRATIC_SYSTEM))["input_ids"]
    with pytest.raises(ValueError, match="role"):
        tiny_gen.prompt_ids(turns, "assistant")


def test_batched_equals_one_by_one_and_streamed(tiny_gen):
    """Left padding must not change a greedy answer; the stream must spell the same text."""
    batched = tiny_gen.generate(CONVS, GPT, temperature=0, max_new_tokens=12)
    for conv, got in zip(CONVS, batched):
        alone = tiny_gen.generate([conv], GPT, temperature=0, max_new_tokens=12)[0]
        assert got == alone
        stream = tiny_gen.stream(conv, GPT, temperature=0, max_new_tokens=12)
        pieces = list(stream)
        assert "".join(pieces) == got.text == stream.completion.text
        assert stream.completion.completion_tokens == got.completion_tokens
        assert got.prompt_tokens == len(tiny_gen.prompt_ids(conv, GPT))


def test_per_row_budgets_and_context_clip(tiny_dir):
    gen = Generator(str(tiny_dir), max_context=300)
    short = [Turn(HUMAN, "hi")]
    n_short = len(gen.prompt_ids(short, GPT))
    long = [Turn(HUMAN, "word " * 20)]
    n_long = len(gen.prompt_ids(long, GPT))
    assert n_short < n_long < 300
    out = gen.generate([short, long, short], GPT, temperature=0, max_new_tokens=[3, 500, 7],
                       min_new_tokens=500)  # min_new_tokens keeps EOS away: every row runs to its limit
    assert [o.completion_tokens for o in out] == [3, 300 - n_long, 7]
    assert all(o.finish_reason == "length" for o in out)
    with pytest.raises(ContextOverflow) as info:
        gen.prompt_ids([Turn(HUMAN, "word " * 300)], GPT)
    assert info.value.limit == 300 and info.value.prompt_tokens >= 300
    with pytest.raises(ContextOverflow):
        gen.generate([short, [Turn(HUMAN, "word " * 300)]], GPT)
    with pytest.raises(ContextOverflow):
        gen.stream([Turn(HUMAN, "word " * 300)], GPT)


def test_stop_strings_end_and_are_stripped(tiny_gen):
    full = tiny_gen.generate(CONVS[:1], GPT, temperature=0, max_new_tokens=16, min_new_tokens=16)[0].text
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert len(stop) == 2, full
    want = full[: full.index(stop)]
    got = tiny_gen.generate(CONVS[:1], GPT, temperature=0, max_new_tokens=16, min_new_tokens=16, stop=[stop])[0]
    assert (got.text, got.finish_reason) == (want, "stop")
    stream = tiny_gen.stream(CONVS[0], GPT, temperature=0, max_new_tokens=16, min_new_tokens=16, stop=[stop])
    assert "".join(stream) == want and stream.completion.finish_reason == "stop"


def test_seed_repeats_sampling(tiny_gen):
    kw = dict(temperature=1.0, top_p=0.9, max_new_tokens=10, seed=123)
    a = tiny_gen.generate(CONVS, HUMAN, **kw)
    b = tiny_gen.generate(CONVS, HUMAN, **kw)
    assert a == b
    assert tiny_gen.generate(CONVS, HUMAN, **{**kw, "seed": 7, "min_new_tokens": 10}) != \
        tiny_gen.generate(CONVS, HUMAN, **{**kw, "min_new_tokens": 10})


def test_smollm2_exact_lengths_and_eos(smol_gen):
    """min_new_tokens gives exact lengths (the benchmark relies on it); EOS ends a turn with "stop"."""
    out = smol_gen.generate(CONVS, GPT, temperature=0, max_new_tokens=[5, 9], min_new_tokens=9)
    assert [(o.completion_tokens, o.finish_reason) for o in out] == [(5, "length"), (9, "length")]
    stream = smol_gen.stream(CONVS[0], GPT, temperature=0, max_new_tokens=5, min_new_tokens=9)
    assert "".join(stream) == out[0].text
    assert (stream.completion.completion_tokens, stream.completion.finish_reason) == (5, "length")
    free = smol_gen.generate(CONVS, GPT, temperature=0, max_new_tokens=24)
    assert any(o.finish_reason == "stop" for o in free)  # greedy SmolLM2 ends these turns early
    for o in free:
        assert smol_gen.tokenizer.eos_token not in o.text
        assert o.finish_reason == "length" or o.completion_tokens < 24


def test_incremental_text_matches_full_decode(smollm2_tokenizer):
    text = "Héllo wörld — ünïcode 東京 🤖🦾 code:\n    x = {'a': 1}\n  multiple   spaces"
    ids = smollm2_tokenizer(text)["input_ids"]
    inc = _IncrementalText(smollm2_tokenizer)
    pieces = [inc.add([i]) for i in ids]
    assert "".join(pieces) == smollm2_tokenizer.decode(ids)
    assert all("\ufffd" not in p for p in pieces)


def test_stop_helpers():
    assert cut_at_stop("abc</s>def", ["</s>", "d"]) == ("abc", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)
    assert held_back("hello </", ["</s>"]) == 2
    assert held_back("hello", ["</s>"]) == 0


def test_engine_vllm_without_a_gpu_says_so(tiny_dir):
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm can run here; the GPU test below covers it")
    proc = subprocess.run([PYTHON, "-m", "model.serve", "--model", str(tiny_dir), "--role", "human",
                           "--engine", "vllm"], cwd=ROOT, env=env_offline(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "needs a CUDA GPU and the vllm package" in proc.stderr


@pytest.mark.gpu
def test_vllm_serve_writes_what_generate_writes(tiny_dir):
    """vLLM's own server, through the role's dyadic chat template, equals HF generate on greedy decoding."""
    import asyncio

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None:
        pytest.skip("needs CUDA and vllm")
    from core.endpoint import Endpoint
    from model.serve import vllm_server

    gen = Generator(str(tiny_dir), device="cuda", dtype="float16")  # vLLM's "auto" for float32 weights
    want = [c.text for c in gen.generate(CONVS, HUMAN, temperature=0, max_new_tokens=16)]

    async def served():
        async with vllm_server(str(tiny_dir), HUMAN, "dyadic", 1024) as url:
            ep = Endpoint(url, key_env=None)
            msgs = [[{"role": "user" if t.role == HUMAN else "assistant", "content": t.text} for t in conv]
                    for conv in CONVS]
            replies = [await ep.chat(m, allow_empty=True, temperature=0, max_tokens=16) for m in msgs]
            await ep.close()
            return [r.text for r in replies]

    assert asyncio.run(served()) == want
