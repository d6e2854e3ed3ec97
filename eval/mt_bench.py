"""MT-Bench and Vicuna-Bench with FastChat's files: answer, judge with any OpenAI-compatible model, show scores.

Files (FastChat layout under ``--bench-dir``, default ``eval/data/<--bench>``; ``python -m eval.fetch_mt_bench``
fills ``eval/data/mt_bench``, ``--bench vicuna_bench`` fills ``eval/data/vicuna_bench``)::

    question.jsonl                         {"question_id", "category", "turns": [q1] or [q1, q2]}
    judge_prompts.jsonl                    FastChat's judge prompts (single-v1, single-math-v1, pair-v2, ...);
                                           shared by the benchmarks: eval/data/mt_bench's is used when absent
    reference_answer/gpt-4.jsonl           reference answers for the categories that need them (math, reasoning,
                                           coding: FastChat's NEED_REF_CATS)
    model_answer/<model>.jsonl             {"question_id", "answer_id", "model_id", "choices": [{"index", "turns"}], "tstamp"}
    model_judgment/<judge>_single.jsonl    {"question_id", "model", "judge", "user_prompt", "judgment", "score", "turn", ...}
    model_judgment/<judge>_pair.jsonl      {"question_id", "model_1", "model_2", "g1_winner", "g2_winner", ...}

A question has as many turns as its ``turns`` list: MT-Bench two, Vicuna-Bench one. Turn 2 is answered
and judged (``-multi-turn`` prompts) only for two-turn questions, as FastChat does.

Usage::

    # answers from a local checkpoint (batched; per-category temperatures as MT-Bench defines them)
    python -m eval.mt_bench answer --model runs/platolm --name platolm-7b [--template dyadic]
    # ... or from any OpenAI-compatible endpoint (--model is then the served model name)
    python -m eval.mt_bench answer --base-url http://127.0.0.1:8000/v1 --model platolm --name platolm-7b
    # judge (single grading, or pairwise against a baseline / all pairs); resumable
    OPENAI_API_KEY=... python -m eval.mt_bench judge --mode single --judge-model gpt-4 --model-list platolm-7b
    python -m eval.mt_bench judge --judge-base-url http://127.0.0.1:9000/v1 --judge-model local-judge ...
    # scores: a table, or one JSON object per model, and an optional plot
    python -m eval.mt_bench show --data eval/data/mt_bench/model_judgment/gpt-4_single.jsonl --json
    # Vicuna-Bench: the same three commands with --bench vicuna_bench
    python -m eval.mt_bench answer --bench vicuna_bench --model runs/platolm --name platolm-7b
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import re
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from eval.fetch_mt_bench import BENCHES, DATA_DIR, DEFAULT_DEST as DEFAULT_BENCH_DIR
from core.appendlog import AppendLog
from core.conversation import BadRecord, read_json_records

from core.endpoint import Endpoint
from core.engine import Job, JobLog, Tally, run_jobs
from core.options import add_answerer_args, add_endpoint_args, add_flag, check_answerer
from core.errors import UsageError
from core.runner import command

# FastChat fastchat/llm_judge/common.py
TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
               "reasoning": 0.0, "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0}
NEED_REF_CATS = ("math", "reasoning", "coding", "arena-hard-200")
CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities",
              # Vicuna-Bench's (writing, roleplay, math and coding are shared)
              "generic", "knowledge", "common-sense", "fermi", "counterfactual")
BENCH_TITLES = {"mt_bench": "MT-Bench", "vicuna_bench": "Vicuna-Bench"}  # --bench -> title in plots and tables
JUDGE_MAX_TOKENS = 2048
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
def bench_dir(args) -> Path:
    return Path(args.bench_dir) if args.bench_dir else DATA_DIR / args.bench


def question_file(args) -> Path:
    return Path(args.question_file) if args.question_file else bench_dir(args) / "question.jsonl"


def load_questions(path: Path, begin: int | None = None, end: int | None = None,
                   ids: list[int] | None = None, bench: str = "mt_bench") -> list[dict]:
    if not Path(path).is_file():
        raise UsageError(f"benchmark {bench!r}: no question file {path} (run `python -m eval.fetch_mt_bench"
                         f"{'' if bench == 'mt_bench' else ' --bench ' + bench}`, or pass --question-file)")
    questions = list(read_json_records(path))
    for i, q in enumerate(questions):
        turns = q.get("turns") if isinstance(q, dict) else None
        if not (isinstance(q, dict) and "question_id" in q and isinstance(turns, list)
                and 1 <= len(turns) <= 2 and all(isinstance(t, str) for t in turns)):
            raise BadRecord(path, i, "not a benchmark question", "needs question_id and 1 or 2 turns")
    questions = questions[begin:end]
    if ids:
        wanted = set(ids)
        questions = [q for q in questions if q["question_id"] in wanted]
        lost = wanted - {q["question_id"] for q in questions}
        if lost:
            raise UsageError(f"{path}: no question with id {sorted(lost)}")
    return questions


def load_answers(path: Path) -> dict[int, dict]:
    """question_id -> answer record (the last one wins, as in FastChat)."""
    return {a["question_id"]: a for a in read_json_records(path)}


def answer_turns(answer: dict) -> list[str]:
    return answer["choices"][0]["turns"]


def load_judge_prompts(path: Path) -> dict[str, dict]:
    if not Path(path).is_file():
        raise UsageError(f"judge prompt file {path} not found (run `python -m eval.fetch_mt_bench`, "
                         f"or pass --judge-prompts)")
    return {p["name"]: p for p in read_json_records(path)}


def judge_prompts_file(args) -> Path:
    """--judge-prompts, else the benchmark's own file, else MT-Bench's (FastChat shares one file)."""
    if args.judge_prompts:
        return Path(args.judge_prompts)
    own = bench_dir(args) / "judge_prompts.jsonl"
    return own if own.is_file() else DEFAULT_BENCH_DIR / "judge_prompts.jsonl"


def parse_rating(judgment: str) -> float:
    """FastChat's rule: ``[[7]]`` or ``[[7.5]]``, else ``[7]``; -1 when the judge gave no rating."""
    match = _RATING.search(judgment) or _RATING_BACKUP.search(judgment)
    return float(match.group(1)) if match else -1


