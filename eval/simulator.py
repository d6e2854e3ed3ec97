"""How good is a user simulator? Perplexity, diversity, human-likeness, role adherence, termination, intents.

Any simulator can be measured: a Socratic checkpoint, an untrained base model, or a simulator behind an
OpenAI-compatible endpoint (``model.serve --role human``, vLLM serving a Socratic checkpoint, or a
role-play chat model with ``--simulator-kind roleplay``), on any held-out conversations.

* ``perplexity`` (a local model): mean per-token negative log-likelihood of the real human turns given
  their history, rendered with the model's own template (``--template dyadic|chat``) and masked by
  ``model.dyadic.Encoder`` (loss role ``human``); each conversation is its first ``--max-context`` tokens,
  as in training. Batched by length over a bounded pool of conversations (memory flat in their number),
  with only the scored positions sent through the LM head and each row cut after its last scored token.
  ``--details FILE`` keeps one line per conversation and makes a rerun resume. ``--condition intent`` (or
  ``intent,persona``) scores each record's human turns given its intent in the system prompt
  (``model.dyadic.intent_system``) and the very same tokens without it: a conversation is cut on whole turns,
  as many as fit ``--max-length`` with the longer prompt (records without an intent are skipped, counted).
* ``diversity``: ``--n`` opening questions sampled in free mode (or a corpus's real openings with
  ``--data``): the share of distinct word unigrams (distinct-1) and the mean pairwise cosine similarity
  of their MiniLM embeddings (off-diagonal; lower = more diverse).
* ``human-likeness``: the share of sampled openings (or of a corpus's real human turns, ``--data``) that
  a detector (``eval.detector``; ``--detector default|PATH|judge:MODEL@URL``) judges human. With
  ``--data`` the turns the detector was trained on are left out (counted).
* ``role-adherence``: on probes whose last assistant turn invites a role swap (it asks the user a
  question, asks for help, or hands the conversation over; ``eval/probes/role_swap.jsonl``), the share of
  generated next turns that stay in the user's role, judged by the same detector.
* ``termination`` (a simulator with a learned end marker: the one its checkpoint records,
  ``model.dyadic.END_OF_CONVERSATION`` or the original experiment's ``<e>``): after
  every assistant turn of held-out conversations, does the model end there? Gold: it ends after the last
  assistant turn of a conversation that really ended (``--ended auto``: the rule the trainer's
  ``--end-token`` learns from, ``model.dyadic.really_ended``: a record's ``"ended"``, a session its simulator
  ended, a conversation without a segment suffix or the last segment of a split one; ``all``: every
  conversation ended). A local model ends where p(the marker turn | history) >= ``--threshold`` (history: the last
  ``--max-context`` tokens); an endpoint ends where its sampled next turn is the marker.
* ``intent-adherence`` (``eval.intent_measures``): one session per intent of ``--intents`` (the simulator opens it,
  the teacher answers, on data.simulate's session machinery; ``--save`` keeps them and resumes), each matched by
  MiniLM similarity against its own intent and ``--candidates`` - 1 others: top-1 accuracy against chance 1/K;
  ``--data`` matches real conversations carrying intents instead; ``--judge-model`` adds a 1-10 judge; with
  ``--end-rule learned`` the share of sessions ended after their first round.
* ``goal-leakage``: the share of an intent's content words (and word 3-grams) the first human turn states: the
  simulator's openings for ``--intents``, or the first turns of ``--data``.

Bad input never stops a run: records that cannot be read, conversations with no human turn, turns past
the context, failed or empty generations are skipped or marked, counted by reason in the JSON
(``skipped``, ``skipped_reasons``) and named on stderr. Perplexity needs a local model: an endpoint
gives no log-probabilities of a given text, and saying ``--base-url`` there is an error that says so.

Results (contract with ``eval.tables``): every subcommand takes ``--name NAME`` (the row label, e.g.
"Socratic", "untrained SmolLM2", "ShareGPT humans", "role-play gpt-3.5-turbo"), ``--out FILE`` (the JSON
written atomically) and ``--json`` (print it). The JSON is one object: ``name``, ``metric`` (perplexity |
diversity | human_likeness | role_adherence | termination | intent_adherence | goal_leakage), ``model`` or
``data``, and the metric's fields: perplexity -> nll, ppl, tokens, conversations, skipped (``--condition``:
also nll_without, nll_difference); diversity -> distinct_1, pairwise_similarity, n, embedder; human_likeness
-> human_likeness (share judged human), n, detector, detector_accuracy; role_adherence -> role_adherence, n,
probes; termination -> precision, recall, f1, n; intent_adherence -> intent_accuracy, intent_chance,
candidates, n (intent_judge, first_round_end, real_*); goal_leakage -> goal_leakage, goal_leakage_3gram,
goal_leakage_n (real_*). Other fields are extra detail.

Simulator sources (generation metrics): ``--model PATH --template dyadic|chat`` loads a model here
(``model.generate.Generator``, role human, batched ``--concurrency`` at a time); ``--base-url URL --model
NAME`` calls an endpoint through ``core.endpoint.Endpoint``, built by ``data.simulators.build_simulator``
from a ``SimulatorSpec`` and driven by ``core.engine``. A ``socratic`` endpoint is sent the
conversation as it is (``user`` = the human's turns, ``assistant`` = the assistant's) and replies with the
next human turn; a ``roleplay`` one is ``data.simulators.RoleplaySimulator`` (a chat model
prompted to act as the user). Sampling defaults are the paper's (temperature 0.7, no top-p).

Usage::

    python -m eval.simulator perplexity --model runs/socratic --data heldout.json --template dyadic \\
        --max-context 2048 --limit 500 --name Socratic --out results/simulator/socratic-ppl.json --json
    python -m eval.simulator diversity --model runs/socratic --n 200 --name Socratic --out ...
    python -m eval.simulator diversity --data heldout.json --n 200 --name "ShareGPT humans" --out ...
    python -m eval.simulator human-likeness --base-url http://127.0.0.1:8000/v1 --name Socratic --out ...
    python -m eval.simulator role-adherence --base-url https://api.openai.com/v1 --model gpt-3.5-turbo \\
        --simulator-kind roleplay --name "role-play gpt-3.5-turbo" --out ...
    python -m eval.simulator termination --model runs/socratic-end --data heldout.json --name Socratic --out ...
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import math
import random
import re
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from data.simulators import DEFAULT_ROLEPLAY_PROMPT, Sampling, SimulatorSpec
from core.conversation import GPT, HUMAN, BadRecord, BadRecordSummary, Conversation, Turn, atomic_write
from model.checkpoint import read_checkpoint
from model.dyadic import (CONDITIONS, END_OF_CONVERSATION, IGNORE_INDEX, TEMPLATES, Encoder, conditioned_system,
                          default_system, really_ended)
from core.errors import UsageError
from core.options import MAX_RETRIES, add_flag
from core.runner import command

METRICS = ("perplexity", "diversity", "human_likeness", "role_adherence", "termination", "intent_adherence",
           "goal_leakage")
DEFAULT_PROBES = Path(__file__).resolve().parent / "probes" / "role_swap.jsonl"
ENDED = ("auto", "all")
INTENT_COMMANDS = ("intent-adherence", "goal-leakage")
_WORD = re.compile(r"\w+")


# -- perplexity: batched scoring of labelled tokens -----------------------------------------------------
class TokenScorer:
    """Sum of -log p(token | prefix) over the labelled tokens of each row, many rows per forward pass.

    Rows are cut after their last labelled token (later tokens cannot change the score), sorted by length
    and packed into batches of at most ``batch_tokens`` padded tokens. Only the positions that predict a
    labelled token go through the LM head (a pre-hook on the output embeddings hands it just those
    hidden states), so neither the compute nor the memory of full-vocabulary logits is spent elsewhere.
    """

    def __init__(self, model, pad_id: int, device: str, batch_tokens: int = 4096, max_batch: int = 64):
        import torch

        self.model, self.pad_id, self.device = model, pad_id, device
        self.batch_tokens, self.max_batch = batch_tokens, max_batch
        self.head = model.get_output_embeddings()
        self.torch = torch

    @staticmethod
    def trim(row: dict) -> tuple[list[int], list[int]]:
        labels = row["labels"]
        last = max((i for i, x in enumerate(labels) if x != IGNORE_INDEX), default=-1)
        return row["input_ids"][:last + 1], labels[:last + 1]

    def score(self, rows: Sequence[dict]) -> list[tuple[float, int]]:
        """(NLL sum, scored tokens) of every row, in the order given."""
        trimmed = [self.trim(r) for r in rows]
        order = sorted(range(len(rows)), key=lambda i: len(trimmed[i][0]), reverse=True)
        out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
        start = 0
        while start < len(order):
            width, end = len(trimmed[order[start]][0]), start + 1
            while end < len(order) and end - start < self.max_batch and (end - start + 1) * width <= self.batch_tokens:
                end += 1
            for i, res in zip(order[start:end], self._batch([trimmed[i] for i in order[start:end]])):
                out[i] = res
            start = end
        return out

    def _batch(self, rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, int]]:
        torch = self.torch
        width = max(len(ids) for ids, _ in rows)
        # right padding and no attention mask: in a causal model a pad only ever follows a row's real tokens,
        # so it cannot change them, and the unmasked causal attention takes the fast kernels
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for r, (row_ids, row_labels) in enumerate(rows):
            ids[r, :len(row_ids)] = torch.tensor(row_ids)
            labels[r, :len(row_labels)] = torch.tensor(row_labels)
        # position t-1 predicts the token at t; a labelled first token has no history and is not scored
        r_idx, t_idx = torch.nonzero(labels[:, 1:] != IGNORE_INDEX, as_tuple=True)
        targets = labels[r_idx, t_idx + 1].to(self.device)
        logits = self._selected_logits(ids.to(self.device), r_idx, t_idx)
        nll = -torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None])[:, 0]
        sums = torch.zeros(len(rows), dtype=torch.float64).index_add_(0, r_idx, nll.double().cpu())
        counts = torch.bincount(r_idx, minlength=len(rows))
        return [(float(s), int(c)) for s, c in zip(sums, counts)]

    def _selected_logits(self, ids, r_idx, t_idx):
        """Logits at the (row, position) pairs only: [N, vocab]."""
        torch = self.torch
        used = []

        def only_selected(module, args):
            used.append(True)
            return (args[0][r_idx.to(args[0].device), t_idx.to(args[0].device)].unsqueeze(0), *args[1:])

        hook = self.head.register_forward_pre_hook(only_selected) if self.head is not None else None
        try:
            with torch.inference_mode():
                logits = self.model(input_ids=ids, use_cache=False).logits
        finally:
            if hook is not None:
                hook.remove()
        if used:
            return logits[0]
        return logits[r_idx.to(logits.device), t_idx.to(logits.device)]  # models that bypass the head module


def load_scorer(model_path: str, device: str, batch_tokens: int) -> tuple[TokenScorer, object, int]:
    """The model (eval mode, float32 on a CPU), its tokenizer and its context length."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.assets import resolve
    from model.generate import default_max_context, pick_device, pick_dtype

    path = resolve(model_path)
    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(None, device)).to(device).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return TokenScorer(model, pad or 0, device, batch_tokens), tokenizer, default_max_context(model.config, tokenizer)


