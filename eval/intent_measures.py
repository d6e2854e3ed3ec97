"""Does a simulator pursue the intent it was given? The measures behind ``eval.simulator intent-adherence`` and
``goal-leakage``, for simulated and real conversations alike (a conversation here is its id, its intent, its
human turns and whether it really ended; ``eval.simulator`` generates the simulated ones).

* **intent match** (:func:`match_intents`): each conversation's human turns, embedded one by one with MiniLM
  and averaged, against its own intent and ``K - 1`` others drawn at random (``--seed``) from the same set;
  a hit when its own intent is strictly the most similar. Top-1 accuracy against chance ``1 / K``: a simulator
  that ignores its intent scores chance in expectation, one that follows it scores towards 1.
* **judge** (:func:`judge_pursuit`): an OpenAI-compatible model rates from 1 to 10 whether the user's messages
  pursue the goal (``eval/prompts/intent_adherence.txt``, ``Rating: [[n]]`` parsed as FastChat parses it); a
  reply without a rating from 1 to 10 is an error, counted and never scored; judgments are a resumable log.
* **goal leakage** (``data.intents.leakage``): the share of the intent's content words (and word 3-grams) the
  *first* human turn already states: a person reveals a goal gradually, a poor simulator states it at once.
* **first-round end** (:func:`first_round_end`): the share of conversations that really ended
  (``model.dyadic.really_ended``: a session its simulator ended, a real conversation's last segment) after
  their first round, before a goal worth a conversation could have been met.
"""
from __future__ import annotations

import functools
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.conversation import HUMAN, Conversation, Turn
from data.intents import leakage, leakage_summary
from model.dyadic import really_ended

PROMPTS = Path(__file__).resolve().parent / "prompts"
JUDGE_PROMPT = PROMPTS / "intent_adherence.txt"
MINILM = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Measured:
    """One conversation under measure."""
    id: str
    intent: str
    turns: tuple[Turn, ...]
    ended: bool  # it really ended (model.dyadic.really_ended) where it stops

    @property
    def human_turns(self) -> list[str]:
        return [t.text for t in self.turns if t.role == HUMAN]


def measured(convs: Sequence[Conversation], intents: Sequence[str]) -> list[Measured]:
    """Conversations (real ones, or session records read as conversations) with their intents."""
    ended = really_ended(list(convs))
    return [Measured(c.id, intent, tuple(c.turns), e) for c, intent, e in zip(convs, intents, ended)]


@functools.cache
def minilm() -> Callable[[Sequence[str]], np.ndarray]:
    """The offline MiniLM embedder, loaded once per process."""
    from eval.question_quality import minilm_embedder

    return minilm_embedder()


def candidate_sets(n: int, k: int, seed: int) -> list[list[int]]:
    """For each conversation ``i``: ``[i]`` and ``k - 1`` other intents drawn at random."""
    rng = random.Random(seed)
    return [[i, *rng.sample([j for j in range(n) if j != i], k - 1)] for i in range(n)]


def conversation_vectors(embed, convs: Sequence[Measured]) -> np.ndarray:
    """The mean of each conversation's unit human-turn embeddings, normalised."""
    texts = [t for c in convs for t in c.human_turns]
    vectors, rows, start = embed(texts), [], 0
    for c in convs:
        mean = vectors[start:start + len(c.human_turns)].mean(axis=0)
        rows.append(mean / np.linalg.norm(mean))
        start += len(c.human_turns)
    return np.stack(rows)


def match_intents(convs: Sequence[Measured], k: int, seed: int, embed=None) -> dict:
    """Top-1 accuracy of matching each conversation to its own intent among ``k`` candidates (module docstring)."""
    embed = embed or minilm()
    k = min(k, len(convs))
    if k < 2:
        raise ValueError(f"matching needs at least two conversations with intents; got {len(convs)}")
    conv_vecs, intent_vecs = conversation_vectors(embed, convs), embed([c.intent for c in convs])
    hits = []
    for i, cands in enumerate(candidate_sets(len(convs), k, seed)):
        sims = intent_vecs[cands] @ conv_vecs[i]
        hits.append(bool(sims[0] > sims[1:].max()))
    return {"intent_accuracy": round(float(np.mean(hits)), 4), "intent_chance": round(1 / k, 4), "candidates": k,
            "n": len(convs), "embedder": MINILM}


def goal_leakage(pairs: Sequence[tuple[str, str]], prefix: str = "") -> dict:
    """Leakage of each intent into its first human turn, from (intent, first turn) pairs: mean shares and the
    content-word distribution, named with ``prefix`` (``real_`` for the people's turns)."""
    shares = [leakage(intent, first) for intent, first in pairs]
    words, grams = leakage_summary([s[0] for s in shares]), leakage_summary([s[1] for s in shares])
    return {f"{prefix}goal_leakage": words["mean"], f"{prefix}goal_leakage_3gram": grams["mean"],
            f"{prefix}goal_leakage_median": words["median"],
            f"{prefix}goal_leakage_distribution": words["distribution"],
            f"{prefix}goal_leakage_n": words["n"]}


def first_round_end(convs: Sequence[Measured]) -> float:
    """The share of conversations that really ended after their first round."""
    return round(sum(c.ended and len(c.human_turns) == 1 for c in convs) / len(convs), 4)


# -- the judge ----------------------------------------------------------------------------------------------
def load_judge_prompt(path: str | Path | None) -> str:
    from core.prompts import read_prompt

    return read_prompt(path or JUDGE_PROMPT, ["{intent}", "{conversation}"], "judge prompt")


def judge_pursuit(convs: Sequence[Measured], endpoint, prompt: str, concurrency: int, log_path: Path | None) -> dict:
    """The judge's mean 1-10 rating of whether the user pursues the goal; resumable in ``log_path``."""
    from core.engine import Job, JobLog, run_jobs
    from eval.mt_bench import JUDGE_MAX_TOKENS, parse_rating
    from eval.question_quality import render_session

    model = endpoint.model
    log = JobLog(log_path, lambda r: (r["id"], r["judge"])) if log_path else None
    done = {key[0]: r for key, r in (log.done if log else {}).items() if key[1] == model}

    async def judge(c: Measured) -> dict:
        text = prompt.replace("{intent}", c.intent).replace("{conversation}",
                                                            render_session(Conversation(c.id, list(c.turns))))
        reply = await endpoint.chat([{"role": "user", "content": text}], temperature=0.0, max_tokens=JUDGE_MAX_TOKENS)
        rating = parse_rating(reply.text)
        rec = {"id": c.id, "judge": model, "judgment": reply.text}
        return {**rec, "rating": rating} if 1 <= rating <= 10 else {**rec, "rating": None, "error": "no rating 1-10"}

    jobs = [Job((c.id, model), functools.partial(judge, c)) for c in convs if c.id not in done]
    run_jobs(jobs, concurrency, sink=log, on_done=lambda r: done.__setitem__(r["id"], r), desc="judge",
             unit="conversation").raise_if_failed("judgments", log_path)
    ratings = [done[c.id]["rating"] for c in convs]
    scored = [r for r in ratings if r is not None]
    if len(scored) < len(ratings):
        print(f"warning: {len(ratings) - len(scored)} of {len(ratings)} judge replies held no rating from 1 to 10; "
              f"counted as errors, not scored", file=sys.stderr)
    return {"intent_judge": round(float(np.mean(scored)), 4) if scored else None, "judge_model": model,
            "judge_num_judged": len(ratings), "judge_num_errors": len(ratings) - len(scored),
            **({"judgment_file": str(log_path)} if log_path else {})}
