"""The run folder of ``eval.converse`` and its judges: per-turn ratings, whole-conversation ratings, and
pairwise verdicts between two assistants' conversations with the same user.

A run folder (``eval.converse run --out DIR``)::

    DIR/run.json                             the users' settings (simulator, mode, source, seed, sampling,
                                             end rule) and every assistant's URL and model
    DIR/conversations/NAME.jsonl             one line per finished conversation of assistant NAME
                                             (NAME.failed.jsonl: to retry; NAME.skipped.jsonl: never kept)
    DIR/judgments/JUDGE/MODE.jsonl           one verdict per item (MODE: turn | conversation | pairwise;
                                             MODE.failed.jsonl: judge calls to retry)

Items: ``turn``: every assistant turn (rated 1-10 in its context); ``conversation``: every conversation
(rated 1-10 as a whole); ``pairwise``: for each pair of assistants (or each against ``--baseline``), every
conversation id both have (the same user: same intent or seed, same sampling seeds), asked in both orders.
The prompts are ``eval/prompts/converse_MODE.txt`` (``--prompt-file`` for another; its placeholders are
checked). ``--judge-model stand-in:detector`` is an offline stand-in, not a judge (:class:`DetectorStandIn`).
A reply without a usable verdict is kept as an error entry (``rating``/``winner`` null, ``error``
set): counted, never scored, not asked again. Judge calls whose retries ran out are retried by the next run.
"""
from __future__ import annotations

import functools
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from core.conversation import BadRecord, Turn, atomic_write, parse_record
from core.endpoint import Endpoint, Prices, Reply, current_calls
from core.engine import Job, side_file
from core.errors import UsageError
from core.prompts import read_prompt
from data.simulators import transcript
from eval.mt_bench import JUDGE_MAX_TOKENS, parse_rating, parse_winner

PROMPTS = Path(__file__).resolve().parent / "prompts"
MODES = ("turn", "conversation", "pairwise")
PLACEHOLDERS = {"turn": ("{context}", "{answer}"), "conversation": ("{conversation}",),
                "pairwise": ("{conversation_a}", "{conversation_b}")}
NO_RATING, NO_VERDICT = "no rating from 1 to 10 in the reply", "no [[A]], [[B]] or [[C]] verdict in the reply"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def complete_records(path: Path) -> list[dict]:
    """The complete lines of an append log, read only (a line still being written by a live run is left)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    try:
        return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: not an eval.converse log ({err})") from None


def judge_dir(judge: str) -> str:
    """A judge's folder name: its model name with anything but letters, digits, '.', '_' and '-' as '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", judge)


class RunFolder:
    """The folder ``eval.converse run`` writes and ``judge`` / ``show`` read (layout in the module docstring)."""

    def __init__(self, path: str | Path, must_exist: bool = True):
        self.path = Path(path)
        self.manifest_path = self.path / "run.json"
        if must_exist and not self.manifest_path.is_file():
            raise UsageError(f"{self.path}: not a run of eval.converse (no run.json); "
                             f"write one with `python -m eval.converse run --out {self.path} ...`")

    def manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text(encoding="utf-8")) if self.manifest_path.is_file() else {}

    def write_manifest(self, manifest: dict) -> None:
        atomic_write(self.manifest_path, lambda f: f.write(json.dumps(manifest, indent=2) + "\n"))

    def assistants(self) -> list[str]:
        return sorted(self.manifest().get("assistants", {}))

    def log_path(self, name: str) -> Path:
        return self.path / "conversations" / f"{name}.jsonl"

    def conversations(self, kind: str = "done") -> dict[str, dict[str, dict]]:
        """assistant -> conversation id -> record: the finished ones, or the ``skipped`` / ``failed`` ones."""
        out = {}
        for name in self.assistants():
            path = self.log_path(name) if kind == "done" else side_file(self.log_path(name), kind)
            out[name] = {rec["id"]: rec for rec in complete_records(path)}
        return out

    def judgment_path(self, judge: str, mode: str) -> Path:
        return self.path / "judgments" / judge_dir(judge) / f"{mode}.jsonl"

    def judges(self) -> list[str]:
        d = self.path / "judgments"
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def verdicts(self, judge: str, mode: str) -> list[dict]:
        return list({verdict_key(r): r for r in complete_records(self.judgment_path(judge, mode))}.values())