def parse_winner(judgment: str) -> str:
    """FastChat's rule for pairwise verdicts: ``[[A]]``, ``[[B]]``, ``[[C]]`` (tie), else "error"."""
    for tag, winner in (("[[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie")):
        if tag in judgment:
            return winner
    return "error"


# ---------------------------------------------------------------------------------------------
# answer
# ---------------------------------------------------------------------------------------------
def answer_record(question_id: int, model_id: str, turns: list[str]) -> dict:
    return {"question_id": question_id, "answer_id": uuid.uuid4().hex, "model_id": model_id,
            "choices": [{"index": 0, "turns": turns}], "tstamp": time.time()}


def temperature_for(q: dict, override: float | None) -> float:
    return override if override is not None else TEMPERATURE.get(q.get("category"), 0.7)


def answer_local(args, questions: list[dict], log: AppendLog) -> None:
    """Batched local generation: per temperature group and chunk, every question's turn 1, then the turn 2s."""
    from tqdm import tqdm

    from core.conversation import GPT, HUMAN, Turn
    from model.generate import ContextOverflow, Generator

    gen = Generator(args.model, template=args.template, max_context=args.max_context)
    kwargs = dict(role=GPT, system=args.system, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                  seed=args.seed)

    def generate(convs, temperature):
        try:
            return [c.text for c in gen.generate(convs, temperature=temperature, **kwargs)]
        except ContextOverflow:  # find which conversation overflows; the others still get answers
            out = []
            for conv in convs:
                try:
                    out.append(gen.generate([conv], temperature=temperature, **kwargs)[0].text)
                except ContextOverflow as err:
                    print(f"warning: {err}; answer recorded as ERROR", file=sys.stderr)
                    out.append("ERROR")
            return out

    groups: dict[float, list[dict]] = defaultdict(list)
    for q in questions:
        groups[temperature_for(q, args.temperature)].append(q)
    with tqdm(total=len(questions), desc="answers", unit="q", file=sys.stderr, disable=None) as bar:
        for temperature, group in sorted(groups.items()):
            for start in range(0, len(group), args.batch_size):
                chunk = group[start:start + args.batch_size]
                convs = {q["question_id"]: [] for q in chunk}
                answers = {q["question_id"]: [] for q in chunk}
                for t in range(max(len(q["turns"]) for q in chunk)):
                    asking = [q for q in chunk if len(q["turns"]) > t]
                    for q in asking:
                        convs[q["question_id"]].append(Turn(HUMAN, q["turns"][t]))
                    for q, a in zip(asking, generate([convs[q["question_id"]] for q in asking], temperature)):
                        convs[q["question_id"]].append(Turn(GPT, a))
                        answers[q["question_id"]].append(a.strip())
                log.append_many(answer_record(q["question_id"], args.model_id, answers[q["question_id"]])
                                for q in chunk)
                bar.update(len(chunk))


