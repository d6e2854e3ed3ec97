"""An OpenAI-compatible server for either model, so any OpenAI client can drive it.

The request's ``messages`` are the real conversation (``user`` = human turns, ``assistant`` =
assistant turns, an optional first ``system`` message). With ``--role gpt`` the reply is the next
assistant turn (PlatoLM); with ``--role human`` it is the next *human* turn written by the user
simulator (Socratic). Either way it comes back as the OpenAI ``assistant`` message of the reply.
``--role`` and ``--template`` default to what the checkpoint records (model.checkpoint).
``--render chat-template`` renders a request with the checkpoint's own chat template and nothing else, as
vLLM does (a checkpoint the trainer saved carries one that writes its trained role's turns).

Routes: ``POST /v1/chat/completions`` (``stream`` true or false), ``GET /v1/models``, ``GET /health``.
Concurrent requests are batched (``core.batcher``): the requests that arrive within ``--batch-wait-ms``
with the same sampling settings run as one batched generate call (streamed requests run on their own).

The API key comes from ``$PLATOLM_API_KEY`` (or ``--api-key``); when set, every ``/v1`` request
needs ``Authorization: Bearer KEY``. Binds 127.0.0.1 unless told otherwise.

Usage::

    python -m model.serve --model smollm2 --role human --port 8000
    python -m model.serve --model runs/socratic --render chat-template --port 8000
    PLATOLM_API_KEY=secret python -m model.serve --model out/platolm --role gpt --engine vllm
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import hmac
import json
import os
import sys
import time
import traceback
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from core.batcher import MicroBatcher
from core.conversation import GPT, HUMAN, BadRecord, Turn, atomic_write, parse_record
from core.errors import UsageError
from core.options import TEMPLATES, add_flag
from core.runner import command
from model.checkpoint import RUN_RECORD, read_checkpoint
from model.generate import Completion, ContextOverflow

API_KEY_ENV = "PLATOLM_API_KEY"
DEFAULT_TEMPERATURE = 0.7
RENDERS = ("role", "chat-template")  # how a request becomes a prompt: request_prompt


# -- the request ---------------------------------------------------------------------------------
class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we have no use for
    model: str | None = None
    messages: list[Message]
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1)
    seed: int | None = None
    min_tokens: int = Field(0, ge=0)  # vLLM's extension: no end of turn before this many tokens
    truncate_prompt_tokens: int | None = Field(None, ge=1)  # vLLM's extension: keep only the latest k
    stream: bool = False
    stream_options: StreamOptions | None = None


class APIError(Exception):
    """An error reported to the client as an OpenAI-style JSON body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


def request_turns(messages: list[Message]) -> tuple[list[Turn], str | None]:
    """The request's messages as (turns, system), read by the project's one record parser.

    A request with no user/assistant message is allowed: the simulator may open a conversation.
    """
    record = {"id": "request", "messages": [{"role": m.role, "content": m.text()} for m in messages]}
    try:
        conv = parse_record(record, 0, "request")
    except BadRecord as err:
        if err.reason == "no turns" and all(m.role == "system" for m in messages) and len(messages) <= 1:
            return [], messages[0].text() if messages else None
        raise APIError(400, f"messages: {err.reason}" + (f" ({err.detail})" if err.detail else ""),
                       param="messages") from None
    return conv.turns, conv.system


def request_prompt(generator, role: str, req: ChatRequest, render: str = "role") -> list[int]:
    """Prompt ids for the next turn, rendered as ``render`` says (:data:`RENDERS`).

    ``role``: the same Template.prompt_for the model was trained with, for the next ``role`` turn; without a
    system message, the checkpoint's trained prompt for that role (else the role's paper prompt).
    ``chat-template``: the checkpoint's own chat template and nothing else, as vLLM renders a request.
    With ``truncate_prompt_tokens`` only the latest tokens are kept, as vLLM does (``usage`` then counts those).
    """
    try:
        if render == "chat-template":
            messages = [{"role": m.role, "content": m.text()} for m in req.messages]
            return generator.chat_template_ids(messages, keep_last=req.truncate_prompt_tokens)
        turns, system = request_turns(req.messages)
        return generator.prompt_ids(turns, role, system, keep_last=req.truncate_prompt_tokens)
    except ContextOverflow as err:
        raise APIError(400, f"{err}; shorten the messages", param="messages",
                       code="context_length_exceeded") from None
    except (ValueError, TemplateError) as err:  # the chat template refuses the messages (raise_exception)
        if render != "chat-template":
            raise
        raise APIError(400, f"messages: the chat template refuses them: {err}", param="messages") from None