# -- prompts and verdicts ------------------------------------------------------------------------
def load_prompt(mode: str, path: str | Path | None = None, judge: str | None = None) -> str:
    """The judge prompt of ``mode`` (the shipped one, or ``path``), with its placeholders checked; the
    offline stand-in gets the bare texts it scores."""
    if judge == STAND_IN and path is None:
        return STAND_IN_PROMPTS[mode]
    return read_prompt(path or PROMPTS / f"converse_{mode}.txt", PLACEHOLDERS[mode], f"{mode} judge prompt")


def fill(prompt: str, **fields: str) -> str:
    """The prompt with its ``{name}`` placeholders replaced (plain replacement: braces elsewhere stay)."""
    for name, value in fields.items():
        prompt = prompt.replace("{" + name + "}", value)
    return prompt


def turns_of(rec: dict) -> list[Turn]:
    return parse_record(rec, 0, "<run>").turns


def rating_of(judgment: str) -> float | None:
    """The 1-10 rating in a judge's reply (``[[N]]``, else ``[N]``), or None."""
    r = parse_rating(judgment)
    return r if 1 <= r <= 10 else None


async def ask_judge(ep: Endpoint, prompt: str) -> str:
    return (await ep.chat([{"role": "user", "content": prompt}], temperature=0.0, max_tokens=JUDGE_MAX_TOKENS)).text


async def rate(ep: Endpoint, prompt: str) -> dict:
    """One rating: ``rating`` (None when the reply holds none: then ``error``), the reply, and its cost."""
    judgment = await ask_judge(ep, prompt)
    r = rating_of(judgment)
    calls = current_calls()
    return {"judge": ep.model, "rating": r, "error": None if r is not None else NO_RATING, "judgment": judgment,
            "tokens": calls.tokens, "cost": calls.cost}


# -- the offline stand-in --------------------------------------------------------------------------------
STAND_IN = "stand-in:detector"
VERSUS = "\n\n<|versus|>\n\n"
STAND_IN_PROMPTS = {"turn": "{answer}", "conversation": "{conversation}",
                    "pairwise": "{conversation_a}" + VERSUS + "{conversation_b}"}
_SPEAKER = re.compile(r"\n\n(?=(?:User|Assistant): )")


class DetectorStandIn:
    """An offline stand-in for a judge, and not a judge: for demos and checks of the pipeline without a model
    that can judge (SmolLM2-135M writes no parsable verdict). It rates the assistant's turns 1-10 by how far the
    offline detector (``eval.detector``) takes them for an assistant's writing, and prefers the conversation
    whose turns it takes more for an assistant's; its replies say what it is."""

    model = STAND_IN

    def __init__(self):
        from eval.detector import load_detector

        self.detector = load_detector("default")

    def score(self, text: str) -> float:
        turns = _SPEAKER.split(text)
        answers = [t[len("Assistant: "):] for t in turns if t.startswith("Assistant: ")] or [text]
        return 1.0 - float(self.detector.human_probability(answers).mean())

    async def chat(self, messages: list[dict], **params) -> Reply:
        scores = [self.score(part) for part in messages[-1]["content"].split(VERSUS)]
        if len(scores) == 2:
            verdict = "[[A]]" if scores[0] > scores[1] else "[[B]]" if scores[1] > scores[0] else "[[C]]"
        else:
            verdict = f"Rating: [[{1 + round(9 * scores[0])}]]"
        return Reply(f"(offline stand-in, not a judge: detector scores {[round(x, 3) for x in scores]}) {verdict}",
                     "stop", 0, 0)


def judge_endpoint(model: str, base_url: str | None, key_env: str, max_retries: int,
                   prices: Prices | None) -> Endpoint | DetectorStandIn:
    return DetectorStandIn() if model == STAND_IN else \
        Endpoint(base_url, model, key_env, max_retries, what="judge", prices=prices)


# -- items -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    mode: str
    assistants: tuple[str, ...]  # one (turn, conversation) or two (pairwise: assistant_1, assistant_2)
    id: str
    turn: int = 0  # turn mode: the round whose answer is rated (1-based)
    baseline: str | None = None  # pairwise: the assistant every other one is compared with, if any

    def fields(self) -> dict:
        names = {"assistant": self.assistants[0]} if len(self.assistants) == 1 else \
            {"assistant_1": self.assistants[0], "assistant_2": self.assistants[1], "baseline": self.baseline}
        return {"mode": self.mode, **names, "id": self.id, **({"turn": self.turn} if self.turn else {})}

    @property
    def key(self) -> tuple:
        return verdict_key(self.fields())


