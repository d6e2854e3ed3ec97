"""A real local OpenAI-compatible chat server with fixed latency and injected faults, for tests and benchmarks.

It answers ``POST /v1/chat/completions`` deterministically from the conversation it is sent, so a
test can check what the caller did with the reply. It can play either side of a SocraticChat
session: ``--role gpt`` answers as the teacher, ``--role human`` asks the next question like the
user simulator served by ``model.serve --role human``. "Tokens" are whitespace-separated words:
with ``--max-context N`` a prompt of N words or more gets a 400 ``context_length_exceeded``, and a
reply that would run past N words is cut with ``finish_reason: "length"``, as a real server does.

As ``--role human`` with ``--end-after K`` it writes the end-of-conversation marker
(``model.dyadic.END_OF_CONVERSATION``) instead of question K+1, like a Socratic trained with ``--end-token``.
``--log-requests FILE`` appends every request body to FILE (JSONL), for tests of what a caller sends.
``--prefix TEXT`` starts every reply with TEXT (two assistants that differ in a known way); as ``--role human``,
``--use-seed`` makes the question depend on the request's ``seed`` too (a sampling simulator), and
``--misbehave empty|assistant|repeat`` makes it fail as a simulator can (after ``--misbehave-after`` good
questions): empty turns, turns written as an
assistant would, or the previous human turn again; ``--copy-intent`` makes it a simulator that states the
intent of its system message (``Intent: ...``, as ``model.dyadic.intent_system`` writes it) as every question.
``--role judge`` rates what it is sent: asked for a verdict
between A and B (the request mentions ``[[A]]``), ``[[A]]`` when ``--prefer`` occurs before ``--avoid`` (or
neither occurs: a judge with a position bias), else ``[[B]]``; asked for a rating, ``Rating: [[9]]`` when the
request holds ``--prefer``, ``[[2]]`` when it holds ``--avoid``, else a rating from 1 to 10 drawn from a hash of
the request; every ``--unsure-every``-th judge reply holds no verdict at all.
``--hold N`` makes chat requests wait for each other in groups of N (a barrier) and ``/stats`` count the
most ever in flight at once (``in_flight_max``): a client's concurrency, seen by events, not by timing.
``--stall-after N`` answers N requests, then holds every further one unanswered until ``POST /stall`` with
``{"more": M}`` lets M more through (``null``: all of them): a client run that cannot finish before a test stops it.

Faults: every ``--fault-every``-th request (counted over the whole server) fails, the kinds taken in
turn from ``--faults``: ``429`` (with a ``retry-after-ms`` header), ``500``, ``drop`` (the connection
is closed half-way through the body), ``garbage`` (a 200 whose body is not JSON), ``empty`` (valid
JSON without choices) and ``hang`` (the answer comes only after ``--hang`` seconds, past a client's
timeout). ``GET /stats`` returns how many requests were served and how many faults of each kind.

Usage::

    python -m tests.fault_teacher --port 0 --port-file port.txt --latency 0.05 \\
        --fault-every 3 --faults 429,500,drop,garbage,empty [--role gpt|human] [--max-context 200] \\
        [--answer-words 12] [--api-key-env TEACHER_KEY] [--end-after K] [--log-requests FILE] [--stall-after N]
    python -m tests.fault_teacher --role judge --prefer "Glad to help" --avoid Whatever [--unsure-every 5]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import socket
import sys
from collections import Counter
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from model.dyadic import END_OF_CONVERSATION, INTENT_LABEL

FAULT_KINDS = ("429", "500", "drop", "garbage", "empty", "hang")
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


class _DroppedConnection(Response):
    """Starts a 200 response, sends part of the body, then lets the server close the connection."""

    async def __call__(self, scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")]})
        await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-dropped", "cho',
                    "more_body": True})
        raise ConnectionAbortedError("fault injected: connection dropped")


class _QuietDrops(logging.Filter):
    """Keeps the server log free of the tracebacks the injected drops cause on purpose."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionAbortedError)


def _words(n: int, key: str) -> list[str]:
    digest = hashlib.sha256(key.encode()).digest()
    return [WORDS[digest[i % len(digest)] % len(WORDS)] for i in range(n)]


ASSISTANT_LIKE = ("Certainly! Here is a detailed explanation. First, it is important to understand the basics. "
                  "I hope this helps! Let me know if you have any other questions.")