def local_scorer(args) -> tuple[TokenScorer, Encoder, int]:
    """The local simulator's scorer, its human-role encoder (uncut: callers choose the window) and the usable
    ``--max-context`` (no longer than the model's context)."""
    scorer, tokenizer, context = load_scorer(args.model, args.device, args.batch_tokens)
    max_length = min(args.max_context, context)
    if max_length < args.max_context:
        print(f"note: --max-context {args.max_context} is past the model's context; using {max_length}",
              file=sys.stderr)
    return scorer, Encoder(tokenizer, HUMAN, args.template, max_length=sys.maxsize, system=args.system), max_length


def encode_window(encoder: Encoder, convs: Iterable[Conversation], file: str, max_length: int,
                  summary: BadRecordSummary, counts: Counter) -> Iterator[dict]:
    """Encoded conversations cut to their first ``max_length`` tokens; unusable ones counted, not yielded."""
    for row in encoder.encode_many(convs, file):
        if isinstance(row, BadRecord):
            summary.add(row)
            continue
        if len(row["input_ids"]) > max_length:
            counts["truncated"] += 1
            row = {**row, "input_ids": row["input_ids"][:max_length], "labels": row["labels"][:max_length]}
            if all(x == IGNORE_INDEX for x in row["labels"][1:]):
                summary.add(BadRecord(file, row["id"], "no human token within max_length", f"max_length={max_length}"))
                continue
        yield row