def answer_remote(args, questions: list[dict], log: JobLog) -> Tally:
    """Each question's turns in order (turn 2 sees the model's own first answer); questions in parallel."""
    ep = Endpoint(args.base_url, args.model or args.model_id, args.api_key_env, args.max_retries, what="answers")

    async def answer(q: dict) -> dict:
        messages = [{"role": "system", "content": args.system}] if args.system else []
        turns = []
        for text in q["turns"]:
            messages.append({"role": "user", "content": text})
            reply = await ep.chat(messages, temperature=temperature_for(q, args.temperature),
                                  max_tokens=args.max_new_tokens)
            turns.append(reply.text.strip())
            messages.append({"role": "assistant", "content": reply.text})
        return answer_record(q["question_id"], args.model_id, turns)

    jobs = [Job(q["question_id"], functools.partial(answer, q)) for q in questions]
    return run_jobs(jobs, args.concurrency, sink=log, desc="answers", unit="question")


def cmd_answer(args) -> int:
    check_answerer(args)
    questions = load_questions(question_file(args), args.question_begin, args.question_end, args.question_ids,
                               args.bench)
    out = Path(args.out or bench_dir(args) / "model_answer" / f"{args.model_id}.jsonl")
    log = JobLog(out, "question_id")
    todo = [q for q in questions if q["question_id"] not in log.done]
    print(f"{len(questions) - len(todo)} of {len(questions)} questions already answered in {out}",
          file=sys.stderr)
    tally = Tally()
    if todo and args.base_url:
        tally = answer_remote(args, todo, log)
    elif todo:
        answer_local(args, todo, log.file)
    # FastChat's reorg_answer_file: one answer per question, sorted by id
    answers = log.index(log.file.iter())
    log.file.rewrite(answers[k] for k in sorted(answers))
    missing = [q["question_id"] for q in questions if q["question_id"] not in answers]
    print(f"{len(questions) - len(missing)} answers in {out}", file=sys.stderr)
    tally.raise_if_failed("questions")
    return 1 if missing else 0


# ---------------------------------------------------------------------------------------------
# judge
# ---------------------------------------------------------------------------------------------
@dataclass
class Match:
    question: dict
    models: tuple[str, ...]  # one model (single) or two (pairwise: model_1, model_2)
    turn: int
    prompt: dict
    ref: dict | None

    @property
    def key(self) -> tuple:
        return (self.question["question_id"], *self.models, self.turn)


def _fill(prompt: dict, question: dict, answers: list[dict], ref: dict | None, turn: int) -> str:
    """FastChat's prompt filling for single (one answer) and pairwise (two answers) judges."""
    kw = {}
    if ref is not None:
        kw["ref_answer_1"] = answer_turns(ref)[0]
        if turn == 2:
            kw["ref_answer_2"] = answer_turns(ref)[1]
    q = question["turns"]
    if len(answers) == 1:
        a = answer_turns(answers[0])
        if turn == 2:
            kw.update(question_1=q[0], question_2=q[1], answer_1=a[0], answer_2=a[1])
        else:
            kw.update(question=q[0], answer=a[0])
    else:
        a, b = answer_turns(answers[0]), answer_turns(answers[1])
        if turn == 2:
            kw.update(question_1=q[0], question_2=q[1], answer_a_1=a[0], answer_b_1=b[0],
                      answer_a_2=a[1], answer_b_2=b[1])
        else:
            kw.update(question=q[0], answer_a=a[0], answer_b=b[0])
    return prompt["prompt_template"].format(**kw)


