"""model.serve as a real process on 127.0.0.1, driven by the official openai client (sync and async)."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import httpx
import openai
import pytest

from core.conversation import GPT, HUMAN, Turn
from model.dyadic import PLATOLM_SYSTEM, SOCRATIC_SYSTEM, Template
from model.generate import Generator
from model.serve import ChatRequest, Message, request_prompt
from tests.conftest import PYTHON, ROOT, env_offline

KEY = "test-key-123"
CHAT = [{"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Tell me a joke about cats."}]

pytestmark = pytest.mark.xdist_group("serve")  # one worker: its module fixtures are built once


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(log_path, *args: str, key: str | None = None):
    port = free_port()
    env = env_offline()
    env.pop("PLATOLM_API_KEY", None)
    if key:
        env["PLATOLM_API_KEY"] = key
    log = open(log_path, "w")
    proc = subprocess.Popen([PYTHON, "-m", "model.serve", "--device", "cpu", "--port", str(port), *args],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{open(log_path).read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start:\n{open(log_path).read()}")
        time.sleep(0.3)


def stop_server(proc, log_path) -> str:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    return open(log_path).read()


@pytest.fixture(scope="module")
def gpt_server(tiny_dir, tmp_path_factory):
    """The tiny model as the assistant, behind an API key, with a 300-token context."""
    log = tmp_path_factory.mktemp("serve-gpt") / "server.log"
    proc, url = start_server(log, "--model", str(tiny_dir), "--role", "gpt", "--max-context", "300",
                             "--served-model-name", "tiny-gpt", key=KEY)
    yield url
    text = stop_server(proc, log)
    assert KEY not in text  # the key is never logged


@pytest.fixture(scope="module")
def human_server(smollm2_simulator_server):
    """SmolLM2 as the user simulator (next human turn), no key: the session's (tests/conftest.py)."""
    return smollm2_simulator_server.url.removesuffix("/v1")


@pytest.fixture(scope="module")
def tiny_gen(tiny_dir):
    return Generator(str(tiny_dir), max_context=300)


def client(url, key=KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def as_turns(messages) -> list[Turn]:
    return [Turn(HUMAN if m["role"] == "user" else GPT, m["content"]) for m in messages]


def test_request_prompt_is_the_training_template(tiny_gen, tiny_tokenizer):
    """For role human the server's prompt is Template.prompt_for(turns, "human", SOCRATIC_SYSTEM)."""
    template = Template(tiny_tokenizer)
    turns = as_turns(CHAT[:2])

    def prompt(role, messages, **extra):
        return request_prompt(tiny_gen, role, ChatRequest(messages=messages, **extra))

    msgs = [Message(**m) for m in CHAT[:2]]
    want = tiny_tokenizer(template.prompt_for(turns, HUMAN, SOCRATIC_SYSTEM))["input_ids"]
    assert prompt(HUMAN, msgs) == want
    assert prompt(HUMAN, msgs, truncate_prompt_tokens=7) == want[-7:]  # vLLM's extension: the latest k
    want = tiny_tokenizer(template.prompt_for(turns, GPT, PLATOLM_SYSTEM))["input_ids"]
    assert prompt(GPT, msgs) == want
    sys_msgs = [Message(role="system", content="Be brief. "), *msgs]
    want = tiny_tokenizer(template.prompt_for(turns, HUMAN, "Be brief. "))["input_ids"]
    assert prompt(HUMAN, sys_msgs) == want
    parts = [Message(role="user", content=[{"type": "text", "text": "What is "}, {"type": "text", "text": "it?"}])]
    want = tiny_tokenizer(template.prompt_for([Turn(HUMAN, "What is it?")], GPT, PLATOLM_SYSTEM))["input_ids"]
    assert prompt(GPT, parts) == want


def test_gpt_role_non_streaming_matches_local_greedy(gpt_server, tiny_gen):
    r = client(gpt_server).chat.completions.create(model="tiny-gpt", messages=CHAT, temperature=0, max_tokens=6)
    local = tiny_gen.generate([as_turns(CHAT)], GPT, temperature=0, max_new_tokens=6)[0]
    choice = r.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == \
        ("assistant", local.text, local.finish_reason)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (local.prompt_tokens, local.completion_tokens)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model == "tiny-gpt"


def test_gpt_role_streaming(gpt_server, tiny_gen):
    stream = client(gpt_server).chat.completions.create(
        model="tiny-gpt", messages=CHAT, temperature=0, max_tokens=6, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    local = tiny_gen.generate([as_turns(CHAT)], GPT, temperature=0, max_new_tokens=6)[0]
    assert text == local.text
    assert finishes == [local.finish_reason]
    assert chunks[-1].usage.completion_tokens == local.completion_tokens
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # really incremental


def test_stop_seed_and_models(gpt_server, tiny_gen):
    c = client(gpt_server)
    full = tiny_gen.generate([as_turns(CHAT)], GPT, temperature=0, max_new_tokens=12, min_new_tokens=12)[0].text
    stop = full[4:6]
    r = c.chat.completions.create(model="m", messages=CHAT, temperature=0, max_tokens=12, stop=stop)
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == (full[: full.index(stop)], "stop")
    kw = dict(model="m", messages=CHAT, temperature=1.0, top_p=0.95, max_tokens=8, seed=42)
    assert c.chat.completions.create(**kw).choices[0].message.content == \
        c.chat.completions.create(**kw).choices[0].message.content
    exact = c.chat.completions.create(model="m", messages=CHAT, max_tokens=7, extra_body={"min_tokens": 7})
    assert (exact.usage.completion_tokens, exact.choices[0].finish_reason) == (7, "length")
    assert [m.id for m in c.models.list()] == ["tiny-gpt"]


def test_auth(gpt_server):
    with pytest.raises(openai.AuthenticationError) as info:
        client(gpt_server, key="wrong").chat.completions.create(model="m", messages=CHAT, max_tokens=2)
    assert info.value.status_code == 401
    r = httpx.post(f"{gpt_server}/v1/chat/completions", json={"messages": CHAT})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{gpt_server}/v1/models").status_code == 401
    assert httpx.get(f"{gpt_server}/health").json()["status"] == "ok"


@pytest.mark.parametrize("body,param", [
    (b"{not json", None),
    (b'{"messages": 3}', "messages"),
    (b'{"messages": [{"role": "tool", "content": "x"}]}', "messages"),
    (b'{"messages": [{"role": "user", "content": ""}]}', "messages"),
    (b'{"messages": [{"role": "user"}]}', "messages.0.content"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 5}', "temperature"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens"),
    (b'[1, 2]', None),
])
def test_bad_requests_get_openai_style_400(gpt_server, body, param):
    r = httpx.post(f"{gpt_server}/v1/chat/completions", content=body,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param:
        assert error["param"] == param
    assert "Traceback" not in r.text


def test_n_and_context_overflow_rejected(gpt_server):
    c = client(gpt_server)
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="m", messages=CHAT, n=2, max_tokens=2)
    assert info.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "word " * 400}], max_tokens=2)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:  # streaming checks before the stream starts
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "word " * 400}],
                                  max_tokens=2, stream=True)
    assert info.value.code == "context_length_exceeded"