def pooled(rows: Iterable[dict], pool: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == pool:
            yield batch
            batch = []
    if batch:
        yield batch


class Details:
    """``--details FILE``: one line per scored conversation; a rerun with the same options skips them."""

    def __init__(self, path: str | None, options: dict):
        from core.appendlog import AppendLog

        self.log, self.done = (AppendLog(path) if path else None), {}
        if self.log is None:
            return
        records = self.log.read()
        if records and records[0].get("options") != options:
            raise UsageError(f"{path} was written with other options ({records[0].get('options')}); "
                             f"use another --details file or remove it")
        if not records:
            self.log.append({"options": options})
        self.done = {r["key"]: r for r in records[1:]}
        if self.done:
            print(f"resuming: {len(self.done)} conversations already scored in {path}", file=sys.stderr)

    def add(self, scored: list[dict]) -> None:
        if self.log is not None:
            self.log.append_many(scored)


def scored_units(scorer: TokenScorer, units: list[dict]) -> dict[str, dict]:
    """Each unit's ``{"key", "nll", "tokens"}`` (NLL summed over its first row's labelled tokens); a unit of two
    rows (given the intent, without it) adds ``nll_without``, over the same tokens."""
    scores = iter(scorer.score([row for u in units for row in u["rows"]]))
    out = {}
    for u in units:
        (nll, tokens), *rest = [next(scores) for _ in u["rows"]]
        out[u["key"]] = {"key": u["key"], "nll": nll, "tokens": tokens, **({"nll_without": rest[0][0]} if rest else {})}
    return out


def perplexity(args) -> dict:
    from tqdm import tqdm

    from core.formats import iter_input

    if args.base_url or str(args.model).startswith(("http://", "https://")):
        raise UsageError("perplexity needs a local model (--model PATH): an OpenAI-compatible endpoint does not "
                         "return the log-probabilities of a given conversation's tokens")
    scorer, encoder, max_length = local_scorer(args)
    options = {"model": str(args.model), "data": str(args.data), "template": args.template,
               "max_length": max_length, "system": args.system,
               **({"condition": args.condition} if args.condition else {})}
    details = Details(args.details, options)
    summary, counts = BadRecordSummary(), Counter()
    convs = iter_input(args.data, summary=summary)
    if args.condition:
        units = conditioned_units(encoder, convs, args, max_length, summary, counts)
    else:
        units = ({"key": r["key"], "rows": [r]} for r in _keyed(encode_window(encoder, convs, str(args.data),
                                                                              max_length, summary, counts)))
    total, started = Counter(), time.perf_counter()
    with tqdm(total=args.limit, unit="conv", desc="perplexity", file=sys.stderr, disable=None) as bar:
        for pool in pooled(itertools.islice(units, args.limit), args.pool):
            fresh = scored_units(scorer, [u for u in pool if u["key"] not in details.done])
            details.add(list(fresh.values()))
            for u in pool:
                total.update({k: v for k, v in (fresh.get(u["key"]) or details.done[u["key"]]).items() if k != "key"})
                total["conversations"] += 1
            bar.update(len(pool))
            bar.set_postfix(tokens=total["tokens"], ppl=f"{math.exp(total['nll'] / total['tokens']):.2f}"
                            if total["tokens"] else "-")
    if summary.total:
        print(summary.report("conversations"), file=sys.stderr)
    if not total["tokens"]:
        raise UsageError(f"{args.data}: no conversation with a human turn to score ({summary.total} skipped)")
    nll = total["nll"] / total["tokens"]
    return {"metric": "perplexity", "model": str(args.model), "data": str(args.data), "template": args.template,
            "max_length": max_length, "nll": round(nll, 6), "ppl": round(math.exp(nll), 4), "tokens": total["tokens"],
            **(condition_fields(args.condition, nll, total) if args.condition else {}),
            "conversations": total["conversations"], "truncated": counts["truncated"], "skipped": summary.total,
            "skipped_reasons": dict(summary.counts), "seconds": round(time.perf_counter() - started, 2)}


def _keyed(rows: Iterable[dict]) -> Iterator[dict]:
    for i, row in enumerate(rows):
        yield {**row, "key": f"{i}:{row['id']}"}


# -- perplexity given the intent -----------------------------------------------------------------------
def condition_fields(condition: str, nll: float, total: Counter) -> dict:
    without = total["nll_without"] / total["tokens"]
    return {"condition": condition, "nll_without": round(without, 6), "ppl_without": round(math.exp(without), 4),
            "nll_difference": round(without - nll, 6)}


def token_count(encoder: Encoder, turns: Sequence[Turn], system: str) -> int:
    t = encoder.template
    return len(encoder.tokenizer(t.render(turns, system).text, add_special_tokens=t.add_special_tokens)["input_ids"])


def whole_turns_within(encoder: Encoder, turns: Sequence[Turn], system: str, max_length: int) -> int:
    """The most leading turns that fit ``max_length`` tokens after ``system`` (binary search; 0: not one)."""
    if token_count(encoder, turns, system) <= max_length:
        return len(turns)
    lo, hi = 0, len(turns) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if token_count(encoder, turns[:mid], system) <= max_length else (lo, mid - 1)
    return lo


def intent_pair(encoder: Encoder, conv: Conversation, condition: str, system: str | None, max_length: int,
                file: str) -> list[dict] | None:
    """The conversation's rows given its intent and without it, over the same leading whole turns (as many as
    fit ``max_length`` with the longer prompt), scoring the same human tokens; None when it has no intent."""
    base = default_system(HUMAN, conv, system)
    given = conditioned_system(conv, base, condition, file)
    if given == base:
        return None
    cut = Conversation(conv.id, conv.turns[:whole_turns_within(encoder, conv.turns, given, max_length)])
    if not any(t.role == HUMAN for t in cut.turns):
        raise BadRecord(file, conv.id, "no whole human turn within max_length", f"max_length={max_length}")
    rows = [{**encoder.encode(Conversation(cut.id, cut.turns, prompt), file), "turns": len(cut.turns)}
            for prompt in (given, base)]
    scored = [[x for x in row["labels"] if x != IGNORE_INDEX] for row in rows]
    if scored[0] != scored[1]:
        raise BadRecord(file, conv.id, "the intent changes how the human turns tokenise")
    return rows


def conditioned_units(encoder: Encoder, convs: Iterable[Conversation], args, max_length: int,
                      summary: BadRecordSummary, counts: Counter) -> Iterator[dict]:
    """``perplexity --condition``: one unit of two rows per conversation with an intent (:func:`intent_pair`);
    conversations without one, or with a bad one, are counted."""
    encoder.system = None  # the rows carry their own prompts, built from --system here
    file = str(args.data)
    for i, conv in enumerate(convs):
        try:
            rows = intent_pair(encoder, conv, args.condition, args.system, max_length, file)
        except BadRecord as err:
            summary.add(BadRecord(file, conv.id, err.reason, err.detail))
            continue
        if rows is None:
            summary.add(BadRecord(file, conv.id, "no intent"))
            continue
        counts["truncated"] += rows[0]["turns"] < len(conv.turns)
        yield {"key": f"{i}:{conv.id}", "rows": rows}


# -- generation: the simulator under test writes human turns -------------------------------------------
def simulator_spec(args, max_new_tokens: int | None = None, conditioned: bool = False) -> SimulatorSpec:
    """The simulator under test, from this command's flags (``conditioned``: it is given intents)."""
    local = not args.base_url
    if local and not args.model:
        raise UsageError("name the simulator: --model PATH (a local model) or --base-url URL [--model NAME]")
    if local and args.simulator_kind == "roleplay":
        raise UsageError("--simulator-kind roleplay needs an endpoint (--base-url): a chat model to prompt")
    return SimulatorSpec((args.model,) if local else (args.base_url,), args.simulator_kind,
                         model=None if local else args.model, key_env=args.api_key_env, system=args.system,
                         sampling=Sampling(args.temperature, args.top_p, max_new_tokens or args.max_new_tokens),
                         template=args.template, device=args.device, roleplay_prompt=args.roleplay_prompt,
                         max_retries=args.max_retries, conditioned=conditioned)


def next_human_turns(args, prefixes: Sequence[list[Turn]], file: str = "<simulator>", names: Sequence | None = None,
                     max_new_tokens: int | None = None,
                     intents: Sequence | None = None) -> tuple[list[str | None], BadRecordSummary, str]:
    """The simulator's next human turn after each prefix (None where it failed or had no room: counted under
    ``names[i]``), and the simulator's model name; with ``intents`` (``data.intents.IntentRecord``, one per
    prefix) each turn is conditioned on its record's intent and persona."""
    return asyncio.run(_ask_all(args, prefixes, file, names or range(len(prefixes)), max_new_tokens, intents))


async def _ask_all(args, prefixes, file, names, max_new_tokens, intents=None):
    from core.engine import FAILED, SKIPPED, Engine, Job, Result
    from data.end_rules import EndOfSession, EndRule
    from data.simulators import build_simulator

    spec = simulator_spec(args, max_new_tokens, conditioned=intents is not None)
    rule = EndRule("paper", args.max_context, spec.sampling.max_new_tokens)
    summary = BadRecordSummary()
    texts: list[str | None] = [None] * len(prefixes)

    def counted(outcome) -> None:
        if outcome.kind == FAILED:
            summary.add(BadRecord(file, names[outcome.key], "simulator failed", outcome.record["reason"]))
        elif outcome.kind == SKIPPED:
            summary.add(BadRecord(file, names[outcome.key], "no room to generate", outcome.record))
        else:
            texts[outcome.key] = outcome.record

    async with AsyncExitStack() as stack:
        simulator, model = await build_simulator(spec, rule, stack)
        stack.push_async_callback(simulator.close)

        async def ask(i: int):
            given = (intents[i].intent, intents[i].persona) if intents is not None else ()
            try:
                return (await simulator.ask(prefixes[i], args.seed + i, *given)).text
            except EndOfSession as end:
                return Result(end.reason, SKIPPED)

        jobs = [Job(i, functools.partial(ask, i)) for i in range(len(prefixes))]
        await Engine(args.concurrency, desc="generating", unit="turn").run(jobs, on_outcome=counted)
    return texts, summary, model


def source_fields(args, model: str) -> dict:
    out = {"model": model, "simulator_kind": args.simulator_kind, "temperature": args.temperature}
    if args.base_url:
        out["base_url"] = args.base_url
    else:
        out["template"] = args.template
    return out


def reservoir(items: Iterable[str], n: int, seed: int) -> list[str]:
    """A uniform sample of ``n`` items from a stream (all of them when there are fewer), in stream order."""
    rng, kept = random.Random(seed), []
    for i, item in enumerate(items):
        if i < n:
            kept.append((i, item))
        elif (j := rng.randint(0, i)) < n:
            kept[j] = (i, item)
    return [item for _, item in sorted(kept)]


def keep_all(texts: list[str]) -> list[bool]:
    return [True] * len(texts)


def corpus_turns(path: str, which: str, summary: BadRecordSummary, keep=keep_all) -> Iterator[str]:
    """A corpus's openings (``first``: a first turn by the human) or all its human turns, filtered by ``keep``."""
    from core.formats import iter_input

    for conv in iter_input(path, summary=summary):
        texts = [t.text for t in conv.turns if t.role == HUMAN]
        if which == "first":
            texts = texts[:1] if conv.turns[0].role == HUMAN else []
        if not texts:
            summary.add(BadRecord(path, conv.id, "no human opening" if which == "first" else "no human turn"))
        yield from (t for t, k in zip(texts, keep(texts)) if k)


def sampled_turns(args, which: str, keep=None) -> tuple[list[str], BadRecordSummary, dict]:
    """``--n`` turns: from ``--data`` (real ones) or written by the simulator in free mode (openings)."""
    if args.data:
        summary = BadRecordSummary()
        turns = reservoir(corpus_turns(args.data, which, summary, keep or keep_all), args.n, args.seed)
        return turns, summary, {"data": str(args.data)}
    texts, summary, model = next_human_turns(args, [[] for _ in range(args.n)])
    return [t for t in texts if t is not None], summary, source_fields(args, model)


def save_samples(path: str | None, prefixes: Sequence[list[Turn]], texts: Sequence[str | None]) -> None:
    """``--save FILE``: the generated turns after their prefixes, as ShareGPT JSONL (for a look, or ``--data``)."""
    if not path:
        return
    from core.conversation import write_jsonl

    write_jsonl(path, (Conversation(f"sample-{i}", [*p, Turn(HUMAN, t)]).to_sharegpt()
                       for i, (p, t) in enumerate(zip(prefixes, texts)) if t is not None))


# -- the generation metrics -----------------------------------------------------------------------------
def distinct_1(texts: Sequence[str]) -> float:
    """Distinct word unigrams over all unigrams of the texts (lower-cased ``\\w+`` words)."""
    words = [w for t in texts for w in _WORD.findall(t.lower())]
    return len(set(words)) / len(words) if words else 0.0


def diversity(args) -> dict:
    from eval.question_quality import embed_minilm, topic_diversity

    turns, summary, source = sampled_turns(args, "first")
    if args.save and not args.data:
        save_samples(args.save, [[] for _ in turns], turns)
    if len(turns) < 2:
        raise UsageError(f"diversity needs at least two opening questions; got {len(turns)} "
                         f"({summary.report('openings')})")
    _, off_diagonal = topic_diversity(embed_minilm(turns))
    return {"metric": "diversity", **source, "distinct_1": round(distinct_1(turns), 4),
            "pairwise_similarity": round(off_diagonal, 4), "n": len(turns), "embedder": "minilm",
            "empty": sum(not t.strip() for t in turns), "skipped": summary.total,
            "skipped_reasons": dict(summary.counts)}


def judged_human(detector, texts: Sequence[str]) -> np.ndarray:
    """The detector's verdicts; an empty turn is nobody's turn: never human."""
    texts = list(texts)
    verdict = np.zeros(len(texts), dtype=bool)
    filled = [i for i, t in enumerate(texts) if t.strip()]
    if filled:
        verdict[filled] = detector.is_human([texts[i] for i in filled])
    return verdict


def detector_fields(detector) -> dict:
    out = {"detector": detector.name, "detector_accuracy": detector.accuracy}
    if getattr(detector, "unjudged", 0):
        out["unjudged"] = detector.unjudged
    return out


def human_likeness(args) -> dict:
    from eval.detector import load_detector

    detector = load_detector(args.detector)  # before any generation: a bad detector stops nothing half-way
    seen = Counter()

    def unseen(texts: list[str]) -> list[bool]:
        mask = detector.seen_in_training(texts)
        seen["seen_in_training"] += int(mask.sum())
        return list(~mask)

    turns, summary, source = sampled_turns(args, "human", unseen if args.data else None)
    if args.save and not args.data:
        save_samples(args.save, [[] for _ in turns], turns)
    if not turns:
        raise UsageError(f"no turns to judge ({summary.report('turns')})")
    verdict = judged_human(detector, turns)
    return {"metric": "human_likeness", **source, "human_likeness": round(float(verdict.mean()), 4),
            "n": len(turns), **detector_fields(detector), "empty": sum(not t.strip() for t in turns),
            "excluded_seen_in_training": seen["seen_in_training"], "skipped": summary.total,
            "skipped_reasons": dict(summary.counts)}


def load_probes(path: str) -> list[Conversation]:
    from core.conversation import iter_conversations

    summary = BadRecordSummary()
    probes = []
    for conv in iter_conversations(path, summary=summary):
        if conv.turns[-1].role != GPT:
            summary.add(BadRecord(path, conv.id, "a probe must end with an assistant turn"))
            continue
        probes.append(conv)
    if summary.total:
        print(summary.report("probes"), file=sys.stderr)
    if not probes:
        raise UsageError(f"{path}: no usable probe")
    return probes


def role_adherence(args) -> dict:
    from eval.detector import load_detector

    detector = load_detector(args.detector)
    probes = load_probes(args.probes)
    prefixes = [p.turns for p in probes for _ in range(args.samples)]
    kinds = [p.extra.get("kind", "other") for p in probes for _ in range(args.samples)]
    names = [f"{p.id}#{k}" for p in probes for k in range(args.samples)]
    texts, summary, model = next_human_turns(args, prefixes, str(args.probes), names)
    save_samples(args.save, prefixes, texts)
    done = [i for i, t in enumerate(texts) if t is not None]
    if not done:
        raise UsageError(f"the simulator wrote no turn for any probe ({summary.report('generations')})")
    verdict = judged_human(detector, [texts[i] for i in done])
    by_kind = {}
    for kind in sorted(set(kinds)):
        picked = [v for v, i in zip(verdict, done) if kinds[i] == kind]
        by_kind[kind] = round(float(np.mean(picked)), 4) if picked else None
    return {"metric": "role_adherence", **source_fields(args, model), "role_adherence": round(float(verdict.mean()), 4),
            "n": len(done), "probes": len(probes), "samples_per_probe": args.samples, "by_kind": by_kind,
            **detector_fields(detector), "empty": sum(not texts[i].strip() for i in done), "skipped": summary.total,
            "skipped_reasons": dict(summary.counts), "probe_file": str(args.probes)}


# -- termination ----------------------------------------------------------------------------------------
def decision_points(conv: Conversation, ended: bool) -> list[tuple[list[Turn], bool]]:
    """(history up to an assistant turn, should the human end here?) for every assistant turn the human may follow."""
    t = conv.turns
    return [(t[:i + 1], ended and i == len(t) - 1) for i in range(len(t))
            if t[i].role == GPT and (i == len(t) - 1 or t[i + 1].role == HUMAN)]


def learned_end_marker(model) -> str:
    """The end marker a checkpoint learned (its record's: the original experiment's ``<e>``), else the project's."""
    from core.assets import resolve

    return read_checkpoint(resolve(model)).record.get("end_of_conversation") or END_OF_CONVERSATION


def marker_rows(encoder: Encoder, points, max_length: int, file: str, summary: BadRecordSummary,
                marker: str = END_OF_CONVERSATION) -> list[dict | None]:
    """One row per point: the history and ``marker`` as the next human turn, only the marker's tokens labelled,
    left-cut to the last ``max_length`` tokens (the window the simulator sees)."""
    convs = [Conversation(f"{cid}@{len(h)}", [*h, Turn(HUMAN, marker)]) for cid, h, _ in points]
    rows = []
    for row in encoder.encode_many(convs, file):
        if isinstance(row, BadRecord):
            summary.add(row)
            rows.append(None)
            continue
        labels = row["labels"]
        start = len(labels)
        while start > 0 and labels[start - 1] != IGNORE_INDEX:
            start -= 1
        labels = [IGNORE_INDEX] * start + labels[start:]
        if len(labels) - start >= max_length:
            summary.add(BadRecord(file, row["id"], "marker longer than max_length"))
            rows.append(None)
            continue
        rows.append({"input_ids": row["input_ids"][-max_length:], "labels": labels[-max_length:]})
    return rows


def termination_points(args, summary: BadRecordSummary) -> Iterator[tuple[str, list[Turn], bool]]:
    from core.formats import iter_input

    convs = list(iter_input(args.data, summary=summary))
    ended = really_ended(convs) if args.ended == "auto" else [True] * len(convs)
    for conv, conv_ended in list(zip(convs, ended))[:args.limit]:
        points = decision_points(conv, conv_ended)
        if not points:
            summary.add(BadRecord(args.data, conv.id, "no assistant turn for the human to follow"))
        yield from ((conv.id, h, gold) for h, gold in points)


def termination(args) -> dict:
    if not (args.model or args.base_url):
        raise UsageError("name the simulator: --model PATH (a local model) or --base-url URL [--model NAME]")
    summary = BadRecordSummary()
    points = list(termination_points(args, summary))
    if not points:
        raise UsageError(f"{args.data}: no point to decide on ({summary.report('conversations')})")
    if args.base_url:
        texts, gen_summary, model = next_human_turns(args, [h for _, h, _ in points], str(args.data),
                                                     [f"{cid}@{len(h)}" for cid, h, _ in points], args.marker_tokens)
        from data.end_rules import is_end_marker

        decided = [None if t is None else is_end_marker(t) for t in texts]
        summary.counts.update(gen_summary.counts)
        source = source_fields(args, model)
    else:
        marker = learned_end_marker(args.model)
        decided = marker_decisions(args, points, marker, summary)
        source = {"model": str(args.model), "template": args.template, "threshold": args.threshold,
                  "marker": marker}
    kept = [(gold, d) for (_, _, gold), d in zip(points, decided) if d is not None]
    tp = sum(g and d for g, d in kept)
    predicted, positives = sum(d for _, d in kept), sum(g for g, _ in kept)
    precision = tp / predicted if predicted else 0.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"metric": "termination", **source, "data": str(args.data), "precision": round(precision, 4),
            "recall": round(recall, 4), "f1": round(f1, 4), "n": len(kept), "positives": positives,
            "predicted": predicted, "true_positives": tp, "conversations": len({cid for cid, _, _ in points}),
            "ended": args.ended, "skipped": summary.total, "skipped_reasons": dict(summary.counts)}