@dataclass
class Settings:
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]
    seed: int | None
    min_tokens: int = 0

    def key(self) -> tuple:
        """Requests with equal keys can share one generate call; seeded ones never share."""
        return (self.temperature, self.top_p, self.stop, self.min_tokens,
                object() if self.seed is not None else None)


def request_settings(req: ChatRequest, default_max_tokens: int) -> Settings:
    if req.n not in (None, 1):
        raise APIError(400, "n > 1 is not supported: send n requests (concurrent requests are batched)",
                       param="n", code="unsupported_value")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4:
        raise APIError(400, "at most 4 stop sequences", param="stop")
    return Settings(DEFAULT_TEMPERATURE if req.temperature is None else req.temperature,
                    1.0 if req.top_p is None else req.top_p,
                    req.max_completion_tokens or req.max_tokens or default_max_tokens,
                    tuple(s for s in stop if s), req.seed, req.min_tokens)


# -- batching (core.batcher) ---------------------------------------------------------------------
@dataclass
class Job:
    prompt: list[int]
    settings: Settings


def generate_group(generator, group: list[Job]) -> list[Completion]:
    """One batched generate call for requests with the same settings, each with its own max_tokens."""
    s = group[0].settings
    return generator.generate_ids([j.prompt for j in group], temperature=s.temperature, top_p=s.top_p,
                                  max_new_tokens=[j.settings.max_tokens for j in group], stop=list(s.stop),
                                  seed=s.seed, min_new_tokens=s.min_tokens)


# -- the app -------------------------------------------------------------------------------------
def usage(done: Completion) -> dict:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


def create_app(generator, role: str, model_name: str, api_key: str | None = None,
               default_max_tokens: int = 512, max_batch: int = 16, batch_wait_s: float = 0.005,
               render: str = "role") -> FastAPI:
    if role not in (HUMAN, GPT):
        raise ValueError(f"role must be {HUMAN!r} or {GPT!r}")
    if render not in RENDERS:
        raise ValueError(f"render must be one of {RENDERS}, not {render!r}")
    batcher = MicroBatcher(functools.partial(generate_group, generator), wait_s=batch_wait_s, max_batch=max_batch,
                           group_key=lambda job: job.settings.key())

    async def lifespan(app):
        yield
        await batcher.close()

    app = FastAPI(title="PlatoLM server", lifespan=lifespan)
    add_error_handlers(app)
    if api_key:
        add_key_check(app, api_key)

    @app.get("/health")
    async def health():
        return {"status": "ok", "role": role, "render": render, "model": model_name,
                "batched_requests": batcher.requests, "batches": batcher.batches}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "platolm", "role": role,
                                            "root": str(getattr(generator, "path", model_name)),
                                            "max_model_len": generator.max_context}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest):
        settings = request_settings(req, default_max_tokens)
        prompt = request_prompt(generator, role, req, render)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_sse(generator, prompt, settings, head, include_usage),
                                     media_type="text/event-stream")
        done = await batcher.submit(Job(prompt, settings))
        return {**head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                             "finish_reason": done.finish_reason, "logprobs": None}],
                "usage": usage(done)}

    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every error as an OpenAI-style JSON body; a server error's trace goes to the log, never to the client."""
    @app.exception_handler(APIError)
    async def api_error(request, err: APIError):
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, err: RequestValidationError):
        errors = err.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return APIError(400, "the request body is not valid JSON").response()
        where = [".".join(str(x) for x in e["loc"] if x != "body") for e in errors]
        problems = "; ".join(f"{w or 'body'}: {e['msg']}" for w, e in zip(where[:5], errors))
        return APIError(400, f"invalid request: {problems}", param=where[0] if where else None).response()

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        return APIError(err.status_code, str(err.detail),
                        type_="invalid_request_error" if err.status_code < 500 else "server_error").response()

    @app.exception_handler(Exception)
    async def server_error(request, err: Exception):
        traceback.print_exception(err, file=sys.stderr)
        return APIError(500, "internal server error", type_="server_error").response()