def test_eight_concurrent_clients_all_answered(gpt_server, tiny_gen):
    questions = [f"Question number {i}: what is {i} plus {i}?" for i in range(8)]

    async def ask_all():
        async with openai.AsyncOpenAI(base_url=f"{gpt_server}/v1", api_key=KEY, max_retries=0,
                                      timeout=300) as c:
            return await asyncio.gather(*[
                c.chat.completions.create(model="m", messages=[{"role": "user", "content": q}],
                                          temperature=0, max_tokens=5) for q in questions])

    replies = asyncio.run(ask_all())
    local = tiny_gen.generate([[Turn(HUMAN, q)] for q in questions], GPT, temperature=0, max_new_tokens=5)
    assert [r.choices[0].message.content for r in replies] == [x.text for x in local]  # no answer mixed up
    health = httpx.get(f"{gpt_server}/health").json()
    assert health["batched_requests"] >= 8 and health["batches"] >= 1


@pytest.mark.xdist_group("smollm2-server")
def test_human_role_writes_the_next_human_turn(human_server, smollm2_dir):
    """SmolLM2 as simulator: the reply is the next human turn, exactly as model.generate writes it."""
    c = client(human_server, key="unused")
    gen = Generator("smollm2", device="cpu")
    convs = [CHAT[:2], []]  # a running conversation, and an opening question
    for messages in convs:
        r = c.chat.completions.create(model="m", messages=messages, temperature=0, max_tokens=8)
        local = gen.generate([as_turns(messages)], HUMAN, temperature=0, max_new_tokens=8)[0]
        assert r.choices[0].message.content == local.text
        assert r.usage.prompt_tokens == len(gen.tokenizer(
            gen.template.prompt_for(as_turns(messages), HUMAN, SOCRATIC_SYSTEM))["input_ids"])
    stream = c.chat.completions.create(model="m", messages=CHAT[:2], temperature=0, max_tokens=8, stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream)
    assert text == gen.generate([as_turns(CHAT[:2])], HUMAN, temperature=0, max_new_tokens=8)[0].text
    assert httpx.get(f"{human_server}/health").json()["role"] == "human"