def marker_decisions(args, points, marker: str, summary: BadRecordSummary) -> list[bool | None]:
    """p(the next human turn is exactly ``marker`` | history) >= threshold, for every point."""
    from tqdm import tqdm

    scorer, encoder, max_length = local_scorer(args)
    decided: list[bool | None] = []
    for start in tqdm(range(0, len(points), args.pool), desc="termination", unit="pool", file=sys.stderr, disable=None):
        chunk = points[start:start + args.pool]
        rows = marker_rows(encoder, chunk, max_length, str(args.data), summary, marker)
        scores = iter(scorer.score([r for r in rows if r is not None]))
        for row in rows:
            decided.append(None if row is None else math.exp(-next(scores)[0]) >= args.threshold)
    return decided


# -- intents: does the simulator pursue the goal it is given? ------------------------------------------
def intent_records(args) -> list:
    """The first ``--n`` intents of ``--intents`` (``data.intents``), for the simulator to pursue."""
    from data.intents import read_intents

    if not args.intents:
        raise UsageError("give --intents FILE (the intents the simulator pursues), or --data FILE (real "
                         "conversations carrying intents, the reference)")
    summary = BadRecordSummary()
    records = read_intents(args.intents, summary=summary)[:args.n]
    if summary.total:
        print(summary.report("intent records"), file=sys.stderr)
    return records


