"""Seed sets for seeded simulation, drawn as the original notebooks drew them.

* ``wizardlm``: WizardLM evol-instruct V2 (``WizardLM_evol_instruct_V2_143k.json``, ShareGPT-style
  ``{"idx", "conversations"}``): records whose id starts with ``alpaca_`` and records that are not exactly
  one round are left out, the rest shuffled with ``--seed`` (125) and the first N kept; a seed is the
  question and its WizardLM answer (the simulation keeps that answer). The 70K file's
  ``{"instruction", "output"}`` records are read too.
* ``dolly``: databricks-dolly-15k JSONL, stratified by category (each category's share rounded, the
  notebook's ``random.sample`` per category); a seed is the question only, the teacher writes the first
  answer. Three categories get the notebook's sentence in front and keep their context after the
  instruction (:data:`DOLLY_PREFIX`); the others are the instruction alone, their context dropped.
  ``with_answer`` also keeps Dolly's response as the first answer.
* ``sharegpt``: the opening question and answer of ShareGPT / OpenAI-messages records, drawn like WizardLM;
  records that open with an assistant turn (later segments carrying an answer) are left out.

A seed is a ShareGPT record ``{"id", "source", ["category"], "conversations": [human] or [human, gpt]}``.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from core.conversation import GPT, HUMAN, BadRecord, BadRecordSummary, Conversation, Turn, parse_record

from core.formats import iter_converted
from data.sampling import Draw, shuffled_heads, stratified, take, usable

SOURCES = ("wizardlm", "sharegpt", "dolly")
# The sentence dolly.ipynb put in front of a question, by category; these categories keep their context.
DOLLY_PREFIX = {
    "closed_qa": "This is a Closed Question-Answering task.\n",
    "summarization": "This is a Summarization task.\n",
    "information_extraction": "This is a Information Extraction task.\n",  # sic: the original's wording
}


def _text(raw: dict, key: str, file: str, rid) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRecord(file, rid, f"missing {key!r}", "expected a non-empty string")
    return value


def dolly_question(raw: dict, index: int, file: str) -> str:
    """The notebook's question: category sentence + instruction + "\\n" + context, or the instruction alone."""
    instruction = _text(raw, "instruction", file, index)
    prefix = DOLLY_PREFIX.get(raw.get("category"))
    if prefix is None:
        question = instruction
    else:
        context = raw.get("context") or ""
        if not isinstance(context, str):
            raise BadRecord(file, index, "bad 'context'", "expected a string")
        question = prefix + instruction + "\n" + context
    return question.encode("utf-8", "ignore").decode("utf-8")  # as the notebook: drops lone surrogates


def _dolly(raw: dict, index: int, file: str, with_answer: bool) -> Conversation:
    category = raw.get("category")
    if not isinstance(category, str) or not category:
        raise BadRecord(file, index, "missing 'category'", "expected the Dolly category string")
    turns = [Turn(HUMAN, dolly_question(raw, index, file))]
    if with_answer:
        turns.append(Turn(GPT, _text(raw, "response", file, index)))
    return Conversation(str(index), turns, None, {"source": "dolly", "category": category})


def _wizardlm(raw: dict, index: int, file: str) -> Conversation | str:
    if "conversations" not in raw and "instruction" in raw:  # the 70K file
        rid = str(raw.get("id", f"wizardlm_{index}"))
        turns = [Turn(HUMAN, _text(raw, "instruction", file, rid)), Turn(GPT, _text(raw, "output", file, rid))]
        return Conversation(rid, turns, None, {"source": "wizardlm"})
    rid = str(raw.get("idx", raw.get("id", index)))
    if rid.startswith("alpaca_"):
        return "alpaca ids left out"
    if isinstance(raw.get("conversations"), list) and len(raw["conversations"]) != 2:
        return "not exactly one round"
    conv = parse_record({"id": rid, "conversations": raw.get("conversations")}, index, file)
    if [t.role for t in conv.turns] != [HUMAN, GPT]:
        raise BadRecord(file, rid, "not a question and its answer", "expected a human turn, then a gpt turn")
    return Conversation(rid, conv.turns, None, {"source": "wizardlm"})


def _sharegpt(raw: dict, index: int, file: str) -> Conversation | str:
    conv = parse_record(raw, index, file)
    turns = conv.turns
    if turns[0].role != HUMAN:  # a later segment, opening with the answer it carries: its question follows up
        return "not opening with a question"
    if len(turns) < 2 or turns[1].role != GPT:
        raise BadRecord(file, conv.id, "no answered first question")
    return Conversation(conv.id, turns[:2], None, {"source": "sharegpt"})


def converter(source: str, with_answer: bool = False) -> Callable[[Any, int, str], Conversation | str]:
    """raw record -> seed Conversation, the reason an original filter leaves it out, or BadRecord."""
    def convert(raw, index, file):
        if not isinstance(raw, dict):
            raise BadRecord(file, index, "not an object")
        if source == "dolly":
            return _dolly(raw, index, file, with_answer)
        return _wizardlm(raw, index, file) if source == "wizardlm" else _sharegpt(raw, index, file)
    return convert


def sample_seeds(path: str, source: str, n: int, seed: int, strict: bool = False,
                 summary: BadRecordSummary | None = None, with_answer: bool = False) -> Draw:
    """Two passes over the file: the usable records' strata, then the records the original's draw picks."""
    if source not in SOURCES:
        raise ValueError(f"unknown seed source {source!r}; choose one of {SOURCES}")
    summary = summary if summary is not None else BadRecordSummary()
    left_out: Counter = Counter()
    convert = converter(source, with_answer)
    keys = [c.extra.get("category") for c in usable(iter_converted(path, convert, strict, summary), left_out)]
    if source == "dolly":
        picked = [(None, p) for p in stratified(keys, n, seed)]
    else:
        picked = shuffled_heads({None: len(keys)}, {None: n}, seed)
    quiet = BadRecordSummary(show_first=0)  # the first pass reported them
    seeds = take(picked, lambda _: usable(iter_converted(path, convert, False, quiet), Counter()))
    if source == "dolly":  # the notebook's ids: the position in the drawn sample
        seeds = [Conversation(f"dolly_{i}", s.turns, None, s.extra) for i, s in enumerate(seeds)]
    return Draw(seeds, dict(Counter(keys)), dict(Counter(s.extra.get("category") for s in seeds)), left_out)


def drop_over_budget(seeds: list[Conversation], tokenizer, max_context: int, file: str, strict: bool,
                     summary: BadRecordSummary) -> list[Conversation]:
    """Seeds that leave the simulator room to write: the seed turns and the opening of the next turn,
    rendered as Socratic sees them (dyadic template, Socratic's system prompt), under ``max_context``
    tokens. The original removed such WizardLM ids before generating ("one round exceeds the maximal
    context len")."""
    from data.end_rules import TokenCounter

    counter = TokenCounter(tokenizer)  # the dyadic template, Socratic's system prompt
    kept = []
    for s in seeds:
        n = len(counter.prompt_ids(s.turns, HUMAN if s.turns[-1].role == GPT else GPT))
        if n >= max_context:
            err = BadRecord(file, s.id, "first round exceeds the budget",
                            f"{n} tokens before the next turn, --max-context {max_context}")
            if strict:
                raise err
            summary.add(err)
            continue
        kept.append(s)
    return kept