def prompt_name(mode: str, needs_ref: bool, turn: int) -> str:
    """FastChat's make_judge_single / make_judge_pairwise choice of prompt."""
    if mode == "single":
        name = "single-math-v1" if needs_ref else "single-v1"
    else:
        name = "pair-math-v1" if needs_ref else "pair-v2"
    return name + ("-multi-turn" if turn == 2 else "")


def make_matches(mode: str, questions: list[dict], models: list[str], baseline: str,
                 prompts: dict[str, dict], refs: dict[int, dict]) -> list[Match]:
    if mode == "single":
        combos = [(m,) for m in models]
    elif mode == "pairwise-baseline":
        combos = [(m, baseline) for m in models if m != baseline]
    else:
        combos = list(itertools.combinations(models, 2))
    matches = []
    for q in questions:
        needs_ref = q.get("category") in NEED_REF_CATS
        for turn in range(1, len(q["turns"]) + 1):  # turn 2 only for two-turn questions, as FastChat
            name = prompt_name(mode, needs_ref, turn)
            if name not in prompts:
                raise UsageError(f"judge prompt {name!r} missing from the judge prompt file")
            for combo in combos:
                matches.append(Match(q, combo, turn, prompts[name], refs.get(q["question_id"]) if needs_ref else None))
    return matches


def check_inputs(questions, models, answer_dir: Path, ref_file: Path) -> tuple[dict, dict]:
    """Every answer and reference the judge will need, or one error listing all that is missing."""
    problems, answers = [], {}
    for m in models:
        path = answer_dir / f"{m}.jsonl"
        if not path.is_file():
            problems.append(f"no answers for model {m!r}: {path} not found (run `eval.mt_bench answer`)")
            continue
        answers[m] = load_answers(path)
        lost = [q["question_id"] for q in questions
                if len(answer_turns(answers[m].get(q["question_id"], {"choices": [{"turns": []}]})))
                < len(q["turns"])]
        if lost:
            problems.append(f"{path}: no answer with every turn for question ids {lost[:10]}"
                            + (f" and {len(lost) - 10} more" if len(lost) > 10 else ""))
    need_ref = [q for q in questions if q.get("category") in NEED_REF_CATS]
    refs = {}
    if need_ref:
        if not ref_file.is_file():
            problems.append(f"reference answers {ref_file} not found (needed for {', '.join(NEED_REF_CATS[:3])})")
        else:
            refs = load_answers(ref_file)
            lost = [q["question_id"] for q in need_ref if q["question_id"] not in refs
                    or len(answer_turns(refs[q["question_id"]])) < len(q["turns"])]
            if lost:
                problems.append(f"{ref_file}: no reference answer for question ids {lost}")
    if problems:
        raise UsageError("cannot judge, nothing was sent:\n  " + "\n  ".join(problems))
    return answers, refs


async def judge_match(ep: Endpoint, match: Match, answers: dict) -> dict:
    """One judgment: a single grading, or a pairwise verdict asked in both orders (as FastChat)."""
    ans = [answers[m][match.question["question_id"]] for m in match.models]
    prompt, qid = match.prompt, match.question["question_id"]

    async def ask(pair_answers):
        user = _fill(prompt, match.question, pair_answers, match.ref, match.turn)
        messages = [{"role": "system", "content": prompt["system_prompt"]}, {"role": "user", "content": user}]
        return user, (await ep.chat(messages, temperature=0.0, max_tokens=JUDGE_MAX_TOKENS)).text

    common = {"question_id": qid, "category": match.question.get("category"),
              "judge": [ep.model, prompt["name"]], "turn": match.turn}
    if len(ans) == 1:
        user, judgment = await ask(ans)
        return {"question_id": qid, "model": match.models[0], **common, "user_prompt": user,
                "judgment": judgment, "score": parse_rating(judgment), "tstamp": time.time()}
    (u1, j1), (u2, j2) = await ask(ans), await ask(ans[::-1])
    g1 = {"A": "model_1", "B": "model_2"}.get(parse_winner(j1), parse_winner(j1))
    g2 = {"A": "model_2", "B": "model_1"}.get(parse_winner(j2), parse_winner(j2))
    return {"question_id": qid, "model_1": match.models[0], "model_2": match.models[1], **common,
            "g1_winner": g1, "g2_winner": g2, "g1_user_prompt": u1, "g1_judgment": j1,
            "g2_user_prompt": u2, "g2_judgment": j2, "tstamp": time.time()}