def real_conversations(path: str, n: int, summary: BadRecordSummary) -> tuple[list[Conversation], list[str]]:
    """The first ``n`` conversations of ``path`` that carry an intent and a human turn, and their intents."""
    from core.formats import iter_input
    from model.dyadic import record_intent

    convs, intents = [], []
    for conv in iter_input(path, summary=summary):
        try:
            intent, _ = record_intent(conv.extra, conv.id, path)
            if intent is None or not any(t.role == HUMAN for t in conv.turns):
                raise BadRecord(path, conv.id, "no intent" if intent is None else "no human turn")
        except BadRecord as err:
            summary.add(err)
            continue
        convs.append(conv)
        intents.append(intent)
        if len(convs) == n:
            break
    return convs, intents


def intent_sessions(args, records: Sequence) -> tuple[list[Conversation], str]:
    """One session per intent, opened by the simulator (a record's seed question is left out), answered by the
    teacher, on data.simulate's session machinery; ``--save`` keeps them and a rerun continues. Returns the
    finished sessions as conversations (in the records' order) and the simulator's model name."""
    from core.conversation import parse_record

    done, model = asyncio.run(_intent_sessions(args, records))
    sessions = [done[f"intent-{r.id}"] for r in records if f"intent-{r.id}" in done]
    return [parse_record(rec, i, args.save or "<sessions>") for i, rec in enumerate(sessions)], model


