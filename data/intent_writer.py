"""Intents written by a chat model from whole conversations: ``python -m data.prepare intents``.

Every conversation of ``--data`` is shown whole to an OpenAI-compatible chat model (``--base-url``, ``--model``)
inside a prompt (``data/prompts/intent.txt``, or ``--prompt-file``; a ``{conversation}`` placeholder takes the
transcript) that asks what the person wanted from it, at a high level, in one or two sentences in the second
person, without the conversation's own wording. With ``--persona`` a second prompt (``data/prompts/persona.txt``,
or ``--persona-prompt-file``) asks how the person writes. ``--out`` gets the records back (ShareGPT, in input
order) with their ``intent`` (and ``persona``), ready for ``data.simulate --intents``, the trainer's
``--condition intent`` and ``eval.simulator``'s intent measures.

Resumable on ``core.engine``: every intent written is one fsynced line of ``OUT.log.jsonl`` (keyed by record
id, with the model and prompts that wrote it); a rerun asks only for the rest and rewrites ``--out``. A reply
that holds no usable intent (empty, or only a label or quotation marks; a reply cut at ``--max-new-tokens`` keeps
its complete sentences) fails its record: counted, its reason in ``OUT.log.failed.jsonl``, tried again by the
next run (exit status 1 meanwhile), never written as an empty intent. A conversation the model's context
cannot hold is skipped for good (``OUT.log.skipped.jsonl``).

Leakage of the summary into the data: for each intent, the share of its content words, and of its word
3-grams, that the conversation's first human turn holds verbatim (``data.intents.leakage``); the report (and
``--json``, ``--report``) gives their mean, median and distribution.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import openai

from core.conversation import HUMAN, BadRecord, BadRecordSummary, Conversation
from core.endpoint import Endpoint, Reply, is_context_exceeded
from core.engine import SKIPPED, Job, JobFailed, JobLog, Result, side_file
from core.errors import UsageError
from core.prompts import read_prompt
from data.intents import leakage, leakage_summary
from data.simulators import transcript

PROMPTS = Path(__file__).resolve().parent / "prompts"
DEFAULT_PROMPT, DEFAULT_PERSONA_PROMPT = PROMPTS / "intent.txt", PROMPTS / "persona.txt"
CONVERSATION = "{conversation}"
# a label a model may put before its answer ("Intent:", "**Goal:**", "The user's persona:")
_LABEL = re.compile(r"^\W*(?:the\s+)?(?:(?:user|person)'?s?\s+)?(?:intent|goal|persona)\W*:\W*", re.IGNORECASE)
_QUOTES = "\"'“”‘’`"


def usable_reply(reply: Reply, what: str) -> str:
    """The reply as one line, without a leading label or surrounding quotes; a reply cut at the token limit keeps
    its complete sentences (all of it when no sentence with a word ended). JobFailed (counted, retried next run)
    when no word is left."""
    text = _LABEL.sub("", " ".join(reply.text.split()), count=1).strip().strip(_QUOTES).strip()
    end = max(text.rfind(c) for c in ".!?")
    if reply.finish_reason == "length" and end > 0 and re.search(r"\w", text[:end]):
        text = text[:end + 1].strip(_QUOTES)
    if not re.search(r"\w", text):
        raise JobFailed(f"the reply holds no {what} (finish_reason {reply.finish_reason}, "
                        f"{len(reply.text)} characters: {reply.text[:80]!r})")
    return text


@dataclass(frozen=True)
class IntentWriter:
    """One chat model and its prompts; :meth:`write` is one record's job."""
    endpoint: Endpoint
    prompt: str
    persona_prompt: str | None = None
    max_tokens: int = 96
    temperature: float | None = None

    @property
    def identity(self) -> dict:
        """What wrote an intent (the model, and digests of the prompts): a log written otherwise is not continued."""
        def digest(text: str | None) -> str | None:
            return text and hashlib.sha256(text.encode()).hexdigest()[:12]

        return {"model": self.endpoint.model, "prompt": digest(self.prompt),
                "persona_prompt": digest(self.persona_prompt)}

    async def ask(self, prompt: str, conv: Conversation, what: str) -> str:
        messages = [{"role": "user", "content": prompt.replace(CONVERSATION, transcript(conv.turns))}]
        reply = await self.endpoint.chat(messages, max_tokens=self.max_tokens, temperature=self.temperature)
        return usable_reply(reply, what)

    async def write(self, conv: Conversation) -> dict | Result:
        try:
            intent = await self.ask(self.prompt, conv, "intent")
            persona = await self.ask(self.persona_prompt, conv, "persona") if self.persona_prompt else None
        except openai.BadRequestError as err:
            if not is_context_exceeded(err):
                raise
            return Result({"id": conv.id, "reason": "the conversation does not fit the model's context"}, SKIPPED)
        return {"id": conv.id, "intent": intent, **({"persona": persona} if persona else {}),
                "writer": self.identity}