def judgment_key(rec: dict) -> tuple:
    if "model" in rec:
        return (rec["question_id"], rec["model"], rec["turn"])
    return (rec["question_id"], rec["model_1"], rec["model_2"], rec["turn"])


def is_unparsed(rec: dict) -> bool:
    """A judgment whose reply held no rating (single) or no verdict (pairwise): kept, never scored."""
    return rec["score"] == -1 if "model" in rec else "error" in (rec["g1_winner"], rec["g2_winner"])


def cmd_judge(args) -> int:
    bench = bench_dir(args)
    questions = load_questions(question_file(args), args.question_begin, args.question_end, args.question_ids,
                               args.bench)
    prompts = load_judge_prompts(judge_prompts_file(args))
    answer_dir = Path(args.answer_dir or bench / "model_answer")
    models = args.model_list or sorted(p.stem for p in answer_dir.glob("*.jsonl"))
    if not models:
        raise UsageError(f"no models to judge: {answer_dir} holds no answer files (or pass --model-list)")
    needed = models + ([args.baseline_model] if args.mode == "pairwise-baseline" else [])
    ref_file = Path(args.ref_answer_dir or bench / "reference_answer") / f"{args.ref_model}.jsonl"
    answers, refs = check_inputs(questions, list(dict.fromkeys(needed)), answer_dir, ref_file)
    kind = "single" if args.mode == "single" else "pair"
    judge_name = args.judge_model.replace("/", "_")  # hub-style names must not make directories
    out = Path(args.out or bench / "model_judgment" / f"{judge_name}_{kind}.jsonl")
    log = JobLog(out, judgment_key)
    matches = make_matches(args.mode, questions, models, args.baseline_model, prompts, refs)
    todo = [m for m in matches if m.key not in log.done]
    calls = len(todo) * (1 if kind == "single" else 2)
    print(f"{len(matches)} judgments, {len(matches) - len(todo)} already in {out}; "
          f"{calls} judge calls to {args.judge_model}", file=sys.stderr)
    if args.dry_run or not todo:
        return 0
    ep = Endpoint(args.judge_base_url, args.judge_model, args.api_key_env, args.max_retries, what="judge")
    jobs = [Job(m.key, functools.partial(judge_match, ep, m, answers)) for m in todo]
    unparsed = []
    tally = run_jobs(jobs, args.concurrency, sink=log, on_done=lambda rec: unparsed.append(is_unparsed(rec)),
                     desc="judgments", unit="judgment")
    if any(unparsed):
        print(f"warning: {sum(unparsed)} judge replies held no parsable {'rating' if kind == 'single' else 'verdict'}: "
              f"kept in {out} as errors, counted, never scored", file=sys.stderr)
    tally.raise_if_failed("judgments")
    print(f"wrote {len(todo)} judgments to {out}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# show
# ---------------------------------------------------------------------------------------------
def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def single_scores(records: list[dict], categories: dict[int, str] | None = None) -> list[dict]:
    """Per model: overall, turn1, turn2 and per-category mean scores; unrated judgments (-1) excluded and counted.

    ``turn2`` is left out for a single-turn benchmark (no turn-2 judgment at all).
    """
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_model[r["model"]].append(r)
    two_turns = any(r["turn"] == 2 for r in records)
    out = []
    for model in sorted(by_model):
        recs = by_model[model]
        rated = [r for r in recs if r["score"] != -1]
        cats: dict[str, list[float]] = defaultdict(list)
        for r in rated:
            cat = r.get("category") or (categories or {}).get(r["question_id"])
            if cat:
                cats[cat].append(r["score"])
        order = [c for c in CATEGORIES if c in cats] + sorted(set(cats) - set(CATEGORIES))
        row = {"model": model, "overall": _mean([r["score"] for r in rated]),
               "turn1": _mean([r["score"] for r in rated if r["turn"] == 1])}
        if two_turns:
            row["turn2"] = _mean([r["score"] for r in rated if r["turn"] == 2])
        out.append({**row, "categories": {c: _mean(cats[c]) for c in order},
                    "num_judgments": len(recs), "num_unrated": len(recs) - len(rated)})
    return out


def pair_scores(records: list[dict]) -> list[dict]:
    """Per model: wins, losses, ties (FastChat: a verdict that flips with the order is a tie); errors counted."""
    stats: dict[str, dict] = defaultdict(lambda: {"win": 0, "loss": 0, "tie": 0, "num_error": 0})
    for r in records:
        m1, m2 = r["model_1"], r["model_2"]
        if is_unparsed(r):
            stats[m1]["num_error"] += 1
            stats[m2]["num_error"] += 1
        elif r["g1_winner"] == "tie" or r["g1_winner"] != r["g2_winner"]:
            stats[m1]["tie"] += 1
            stats[m2]["tie"] += 1
        else:
            winner, loser = (m1, m2) if r["g1_winner"] == "model_1" else (m2, m1)
            stats[winner]["win"] += 1
            stats[loser]["loss"] += 1
    out = []
    for model in sorted(stats):
        s = stats[model]
        n = s["win"] + s["loss"] + s["tie"]
        out.append({"model": model, **s,
                    "win_rate": round(s["win"] / n, 4) if n else None,
                    "loss_rate": round(s["loss"] / n, 4) if n else None,
                    "win_rate_adjusted": round((s["win"] + 0.5 * s["tie"]) / n, 4) if n else None})
    return out


def scores_from_file(path: Path, question_file: Path | None = None) -> tuple[str, list[dict]]:
    """("single" | "pairwise", per-model scores) for a judgment file."""
    if not Path(path).is_file():
        raise UsageError(f"judgment file {path} not found")
    records = AppendLog(path).read()
    if not records:
        raise UsageError(f"judgment file {path} is empty")
    if "model" in records[0]:
        categories = None
        if any("category" not in r for r in records) and question_file and Path(question_file).is_file():
            categories = {q["question_id"]: q.get("category") for q in read_json_records(question_file)}
        return "single", single_scores(records, categories)
    return "pairwise", pair_scores(records)


def plot_scores(kind: str, scores: list[dict], path: Path, title: str = "MT-Bench") -> None:
    """Radar plot of category scores (single) or a bar plot of adjusted win rates (pairwise)."""
    import numpy as np

    from core.plots import figure

    if kind == "single":
        cats = [c for c in CATEGORIES if any(s["categories"].get(c) is not None for s in scores)]
        if len(cats) < 3:
            raise UsageError("a radar plot needs scores in at least 3 categories")
        angles = np.linspace(0, 2 * np.pi, len(cats), endpoint=False).tolist()
        with figure(path, figsize=(6, 6), polar=True) as (_, ax):
            for s in scores:
                vals = [s["categories"].get(c) or 0 for c in cats]
                ax.plot(angles + angles[:1], vals + vals[:1], label=f"{s['model']} ({s['overall']})")
                ax.fill(angles + angles[:1], vals + vals[:1], alpha=0.1)
            ax.set_xticks(angles)
            ax.set_xticklabels(cats)
            ax.set_ylim(0, 10)
            ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize=8)
            ax.set_title(f"{title} scores per category")
    else:
        with figure(path, figsize=(6, 4)) as (_, ax):
            ax.bar([s["model"] for s in scores], [s["win_rate_adjusted"] or 0 for s in scores])
            ax.set_ylabel("win rate (ties count half)")
            ax.set_ylim(0, 1)
            ax.set_title(f"{title} pairwise win rates")