async def _intent_sessions(args, records: Sequence) -> tuple[dict, str]:
    import dataclasses

    from core.engine import Engine
    from data.end_rules import EndRule
    from data.session import SessionConfig, session_jobs
    from data.sessions_store import SessionStore
    from data.simulate import teacher_spec
    from data.simulators import build_simulator, build_teacher

    rule = EndRule(args.end_rule, args.max_context, args.max_new_tokens, args.min_turns)
    store = SessionStore(args.save) if args.save else None
    done = dict(store.finished) if store else {}
    async with AsyncExitStack() as stack:
        teacher = build_teacher(teacher_spec(args))
        stack.push_async_callback(teacher.close)
        simulator, model = await build_simulator(simulator_spec(args, conditioned=True), rule, stack)
        stack.push_async_callback(simulator.close)
        if any(r["meta"].get("simulator_model") != model for r in done.values()):
            raise UsageError(f"{args.save} holds sessions of another simulator; use another --save")
        cfg = SessionConfig(rule, args.max_turns, args.seed, {"simulator_model": model, "end_rule": args.end_rule})
        specs = [dataclasses.replace(r, question=None).spec() for r in records]
        todo = [s for s in specs if s.id not in done and (store is None or s.id not in store.skipped)]
        tally = await Engine(args.concurrency, desc="sessions", unit="session").run(
            session_jobs(todo, simulator, teacher, cfg), sink=store, on_done=lambda r: done.__setitem__(r["id"], r))
    tally.raise_if_failed("sessions", store.failed_path if store else None)
    return done, model


def intent_adherence(args) -> dict:
    from eval.intent_measures import first_round_end, load_judge_prompt, match_intents, measured

    judge_prompt = load_judge_prompt(args.judge_prompt_file) if args.judge_model else None  # before any work
    if args.data:
        summary = BadRecordSummary()
        convs = measured(*real_conversations(args.data, args.n, summary))
        source = {"data": str(args.data), "skipped": summary.total, "skipped_reasons": dict(summary.counts)}
        extra = {"first_round_end": first_round_end(convs) if convs else None}
    else:
        records = intent_records(args)
        sessions, model = intent_sessions(args, records)
        by_id = {f"intent-{r.id}": r.intent for r in records}
        convs = measured(sessions, [by_id[c.id] for c in sessions])
        source = {**source_fields(args, model), "intents": str(args.intents), "max_turns": args.max_turns,
                  "end_rule": args.end_rule, "sessions_skipped": len(records) - len(sessions)}
        extra = {"first_round_end": first_round_end(convs)} if args.end_rule == "learned" and convs else {}
        extra |= real_reference(args, len(records))
    if len(convs) < 2:
        raise UsageError(f"intent-adherence needs at least two conversations with intents; got {len(convs)}")
    result = {"metric": "intent_adherence", **source, **match_intents(convs, args.candidates, args.seed),
              **opening_leakage(convs), **extra}
    if args.judge_model:
        result |= judge_fields(args, convs, judge_prompt)
    return result