def usable_conversations(convs: Iterable[Conversation], file: str, strict: bool,
                         summary: BadRecordSummary) -> list[Conversation]:
    """Conversations with a human turn, each id once (the others counted in ``summary``, or raised if strict)."""
    kept, seen = [], set()
    for conv in convs:
        problem = ("duplicate id" if conv.id in seen else
                   None if any(t.role == HUMAN for t in conv.turns) else "no human turn")
        if problem:
            if strict:
                raise BadRecord(file, conv.id, problem)
            summary.add(BadRecord(file, conv.id, problem))
            continue
        seen.add(conv.id)
        kept.append(conv)
    return kept


def open_log(out: str | Path, identity: dict) -> JobLog:
    """``OUT.log.jsonl`` (and its ``.failed`` / ``.skipped`` side files); one written by another model or prompt
    is refused rather than mixed in."""
    log = JobLog(side_file(Path(out), "log"), side_files=True)
    other = next((r["writer"] for r in log.done.values() if r.get("writer") != identity), None)
    if other is not None:
        raise UsageError(f"{log.path} holds intents written by {other}, not {identity}; use another --out "
                         f"or remove it")
    if log.done:
        print(f"resuming: {len(log.done)} intents already written ({log.path})", file=sys.stderr)
    return log


def with_intents(convs: Iterable[Conversation], done: dict) -> Iterator[Conversation]:
    """The conversations that have an intent, carrying it (and a persona) as top-level fields."""
    for conv in convs:
        rec = done.get(conv.id)
        if rec is not None:
            fields = {k: rec[k] for k in ("intent", "persona") if k in rec}
            extra = {k: v for k, v in conv.extra.items() if k not in ("intent", "persona")}
            yield Conversation(conv.id, conv.turns, conv.system, {**extra, **fields})


def leakage_report(convs: Sequence[Conversation]) -> dict:
    """How much of each intent the conversation's first human turn holds verbatim (data.intents.leakage)."""
    shares = [leakage(c.extra["intent"], next(t.text for t in c.turns if t.role == HUMAN)) for c in convs]
    return {"content_words": leakage_summary([s[0] for s in shares]),
            "trigrams": leakage_summary([s[1] for s in shares])}


def describe(report: dict) -> str:
    words, grams = report["leakage"]["content_words"], report["leakage"]["trigrams"]
    return (f"wrote {report['intents']} of {report['conversations']} intents -> {report['out']} "
            f"({report['written_now']} new, {report['failed']} failed, {report['skipped']} skipped)\n"
            f"leakage into the first human turn: content words mean {words['mean']} (median {words['median']}; "
            + ", ".join(f"{b}: {n}" for b, n in words["distribution"].items())
            + f"), word 3-grams mean {grams['mean']} (median {grams['median']})")


def write_intents(args) -> int:
    """``data.prepare intents``: write the intents still missing, then ``--out`` and the report."""
    from core.engine import run_jobs
    from core.formats import iter_input, write_output

    prompt = read_prompt(args.prompt_file or DEFAULT_PROMPT, [CONVERSATION])
    persona_path = args.persona_prompt_file or (DEFAULT_PERSONA_PROMPT if args.persona else None)
    endpoint = Endpoint(args.base_url, args.model, args.api_key_env, args.max_retries, what="intent writer")
    persona_prompt = read_prompt(persona_path, [CONVERSATION]) if persona_path else None
    writer = IntentWriter(endpoint, prompt, persona_prompt, args.max_new_tokens, args.temperature)
    convs = usable_conversations(iter_input(args.inp, args.strict, args.summary), args.inp, args.strict,
                                 args.summary)[:args.n]
    if not convs:
        raise UsageError(f"{args.inp}: no conversation with a human turn to write an intent for")
    log = open_log(args.out, writer.identity)
    jobs = log.todo(Job(c.id, functools.partial(writer.write, c)) for c in convs)
    tally = run_jobs(jobs, args.concurrency, sink=log, desc="intents", unit="intent")
    written = list(with_intents(convs, log.done))
    write_output(args.out, written)
    report = {"out": str(args.out), "conversations": len(convs), "intents": len(written),
              "written_now": tally.done, "failed": tally.failed, "skipped": len(log.skipped) + tally.skipped,
              **writer.identity, "prompt_file": str(args.prompt_file or DEFAULT_PROMPT),
              "leakage": leakage_report(written) if written else None, "log": str(log.path)}
    if written:
        print(describe(report), file=sys.stderr)
    if args.report:
        from core.conversation import atomic_write

        atomic_write(args.report, lambda f: json.dump(report, f, indent=1))
    if args.json:
        print(json.dumps(report))
    tally.raise_if_failed("intents", log.paths["failed"])
    return 0