def verdict_key(rec: dict) -> tuple:
    names = (rec["assistant"],) if "assistant" in rec else (rec["assistant_1"], rec["assistant_2"])
    return (*names, rec["id"], rec.get("turn") or 0)


def make_items(mode: str, convs: dict[str, dict[str, dict]], baseline: str | None = None) -> list[Item]:
    """Every item of ``mode`` over the run's finished conversations (see the module docstring)."""
    names = sorted(convs)
    if mode == "turn":
        return [Item(mode, (a,), cid, k) for a in names for cid, rec in sorted(convs[a].items())
                for k in range(1, rec["num_of_rounds"] + 1)]
    if mode == "conversation":
        return [Item(mode, (a,), cid) for a in names for cid in sorted(convs[a])]
    pairs = [(a, baseline) for a in names if a != baseline] if baseline else list(itertools.combinations(names, 2))
    return [Item(mode, pair, cid, baseline=baseline) for pair in pairs
            for cid in sorted(set(convs[pair[0]]) & set(convs[pair[1]]))]


async def judge_item(ep: Endpoint, prompt: str, item: Item, convs: dict[str, dict[str, dict]]) -> dict:
    """One verdict: a rating (turn, conversation), or a pairwise verdict asked in both orders."""
    turns = [turns_of(convs[a][item.id]) for a in item.assistants]
    if item.mode == "turn":
        upto = turns[0][: 2 * item.turn]
        return {**item.fields(), **await rate(ep, fill(prompt, context=transcript(upto[:-1]),
                                                       answer=upto[-1].text))}
    if item.mode == "conversation":
        return {**item.fields(), **await rate(ep, fill(prompt, conversation=transcript(turns[0])))}
    first, second = (transcript(t) for t in turns)
    judgments = [await ask_judge(ep, fill(prompt, conversation_a=a, conversation_b=b))
                 for a, b in ((first, second), (second, first))]
    return {**item.fields(), **pair_verdict(item.assistants, judgments), "judge": ep.model,
            "tokens": current_calls().tokens, "cost": current_calls().cost}


def pair_verdict(names: Sequence[str], judgments: list[str]) -> dict:
    """Both orders' verdicts: ``positions`` (A, B, tie or error as the judge saw them), the winner per order
    (``g1_winner``: the first order, assistant_1 shown as A), and ``winner``: the assistant both orders chose,
    ``tie`` when they disagree (the verdict flipped with the order) or both say tie, None on an error."""
    positions = [parse_winner(j) for j in judgments]
    g1 = {"A": names[0], "B": names[1]}.get(positions[0], positions[0])
    g2 = {"A": names[1], "B": names[0]}.get(positions[1], positions[1])
    error = "error" in positions
    return {"positions": positions, "g1_winner": g1, "g2_winner": g2,
            "winner": None if error else g1 if g1 == g2 else "tie", "error": NO_VERDICT if error else None,
            "judgments": judgments}


def judge_jobs(ep: Endpoint, prompt: str, items: list[Item], convs: dict[str, dict[str, dict]]) -> list[Job]:
    return [Job(i.key, functools.partial(judge_item, ep, prompt, i, convs), i.fields()) for i in items]


# -- people's ratings (agreement) -------------------------------------------------------------------
def parse_rated(raw, index: int, file) -> dict:
    """A record of a conversation people had and rated: ``conversations``/``messages``, ``model``, 1-10 ``rating``."""
    conv = parse_record(raw, index, file)
    model, rating = conv.extra.get("model"), conv.extra.get("rating")
    if not isinstance(model, str) or not model:
        raise BadRecord(file, conv.id, "no model", "expected a string 'model'")
    if isinstance(rating, bool) or not isinstance(rating, (int, float)) or not 1 <= rating <= 10:
        raise BadRecord(file, conv.id, "no rating", f"expected a 'rating' from 1 to 10, not {rating!r}")
    return {"id": conv.id, "model": model, "human": float(rating), "conversation": transcript(conv.turns)}


async def judge_rated(ep: Endpoint, prompt: str, rec: dict) -> dict:
    """One line of ``agreement --out``: ``id``, ``model``, ``human`` and ``judge`` (the judge's rating, None on an
    error entry), then the reply and the judge's name (``judge_model``)."""
    r = await rate(ep, fill(prompt, conversation=rec["conversation"]))
    return {"id": rec["id"], "model": rec["model"], "human": rec["human"], "judge": r.pop("rating"),
            "judge_model": r.pop("judge"), **r}