def judge_reply(args, messages: list[dict], n: int) -> str:
    """``--role judge``: a verdict or a rating from what the request holds (see the module docstring)."""
    text = "\n".join(str(m.get("content", "")) for m in messages)
    if args.unsure_every and n % args.unsure_every == 0:
        return "Both have their merits; I cannot decide."
    at = {w: text.find(w) if w and w in text else len(text) + 1 for w in (args.prefer, args.avoid)}
    if "[[A]]" in text:
        return "Verdict: [[A]]" if at[args.prefer] <= at[args.avoid] else "Verdict: [[B]]"
    if args.prefer and args.prefer in text:
        return "Rating: [[9]]"
    if args.avoid and args.avoid in text:
        return "Rating: [[2]]"
    return f"Rating: [[{1 + hashlib.sha256(text.encode()).digest()[0] % 10}]]"


def human_words(args, turns: list[dict], body: dict, last: str) -> list[str]:
    """``--role human``: the next question (or the failure ``--misbehave`` names)."""
    n = sum(m["role"] == "assistant" for m in turns) + 1
    asked = [str(m.get("content", "")) for m in turns if m["role"] == "user"]
    misbehaving = n > args.misbehave_after
    if misbehaving and args.misbehave == "empty":
        return []
    if misbehaving and args.misbehave == "assistant":
        return ASSISTANT_LIKE.split() + [f"({n})"]
    if misbehaving and args.misbehave == "repeat" and asked:
        return asked[-1].split()
    intent = [line[len(INTENT_LABEL):] for m in body.get("messages") or [] if m.get("role") == "system"
              for line in str(m.get("content", "")).splitlines() if line.startswith(INTENT_LABEL)]
    if args.copy_intent and intent:
        return intent[0].split()
    seed = f"|{body.get('seed')}" if args.use_seed else ""
    return ["Question", f"{n}:"] + _words(args.answer_words, f"q{n}|{last}{seed}") + ["?"]


def teacher_answer(round_no: int, question: str, answer_words: int = 12) -> str:
    """What this server answers (``--role gpt``) to ``question`` asked as the conversation's ``round_no``-th."""
    return " ".join(["Answer", f"{round_no}:", *_words(answer_words, f"a{round_no}|{question}"), "."])


def _error(status: int, message: str, code: str | None = None, etype: str = "invalid_request_error"):
    return JSONResponse({"error": {"message": message, "type": etype, "param": None, "code": code}},
                        status_code=status)


def add_hold(app: FastAPI, n: int, stats: Counter) -> None:
    """Chat requests wait for each other in groups of ``n``; ``in_flight_max``: the most ever in flight at once."""
    barrier, state = asyncio.Barrier(n), {"in_flight": 0}

    @app.middleware("http")
    async def hold(request: Request, call_next):
        if request.url.path != "/v1/chat/completions":
            return await call_next(request)
        state["in_flight"] += 1
        stats["in_flight_max"] = max(stats["in_flight_max"], state["in_flight"])
        try:
            await barrier.wait()
            return await call_next(request)
        finally:
            state["in_flight"] -= 1