def opening_leakage(convs: Sequence, prefix: str = "") -> dict:
    """Goal leakage (``eval.intent_measures.goal_leakage``) of the conversations that open with a human turn."""
    from eval.intent_measures import goal_leakage as leaked

    pairs = [(c.intent, c.turns[0].text) for c in convs if c.turns[0].role == HUMAN]
    return leaked(pairs, prefix) if pairs else {}


def real_reference(args, n: int) -> dict:
    """The same figures for the real conversations of the ``--intents`` file, when it holds them."""
    from eval.intent_measures import first_round_end, match_intents, measured

    real = measured(*real_conversations(args.intents, n, BadRecordSummary(show_first=0)))
    if len(real) < 2:
        return {}
    matched = match_intents(real, args.candidates, args.seed)
    return {"real_intent_accuracy": matched["intent_accuracy"], "real_n": matched["n"],
            "real_first_round_end": first_round_end(real), **opening_leakage(real, "real_")}


def judge_fields(args, convs, prompt: str) -> dict:
    from core.endpoint import Endpoint
    from core.engine import side_file
    from eval.intent_measures import judge_pursuit

    endpoint = Endpoint(args.judge_base_url, args.judge_model, args.api_key_env, args.max_retries, what="judge")
    path = args.judgment_file or (side_file(Path(args.out), "judgments") if args.out else None)
    return judge_pursuit(convs, endpoint, prompt, args.concurrency, Path(path) if path else None)


def goal_leakage(args) -> dict:
    from eval.intent_measures import goal_leakage as leaked, measured

    if args.data:
        summary = BadRecordSummary()
        fields = opening_leakage(measured(*real_conversations(args.data, args.n, summary)))
        if not fields:
            raise UsageError(f"{args.data}: no conversation with an intent opens with a human turn")
        return {"metric": "goal_leakage", "data": str(args.data), **fields, "skipped": summary.total,
                "skipped_reasons": dict(summary.counts)}
    records = intent_records(args)
    texts, summary, model = next_human_turns(args, [[] for _ in records], str(args.intents),
                                             [r.id for r in records], intents=records)
    pairs = [(r.intent, t) for r, t in zip(records, texts) if t is not None]
    if not pairs:
        raise UsageError(f"the simulator wrote no opening ({summary.report('openings')})")
    real = measured(*real_conversations(args.intents, args.n, BadRecordSummary(show_first=0)))
    return {"metric": "goal_leakage", **source_fields(args, model), "intents": str(args.intents), **leaked(pairs),
            **opening_leakage(real, "real_"), "skipped": summary.total, "skipped_reasons": dict(summary.counts)}


# -- command line ---------------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="row label in the tables (default: the model or data file name)")
    p.add_argument("--out", help="write the result JSON here (atomically)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (and which turns --data samples)")
    p.add_argument("--device", default="auto", help="local model: auto|cpu|cuda")
    p.add_argument("--system", help="the simulator's system prompt (default: Socratic's, as in training)")