def add_key_check(app: FastAPI, api_key: str) -> None:
    """Every ``/v1`` request needs ``Authorization: Bearer KEY`` (compared in constant time)."""
    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return APIError(401, "missing or wrong API key (Authorization: Bearer KEY)",
                                code="invalid_api_key").response()
        return await call_next(request)


def _sse(generator, prompt: list[int], s: Settings, head: dict, include_usage: bool):
    """Server-sent events of one streamed reply (run in a worker thread by Starlette)."""
    def event(delta: dict, finish: str | None = None) -> str:
        chunk = {**head, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        return f"data: {json.dumps(chunk)}\n\n"

    stream = generator.stream_ids(prompt, temperature=s.temperature, top_p=s.top_p,
                                  max_new_tokens=s.max_tokens, stop=list(s.stop), seed=s.seed,
                                  min_new_tokens=s.min_tokens)
    try:
        yield event({"role": "assistant", "content": ""})
        for piece in stream:
            yield event({"content": piece})
        done = stream.completion
        yield event({}, done.finish_reason)
        if include_usage:
            yield f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage(done)})}\n\n"
        yield "data: [DONE]\n\n"
    except Exception as err:  # headers are sent already: report in-band, log the trace
        traceback.print_exception(err, file=sys.stderr)
        yield f"data: {json.dumps({'error': {'message': 'internal server error', 'type': 'server_error'}})}\n\n"
    finally:
        stream.close()


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flag(p, "--model", "--model-path", required=True, help="checkpoint dir, hub name, or 'smollm2'")
    p.add_argument("--role", choices=[HUMAN, GPT],
                   help=f"human: reply with the next human turn (Socratic); gpt: the next assistant turn "
                        f"(default: the role the checkpoint's {RUN_RECORD} records)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                   help=f"require this Bearer key (default: ${API_KEY_ENV}; prefer the variable, "
                        f"command lines are visible to other users)")
    p.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    p.add_argument("--template", choices=TEMPLATES,
                   help="--render role: the prompt template (default: the checkpoint's, else dyadic)")
    p.add_argument("--render", choices=RENDERS, default="role",
                   help="role: the project's template for --role (model.dyadic, as in training); chat-template: "
                        "the checkpoint's own chat template and nothing else, as vLLM renders a request (a "
                        "checkpoint the trainer saved writes its trained role's turns so)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--max-context", type=int, default=None, help="context limit (default: the model's)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="when a request gives no max_tokens")
    p.add_argument("--served-model-name", default=None, help="model id in /v1/models (default: the path's name)")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long the batcher waits for more requests to join a batch")
    args = p.parse_args(argv)
    name = args.served_model_name or Path(str(args.model).rstrip("/")).name
    role = served_role(args.model, args.role, args.render)
    if args.engine == "vllm":  # vLLM's own OpenAI server takes over this process
        cmd = vllm_command(args.model, role, args.template, args.host, args.port, name, args.max_context,
                           args.render)
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        env = dict(os.environ, **({"VLLM_API_KEY": args.api_key} if args.api_key else {}))
        os.execvpe(cmd[0], cmd, env)

    import uvicorn

    from model.generate import Generator

    generator = Generator(args.model, template=args.template, device=args.device, max_context=args.max_context)
    if args.render == "chat-template" and not generator.tokenizer.chat_template:
        raise UsageError(f"--render chat-template: {args.model} has no chat template")
    app = create_app(generator, role, name, args.api_key, args.max_new_tokens, args.max_batch,
                     args.batch_wait_ms / 1000, args.render)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}, reachable from other machines"
              + ("" if args.api_key else " and without an API key"), file=sys.stderr)
    how = "its own chat template" if args.render == "chat-template" else f"the {generator.template.template} template"
    print(f"serving {name} as role {role} ({how}, {args.engine}, context {generator.max_context}) on "
          f"http://{args.host}:{args.port}/v1" + (" (API key required)" if args.api_key else ""),
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def served_role(model: str, role: str | None, render: str) -> str:
    """``--role``, else the role the checkpoint records; with ``--render chat-template``, the checkpoint's
    template decides, so a different ``--role`` is only a label (a warning says so)."""
    from core.assets import resolve

    checkpoint = read_checkpoint(resolve(model))
    if role is None and checkpoint.role is None:
        raise UsageError(f"--role: {model} has no {RUN_RECORD} naming its trained role; give --role human "
                         f"(Socratic) or --role gpt (PlatoLM)")
    if render == "chat-template" and role is not None and role != checkpoint.chat_template_role:
        print(f"warning: --role {role}: the chat template of {model} writes {checkpoint.chat_template_role} turns "
              f"(--render chat-template uses it as it is)", file=sys.stderr)
    return role or checkpoint.role


# -- vLLM ----------------------------------------------------------------------------------------
def vllm_command(model: str, role: str, template: str | None, host: str, port: int, served_name: str,
                 max_context: int | None, render: str = "role") -> list[str]:
    """``vllm serve`` for a checkpoint, with a chat template that writes ``role`` turns (GPU machines only)."""
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is None or not torch.cuda.is_available():
        raise UsageError("--engine vllm needs a CUDA GPU and the vllm package (pip install vllm); "
                         "use --engine hf here")
    from core.assets import resolve

    cmd = ["vllm", "serve", resolve(model), "--host", host, "--port", str(port), "--served-model-name", served_name]
    if max_context:
        cmd += ["--max-model-len", str(max_context)]
    return cmd + vllm_chat_template(model, role, template, render)


def vllm_chat_template(model: str, role: str, template: str | None, render: str) -> list[str]:
    """vLLM's ``--chat-template`` option: none where the checkpoint's own template writes ``role`` turns (or
    ``--render chat-template`` asks for it as it is); for the dyadic template, the role's."""
    from core.assets import resolve

    checkpoint = read_checkpoint(resolve(model))
    if render == "chat-template":
        return []
    if checkpoint.template_for(template) == "dyadic":
        return ["--chat-template", role_template_file(model, role)]
    if checkpoint.chat_template_role != role:
        raise UsageError(f"--engine vllm: the chat template of {model} writes {checkpoint.chat_template_role} "
                         f"turns, not {role} (a checkpoint trained with --template chat as that role carries one "
                         f"that does); use --engine hf")
    return []


def role_template_file(model: str, role: str) -> str:
    """A file holding the dyadic chat template that writes the next ``role`` turn for this checkpoint's
    tokenizer (vLLM's ``--chat-template``), whichever role the checkpoint's own template writes."""
    import hashlib

    from core.assets import cache_dir, load_tokenizer
    from model.dyadic import dyadic_chat_template

    text = dyadic_chat_template(role, tokenizer=load_tokenizer(model))
    path = cache_dir() / f"dyadic-{role}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.jinja"
    atomic_write(path, lambda f: f.write(text))
    return str(path)


@asynccontextmanager
async def vllm_server(model: str, role: str, template: str | None, max_context: int | None):
    """Start ``vllm serve`` on a free local port for the duration of the block; yields its /v1 URL."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = vllm_command(model, role, template, "127.0.0.1", port, Path(model.rstrip("/")).name, max_context)
    print("$ " + " ".join(cmd) + " &", file=sys.stderr, flush=True)
    proc = await asyncio.create_subprocess_exec(*cmd)
    try:
        async with httpx.AsyncClient() as client:
            while True:  # vLLM loads and compiles for minutes
                if proc.returncode is not None:
                    raise RuntimeError(f"vllm serve exited with code {proc.returncode}")
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/health", timeout=2)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


if __name__ == "__main__":
    sys.exit(main())