def make_app(args) -> FastAPI:
    app = FastAPI()
    stats: Counter[str] = Counter()
    state = {"seq": 0, "faults": 0, "limit": args.stall_after or None, "gate": asyncio.Event()}
    faults = [f for f in args.faults.split(",") if f] if args.faults else []
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.hold:
        add_hold(app, args.hold, stats)

    def next_fault() -> str | None:
        state["seq"] += 1
        if not faults or args.fault_every <= 0 or state["seq"] % args.fault_every:
            return None
        kind = faults[state["faults"] % len(faults)]
        state["faults"] += 1
        return kind

    @app.get("/stats")
    async def get_stats():
        return dict(stats)

    @app.post("/stall")
    async def stall(request: Request):
        more = (await request.json()).get("more")
        state["limit"] = None if more is None else stats["ok"] + int(more)
        gate, state["gate"] = state["gate"], asyncio.Event()
        gate.set()  # the held requests look again
        return {"ok": stats["ok"], "limit": state["limit"]}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": args.model, "object": "model", "owned_by": "tests"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if key is not None and request.headers.get("authorization") != f"Bearer {key}":
            stats["401"] += 1
            return _error(401, "invalid api key", "invalid_api_key", "authentication_error")
        body = await request.json()
        messages = body.get("messages") or []
        if args.log_requests:
            with open(args.log_requests, "a", encoding="utf-8") as f:
                f.write(json.dumps(body) + "\n")
        if args.latency:
            await asyncio.sleep(args.latency)
        fault = next_fault()
        stats["requests"] += 1
        if fault:
            stats[fault] += 1
        if fault == "429":
            return JSONResponse({"error": {"message": "rate limited (injected)", "type": "requests",
                                           "code": "rate_limit_exceeded"}},
                                status_code=429, headers={"retry-after-ms": "20"})
        if fault == "500":
            return _error(500, "internal error (injected)", None, "server_error")
        if fault == "drop":
            return _DroppedConnection()
        if fault == "garbage":
            return Response(b'{"choices": [{"message": <<not json>>', media_type="application/json")
        if fault == "empty":
            return JSONResponse({"id": "chatcmpl-empty", "object": "chat.completion", "choices": []})
        if fault == "hang":
            await asyncio.sleep(args.hang)
        # --stall-after: held until POST /stall lets it through; no await from this check to the answer
        while state["limit"] is not None and stats["ok"] >= state["limit"]:
            stats["held"] += 1
            await state["gate"].wait()

        turns = [m for m in messages if m.get("role") in ("user", "assistant")]
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        if args.max_context and prompt_tokens >= args.max_context:
            stats["context_length_exceeded"] += 1
            return _error(400, f"prompt of {prompt_tokens} tokens does not fit the context of "
                               f"{args.max_context}", "context_length_exceeded")
        n_user = sum(m["role"] == "user" for m in turns)
        last = str(turns[-1].get("content", "")) if turns else ""
        if args.role == "human" and args.end_after and n_user >= args.end_after:
            words = [END_OF_CONVERSATION]
        elif args.role == "human":
            words = human_words(args, turns, body, last)
        elif args.role == "judge":
            words = judge_reply(args, messages, stats["ok"] + 1).split()
        else:
            words = teacher_answer(n_user, last, args.answer_words).split()
        if args.prefix and words:
            words = args.prefix.split() + words
        finish = "stop"
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if limit and len(words) > limit:
            words, finish = words[:limit], "length"
        if args.max_context and prompt_tokens + len(words) > args.max_context:
            words, finish = words[: args.max_context - prompt_tokens], "length"
        stats["ok"] += 1
        return {
            "id": f"chatcmpl-{state['seq']}", "object": "chat.completion", "created": 0,
            "model": body.get("model", args.model),
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": " ".join(words)}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                      "total_tokens": prompt_tokens + len(words)},
        }

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fault_teacher", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (see --port-file)")
    p.add_argument("--port-file", help="write the bound port here once the server accepts connections")
    p.add_argument("--model", default="fault-teacher")
    p.add_argument("--role", choices=["gpt", "human", "judge"], default="gpt")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    p.add_argument("--fault-every", type=int, default=0, help="every K-th request fails (0: never)")
    p.add_argument("--faults", default="429,500,drop,garbage,empty", help=f"comma list of {FAULT_KINDS}")
    p.add_argument("--hang", type=float, default=5.0, help="seconds a 'hang' fault waits")
    p.add_argument("--max-context", type=int, default=0, help="context in words (0: unlimited)")
    p.add_argument("--answer-words", type=int, default=12)
    p.add_argument("--api-key-env", help="require `Authorization: Bearer $VAR`")
    p.add_argument("--end-after", type=int, default=0, help="--role human: end the conversation after K rounds")
    p.add_argument("--log-requests", help="append every request body to this JSONL file")
    p.add_argument("--hold", type=int, default=0, help="chat requests wait for each other in groups of N")
    p.add_argument("--prefix", default="", help="start every reply with this text")
    p.add_argument("--use-seed", action="store_true", help="--role human: the question depends on the seed too")
    p.add_argument("--misbehave", choices=["empty", "assistant", "repeat"],
                   help="--role human: empty turns, assistant-like turns, or the previous human turn again")
    p.add_argument("--misbehave-after", type=int, default=0, help="--misbehave: after this many good questions")
    p.add_argument("--copy-intent", action="store_true", help="--role human: ask the system message's intent")
    p.add_argument("--prefer", default="", help="--role judge: the text it prefers")
    p.add_argument("--avoid", default="", help="--role judge: the text it dislikes")
    p.add_argument("--unsure-every", type=int, default=0, help="--role judge: every K-th reply has no verdict")
    p.add_argument("--stall-after", type=int, default=0, help="hold requests after N answers (0: never)")
    args = p.parse_args(argv)
    bad = [f for f in args.faults.split(",") if f and f not in FAULT_KINDS]
    if bad:
        p.error(f"unknown fault kinds {bad}; choose from {FAULT_KINDS}")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(args), log_level="warning", access_log=False, backlog=1024)
    server = uvicorn.Server(config)
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())

    async def serve():
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                return await task
            await asyncio.sleep(0.01)
        if args.port_file:
            tmp = Path(args.port_file).with_suffix(".tmp")
            tmp.write_text(str(port))
            os.replace(tmp, args.port_file)
        print(f"fault teacher listening on http://{args.host}:{port}/v1", file=sys.stderr, flush=True)
        await task

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