def _source(p: argparse.ArgumentParser, data_help: str | None) -> None:
    g = p.add_argument_group("simulator (or real data)")
    add_flag(g, "--model", "--model-path",
             help="local checkpoint path or 'smollm2'; with --base-url, the served model's name")
    g.add_argument("--base-url", help="OpenAI-compatible endpoint of the simulator")
    g.add_argument("--simulator-kind", choices=("socratic", "roleplay"), default="socratic",
                   help="socratic: replies with the next human turn; roleplay: a chat model prompted to act as "
                        "the user")
    g.add_argument("--roleplay-prompt", default=str(DEFAULT_ROLEPLAY_PROMPT),
                   help="role-play system prompt file, with a {conversation} placeholder (default: the project's)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="variable holding the endpoint's key")
    g.add_argument("--template", choices=TEMPLATES,
                   help="local model: its prompt template (default: the checkpoint's, else dyadic)")
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-new-tokens", type=int, default=512, help="longest turn the simulator may write")
    add_flag(g, "--max-context", "--max-length", type=int, default=2048,
             help="the simulator's context budget in tokens (a local model's scored history: its last N)")
    g.add_argument("--concurrency", type=int, default=16, help="turns generated at once (batch / requests in flight)")
    g.add_argument("--max-retries", type=int, default=MAX_RETRIES,
                   help=f"retries per request: 429, 5xx, timeouts (default {MAX_RETRIES})")
    g.add_argument("--save", help="also write the generated turns here (ShareGPT JSONL)")
    if data_help:
        g.add_argument("--data", help=data_help)


def _detector(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", default="default",
                   help="default (n-gram detector trained on ShareGPT, cached) | PATH[#LABEL] | judge:MODEL[@BASE_URL]")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.simulator", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("perplexity", help="held-out human-turn NLL / perplexity (local model)")
    _common(s)
    add_flag(s, "--model", "--model-path", required=True, help="local checkpoint path or 'smollm2'")
    s.add_argument("--base-url", help=argparse.SUPPRESS)  # only to say that perplexity needs a local model
    s.add_argument("--data", required=True, help="held-out conversations (ShareGPT / OpenAI messages / datasets dir)")
    s.add_argument("--template", choices=TEMPLATES, help="its prompt template (default: the checkpoint's, else dyadic)")
    add_flag(s, "--max-context", "--max-length", type=int, default=2048,
             help="each conversation's first N tokens, the context it is scored in (default 2048)")
    s.add_argument("--limit", type=int, help="score at most N conversations")
    s.add_argument("--batch-tokens", type=int, default=4096, help="padded tokens per forward pass")
    s.add_argument("--pool", type=int, default=256, help="conversations read ahead and sorted by length")
    s.add_argument("--details", help="per-conversation JSONL; a rerun with the same file resumes")
    s.add_argument("--condition", choices=CONDITIONS,
                   help="score the human turns given each record's intent (and persona) in the system prompt, and "
                        "the same tokens without it (windows cut on whole turns)")
    s = sub.add_parser("diversity", help="distinct-1 and mean pairwise similarity of opening questions")
    _common(s)
    _source(s, "real openings of this corpus instead of a simulator's (the reference row)")
    s.add_argument("--n", type=int, default=100, help="opening questions (default 100)")
    s = sub.add_parser("human-likeness", help="share of openings (or real human turns) judged human")
    _common(s)
    _source(s, "real human turns of this corpus instead of a simulator's (the reference row)")
    _detector(s)
    s.add_argument("--n", type=int, default=200, help="turns to judge (default 200)")
    s = sub.add_parser("role-adherence", help="share of turns after role-swap probes that stay the user's")
    _common(s)
    _source(s, None)
    _detector(s)
    s.add_argument("--probes", default=str(DEFAULT_PROBES), help="probe file (default eval/probes/role_swap.jsonl)")
    s.add_argument("--samples", type=int, default=3, help="turns generated per probe (default 3)")
    s = sub.add_parser("termination", help="precision / recall / F1 of ending at the right place")
    _common(s)
    _source(s, None)
    s.add_argument("--data", required=True, help="held-out conversations")
    s.add_argument("--ended", choices=ENDED, default="auto",
                   help="which conversations really ended: auto = the trainer's --end-token rule "
                        "(model.dyadic.really_ended); all = every one")
    s.add_argument("--limit", type=int, help="at most N conversations")
    s.add_argument("--threshold", type=float, default=0.5, help="local model: end where p(marker turn) >= this")
    s.add_argument("--batch-tokens", type=int, default=4096)
    s.add_argument("--pool", type=int, default=256)
    s.add_argument("--marker-tokens", type=int, default=16, help="endpoint: tokens sampled to see the marker")
    _intent_commands(sub)
    return p


def _intent_commands(sub) -> None:
    """intent-adherence and goal-leakage: a simulator given intents, or real conversations carrying them."""
    from data.end_rules import END_RULES
    from data.simulate import add_teacher_args

    real = "real conversations carrying intents (data.prepare intents) instead of a simulator's (the reference row)"
    s = sub.add_parser("intent-adherence", help="top-1 match of each conversation to its own intent among K (vs "
                                                "chance 1/K); optionally a judge's 1-10")
    _common(s)
    _source(s, real)
    s.add_argument("--intents", help="the intents the simulator pursues, one session each (data/intents.py)")
    s.add_argument("--n", type=int, default=100, help="intents (or real conversations) measured (default 100)")
    s.add_argument("--candidates", type=int, default=10, help="K: intents each conversation is matched against, "
                                                              "its own included (default 10)")
    s.add_argument("--max-turns", type=int, default=3, help="rounds per session (default 3)")
    s.add_argument("--end-rule", choices=END_RULES, default="paper",
                   help="as data.simulate's; learned: also the share of sessions ended in the first round")
    s.add_argument("--min-turns", type=int, default=1, help="--end-rule learned: rounds before an end is accepted")
    add_teacher_args(s.add_argument_group("teacher (answers the simulator; never sees the intent)"))
    s.set_defaults(request_timeout=600.0)
    g = s.add_argument_group("judge (optional): does the user pursue the goal? 1-10")
    g.add_argument("--judge-model", help="judge with this model (an OpenAI-compatible endpoint)")
    g.add_argument("--judge-base-url", help="the judge's endpoint (default: the OpenAI API; key: --api-key-env)")
    g.add_argument("--prompt-file", dest="judge_prompt_file",
                   help="the judge's prompt, with {intent} and {conversation} (default "
                        "eval/prompts/intent_adherence.txt)")
    g.add_argument("--judgment-file", help="resumable judgments (default OUT.judgments.jsonl with --out)")
    s = sub.add_parser("goal-leakage", help="share of an intent's content words the first human turn already states")
    _common(s)
    _source(s, real)
    s.add_argument("--intents", help="the intents the simulator opens conversations for (data/intents.py)")
    s.add_argument("--n", type=int, default=100, help="intents (or real conversations) measured (default 100)")


RUN = {"perplexity": perplexity, "diversity": diversity, "human-likeness": human_likeness,
       "role-adherence": role_adherence, "termination": termination, "intent-adherence": intent_adherence,
       "goal-leakage": goal_leakage}


def check_args(args) -> None:
    for name in ("n", "limit", "samples", "max_context", "batch_tokens", "pool", "max_new_tokens", "concurrency",
                 "max_turns", "min_turns"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if getattr(args, "data", None) and not Path(args.data).exists():
        raise UsageError(f"{args.data}: no such file or directory")
    simulated = args.model or args.base_url
    if args.command in ("diversity", "human-likeness", *INTENT_COMMANDS) and args.data and simulated:
        raise UsageError("give either --data (real turns) or a simulator (--model / --base-url), not both")
    if args.command in INTENT_COMMANDS and args.intents and args.data:
        raise UsageError("give either --intents (a simulator pursues them) or --data (real conversations carrying "
                         "intents), not both")
    if args.command in INTENT_COMMANDS and args.intents and not Path(args.intents).is_file():
        raise UsageError(f"{args.intents}: intents file not found")
    if getattr(args, "candidates", 2) < 2:
        raise UsageError("--candidates must be at least 2 (the intent itself and one other)")


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    follow_checkpoint(args)
    result = RUN[args.command](args)
    default_name = Path(str(result.get("model") or result.get("data"))).name
    result = {"name": args.name or default_name, **result}
    text = json.dumps(result, ensure_ascii=False)
    if args.out:
        atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1, ensure_ascii=False) + "\n"))
    print(text if args.json else format_result(result))
    return 0


def follow_checkpoint(args) -> None:
    """A local model's ``--template``: the one its checkpoint records unless given (model.checkpoint)."""
    if args.model and not args.base_url:
        from core.assets import resolve

        args.template = read_checkpoint(resolve(args.model)).template_for(args.template)


def format_result(r: dict) -> str:
    keys = {"perplexity": ("nll", "ppl", "tokens", "conversations"),
            "diversity": ("distinct_1", "pairwise_similarity", "n"),
            "human_likeness": ("human_likeness", "n", "detector_accuracy"),
            "role_adherence": ("role_adherence", "n", "probes"),
            "termination": ("precision", "recall", "f1", "n"),
            "intent_adherence": ("intent_accuracy", "intent_chance", "n"),
            "goal_leakage": ("goal_leakage", "goal_leakage_3gram", "goal_leakage_n")}[r["metric"]]
    if r.get("condition"):
        keys = (*keys, "nll_without", "nll_difference")
    return f"{r['name']} {r['metric']}: " + ", ".join(f"{k} {r[k]}" for k in keys) + f" (skipped {r.get('skipped', 0)})"


if __name__ == "__main__":
    sys.exit(main())