def _f(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def format_table(kind: str, scores: list[dict]) -> str:
    if kind == "single":
        turns = ["turn1", "turn2"] if any("turn2" in s for s in scores) else ["turn1"]
        lines = [f"{'model':<28} {'overall':>8} " + " ".join(f"{t:>7}" for t in turns)
                 + f" {'judged':>7} {'unrated':>8}"]
        for s in scores:
            lines.append(f"{s['model']:<28} {_f(s['overall']):>8} " + " ".join(f"{_f(s.get(t)):>7}" for t in turns)
                         + f" {s['num_judgments']:>7} {s['num_unrated']:>8}")
        cats = list(dict.fromkeys(c for s in scores for c in s["categories"]))
        if cats:
            lines += ["", f"{'model':<28} " + " ".join(f"{c[:10]:>10}" for c in cats)]
            for s in scores:
                lines.append(f"{s['model']:<28} " + " ".join(f"{_f(s['categories'].get(c)):>10}" for c in cats))
        return "\n".join(lines)
    lines = [f"{'model':<28} {'win':>5} {'loss':>5} {'tie':>5} {'errors':>6} {'win_rate':>9} {'loss_rate':>9} "
             f"{'adjusted':>9}"]
    for s in scores:
        lines.append(f"{s['model']:<28} {s['win']:>5} {s['loss']:>5} {s['tie']:>5} {s['num_error']:>6} "
                     f"{_f(s['win_rate']):>9} {_f(s['loss_rate']):>9} {_f(s['win_rate_adjusted']):>9}")
    return "\n".join(lines)


def cmd_show(args) -> int:
    kind, scores = scores_from_file(Path(args.judgment_file), question_file(args))
    if args.model:
        scores = [s for s in scores if s["model"] in args.model]
        if not scores:
            raise UsageError(f"{args.judgment_file}: no judgments for {', '.join(args.model)}")
    if args.plot:
        plot_scores(kind, scores, Path(args.plot), BENCH_TITLES[args.bench])
        print(f"plot written to {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(scores[0] if len(scores) == 1 else scores))
    else:
        print(format_table(kind, scores))
    return 0


# ---------------------------------------------------------------------------------------------
def _ids(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.mt_bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, questions=True):
        sp.add_argument("--bench", default="mt_bench", choices=BENCHES, help="benchmark (default mt_bench)")
        sp.add_argument("--bench-dir", help="FastChat-style data directory (default eval/data/BENCH)")
        sp.add_argument("--question-file", help="default: BENCH_DIR/question.jsonl")
        if questions:
            sp.add_argument("--question-begin", type=int, help="first question index (slice start, as FastChat)")
            sp.add_argument("--question-end", type=int, help="slice end")
            sp.add_argument("--question-ids", type=_ids, help="comma-separated question ids")
            add_endpoint_args(sp)

    a = sub.add_parser("answer", help="answer every turn of each question")
    common(a)
    add_flag(a, "--name", "--model-id", dest="model_id", required=True,
             help="the model's name: written into the answers (model_id) and the answer file's name")
    add_flag(a, "--out", "--answer-file", help="default: BENCH_DIR/model_answer/NAME.jsonl")
    a.add_argument("--temperature", type=float, help="one temperature for all (default: per category)")
    add_answerer_args(a, "--name", max_new_tokens=1024)
    a.set_defaults(func=cmd_answer)

    j = sub.add_parser("judge", help="judge answers with an OpenAI-compatible model (resumable)")
    common(j)
    j.add_argument("--mode", default="single", choices=("single", "pairwise-baseline", "pairwise-all"))
    j.add_argument("--judge-model", default="gpt-4")
    j.add_argument("--judge-base-url", help="OpenAI-compatible endpoint (default: the OpenAI API)")
    j.add_argument("--model-list", nargs="+", help="models to judge (default: every answer file)")
    j.add_argument("--baseline-model", default="gpt-3.5-turbo")
    j.add_argument("--answer-dir", help="default: BENCH_DIR/model_answer")
    j.add_argument("--ref-answer-dir", help="default: BENCH_DIR/reference_answer")
    j.add_argument("--ref-model", default="gpt-4", help="reference answers file name (default gpt-4)")
    j.add_argument("--judge-prompts", help="default: BENCH_DIR/judge_prompts.jsonl, else MT-Bench's")
    add_flag(j, "--out", "--output-file",
             help="default: BENCH_DIR/model_judgment/JUDGE_{single,pair}.jsonl")
    j.add_argument("--dry-run", action="store_true", help="check inputs and count the calls; send nothing")
    j.set_defaults(func=cmd_judge)

    s = sub.add_parser("show", help="scores from a judgment file")
    common(s, questions=False)
    add_flag(s, "--data", "--judgment-file", dest="judgment_file", required=True,
             help="a judgment file (model_judgment/JUDGE_single.jsonl or _pair.jsonl)")
    add_flag(s, "--model-list", "--model", dest="model", nargs="+", help="only these models")
    s.add_argument("--json", action="store_true",
                   help="print JSON: one object for one model, else a list of objects")
    s.add_argument("--plot", help="write a radar (single) or bar (pairwise) plot PNG here")
    s.set_defaults(func=cmd_show)
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
