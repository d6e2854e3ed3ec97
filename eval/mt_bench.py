"""MT-Bench with FastChat's file formats: generate answers, judge them with any OpenAI-compatible model, show scores.

Files (FastChat layout under ``--bench-dir``, default ``eval/data/mt_bench``, filled by
``python -m eval.fetch_mt_bench``)::

    question.jsonl                         {"question_id", "category", "turns": [q1, q2]}
    judge_prompts.jsonl                    FastChat's judge prompts (single-v1, single-math-v1, pair-v2, ...)
    reference_answer/gpt-4.jsonl           reference answers for math, reasoning and coding
    model_answer/<model>.jsonl             {"question_id", "answer_id", "model_id", "choices": [{"index", "turns"}], "tstamp"}
    model_judgment/<judge>_single.jsonl    {"question_id", "model", "judge", "user_prompt", "judgment", "score", "turn", ...}
    model_judgment/<judge>_pair.jsonl      {"question_id", "model_1", "model_2", "g1_winner", "g2_winner", ...}

Usage::

    # answers from a local checkpoint (batched; per-category temperatures as MT-Bench defines them)
    python -m eval.mt_bench answer --model-path runs/platolm --model-id platolm-7b [--template dyadic]
    # ... or from any OpenAI-compatible endpoint
    python -m eval.mt_bench answer --base-url http://127.0.0.1:8000/v1 --model platolm --model-id platolm-7b
    # judge (single grading, or pairwise against a baseline / all pairs); resumable
    OPENAI_API_KEY=... python -m eval.mt_bench judge --mode single --judge-model gpt-4 --model-list platolm-7b
    python -m eval.mt_bench judge --judge-base-url http://127.0.0.1:9000/v1 --judge-model local-judge ...
    # scores: a table, or one JSON object per model, and an optional plot
    python -m eval.mt_bench show --judgment-file eval/data/mt_bench/model_judgment/gpt-4_single.jsonl --json
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from eval.judge_client import DEFAULT_KEY_ENV, JsonlLog, SetupError, make_client, run_command, run_jobs
from model.conversation import read_json_records

DEFAULT_BENCH_DIR = Path(__file__).resolve().parent / "data" / "mt_bench"
# FastChat fastchat/llm_judge/common.py
TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
               "reasoning": 0.0, "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0}
NEED_REF_CATS = ("math", "reasoning", "coding", "arena-hard-200")
CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
JUDGE_MAX_TOKENS = 2048
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
def load_questions(path: Path, begin: int | None = None, end: int | None = None,
                   ids: list[int] | None = None) -> list[dict]:
    if not Path(path).is_file():
        raise SetupError(f"question file {path} not found (run `python -m eval.fetch_mt_bench`, "
                         f"or pass --question-file)")
    questions = list(read_json_records(path))
    for i, q in enumerate(questions):
        if not (isinstance(q, dict) and "question_id" in q and isinstance(q.get("turns"), list)):
            raise SetupError(f"{path}: record {i}: not an MT-Bench question (needs question_id and turns)")
    questions = questions[begin:end]
    if ids:
        wanted = set(ids)
        questions = [q for q in questions if q["question_id"] in wanted]
        lost = wanted - {q["question_id"] for q in questions}
        if lost:
            raise SetupError(f"{path}: no question with id {sorted(lost)}")
    return questions


def load_answers(path: Path) -> dict[int, dict]:
    """question_id -> answer record (the last one wins, as in FastChat)."""
    return {a["question_id"]: a for a in read_json_records(path)}


def answer_turns(answer: dict) -> list[str]:
    return answer["choices"][0]["turns"]


def load_judge_prompts(path: Path) -> dict[str, dict]:
    if not Path(path).is_file():
        raise SetupError(f"judge prompt file {path} not found (run `python -m eval.fetch_mt_bench`, "
                         f"or pass --judge-prompts)")
    return {p["name"]: p for p in read_json_records(path)}


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


def answer_local(args, questions: list[dict], log: JsonlLog) -> int:
    """Batched local generation: per temperature group, all first turns, then all second turns."""
    from model.conversation import GPT, HUMAN, Turn
    from model.generate import ContextOverflow, Generator

    gen = Generator(args.model_path, template=args.template)
    groups: dict[float, list[dict]] = defaultdict(list)
    for q in questions:
        groups[temperature_for(q, args.temperature)].append(q)
    written = 0

    def generate(convs, temperature):
        kwargs = dict(role=GPT, system=args.system, temperature=temperature, top_p=args.top_p,
                      max_new_tokens=args.max_new_tokens, seed=args.seed)
        try:
            return [c.text for c in gen.generate(convs, **kwargs)]
        except ContextOverflow:  # find which conversation overflows; the others still get answers
            out = []
            for conv in convs:
                try:
                    out.append(gen.generate([conv], **kwargs)[0].text)
                except ContextOverflow as err:
                    print(f"warning: {err}; answer recorded as ERROR", file=sys.stderr)
                    out.append("ERROR")
            return out

    from tqdm import tqdm

    with tqdm(total=len(questions), desc="answers", unit="q", file=sys.stderr, disable=None) as bar:
        for temperature, group in sorted(groups.items()):
            for start in range(0, len(group), args.batch_size):
                chunk = group[start:start + args.batch_size]
                firsts = generate([[Turn(HUMAN, q["turns"][0])] for q in chunk], temperature)
                convs = [[Turn(HUMAN, q["turns"][0]), Turn(GPT, a), Turn(HUMAN, q["turns"][1])]
                         for q, a in zip(chunk, firsts)]
                seconds = generate(convs, temperature)
                for q, a1, a2 in zip(chunk, firsts, seconds):
                    log.append(answer_record(q["question_id"], args.model_id, [a1.strip(), a2.strip()]))
                    written += 1
                bar.update(len(chunk))
    return written


def answer_remote(args, questions: list[dict], log: JsonlLog) -> int:
    """Each question's two turns in order (the second sees the model's own first answer); questions in parallel."""
    client = make_client(args.base_url, args.api_key_env, args.max_retries)
    model = args.model or args.model_id

    def job(q):
        async def run():
            messages = [{"role": "system", "content": args.system}] if args.system else []
            turns = []
            for text in q["turns"]:
                messages.append({"role": "user", "content": text})
                reply = await client.chat(model, messages, temperature_for(q, args.temperature),
                                   args.max_new_tokens)
                turns.append(reply.strip())
                messages.append({"role": "assistant", "content": reply})
            return answer_record(q["question_id"], args.model_id, turns)
        return run

    written = 0

    def save(record):
        nonlocal written
        log.append(record)
        written += 1

    failures = run_jobs([job(q) for q in questions], save, args.parallel, desc="answers")
    if failures:
        print(f"error: {len(failures)} questions failed (see above); run again to resume", file=sys.stderr)
    return written


def cmd_answer(args) -> int:
    if bool(args.model_path) == bool(args.base_url):
        raise SetupError("give either --model-path (local model) or --base-url (OpenAI-compatible endpoint)")
    bench = Path(args.bench_dir)
    questions = load_questions(Path(args.question_file or bench / "question.jsonl"),
                               args.question_begin, args.question_end, args.question_ids)
    out = Path(args.answer_file or bench / "model_answer" / f"{args.model_id}.jsonl")
    log = JsonlLog(out)
    done = {a["question_id"] for a in log.read()}
    todo = [q for q in questions if q["question_id"] not in done]
    print(f"{len(questions) - len(todo)} of {len(questions)} questions already answered in {out}",
          file=sys.stderr)
    if todo:
        (answer_local if args.model_path else answer_remote)(args, todo, log)
    # FastChat's reorg_answer_file: one answer per question, sorted by id
    answers = {a["question_id"]: a for a in log.read()}
    log.rewrite(answers[k] for k in sorted(answers))
    missing = [q["question_id"] for q in questions if q["question_id"] not in answers]
    print(f"{len(questions) - len(missing)} answers in {out}", file=sys.stderr)
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


def make_matches(mode: str, questions: list[dict], models: list[str], baseline: str,
                 prompts: dict[str, dict], refs: dict[int, dict]) -> list[Match]:
    prefix = "single" if mode == "single" else "pair"
    if mode == "single":
        combos = [(m,) for m in models]
    elif mode == "pairwise-baseline":
        combos = [(m, baseline) for m in models if m != baseline]
    else:
        combos = list(itertools.combinations(models, 2))
    matches = []
    for q in questions:
        math = q.get("category") in NEED_REF_CATS
        for turn in (1, 2):
            name = f"{prefix}-math-v1" if math else f"{prefix}-v1" if mode == "single" else "pair-v2"
            name += "-multi-turn" if turn == 2 else ""
            if name not in prompts:
                raise SetupError(f"judge prompt {name!r} missing from the judge prompt file")
            for combo in combos:
                matches.append(Match(q, combo, turn, prompts[name], refs.get(q["question_id"]) if math else None))
    return matches


def check_inputs(questions, models, answer_dir: Path, ref_file: Path) -> tuple[dict, dict]:
    """Every answer and reference the judge will need, or one error listing all that is missing."""
    problems, answers = [], {}
    ids = [q["question_id"] for q in questions]
    for m in models:
        path = answer_dir / f"{m}.jsonl"
        if not path.is_file():
            problems.append(f"no answers for model {m!r}: {path} not found (run `eval.mt_bench answer`)")
            continue
        answers[m] = load_answers(path)
        lost = [i for i in ids if len(answer_turns(answers[m].get(i, {"choices": [{"turns": []}]}))) < 2]
        if lost:
            problems.append(f"{path}: no two-turn answer for question ids {lost[:10]}"
                            + (f" and {len(lost) - 10} more" if len(lost) > 10 else ""))
    need_ref = [q["question_id"] for q in questions if q.get("category") in NEED_REF_CATS]
    refs = {}
    if need_ref:
        if not ref_file.is_file():
            problems.append(f"reference answers {ref_file} not found (needed for math/reasoning/coding)")
        else:
            refs = load_answers(ref_file)
            lost = [i for i in need_ref if i not in refs]
            if lost:
                problems.append(f"{ref_file}: no reference answer for question ids {lost}")
    if problems:
        raise SetupError("cannot judge, nothing was sent:\n  " + "\n  ".join(problems))
    return answers, refs


def judge_job(client, judge_model: str, match: Match, answers: dict):
    async def run():
        ans = [answers[m][match.question["question_id"]] for m in match.models]
        prompt, qid = match.prompt, match.question["question_id"]

        async def ask(pair_answers):
            user = _fill(prompt, match.question, pair_answers, match.ref, match.turn)
            messages = [{"role": "system", "content": prompt["system_prompt"]}, {"role": "user", "content": user}]
            return user, await client.chat(judge_model, messages, 0.0, JUDGE_MAX_TOKENS)

        common = {"question_id": qid, "category": match.question.get("category"),
                  "judge": [judge_model, prompt["name"]], "turn": match.turn}
        if len(ans) == 1:
            user, judgment = await ask(ans)
            return {"question_id": qid, "model": match.models[0], **common, "user_prompt": user,
                    "judgment": judgment, "score": parse_rating(judgment), "tstamp": time.time()}
        (u1, j1), (u2, j2) = await ask(ans), await ask(ans[::-1])  # both orders, as FastChat
        g1 = {"A": "model_1", "B": "model_2"}.get(parse_winner(j1), parse_winner(j1))
        g2 = {"A": "model_2", "B": "model_1"}.get(parse_winner(j2), parse_winner(j2))
        return {"question_id": qid, "model_1": match.models[0], "model_2": match.models[1], **common,
                "g1_winner": g1, "g2_winner": g2, "g1_user_prompt": u1, "g1_judgment": j1,
                "g2_user_prompt": u2, "g2_judgment": j2, "tstamp": time.time()}
    return run


def judgment_key(rec: dict) -> tuple:
    if "model" in rec:
        return (rec["question_id"], rec["model"], rec["turn"])
    return (rec["question_id"], rec["model_1"], rec["model_2"], rec["turn"])


def cmd_judge(args) -> int:
    bench = Path(args.bench_dir)
    questions = load_questions(Path(args.question_file or bench / "question.jsonl"),
                               args.question_begin, args.question_end, args.question_ids)
    prompts = load_judge_prompts(Path(args.judge_prompts or bench / "judge_prompts.jsonl"))
    answer_dir = Path(args.answer_dir or bench / "model_answer")
    models = args.model_list or sorted(p.stem for p in answer_dir.glob("*.jsonl"))
    if not models:
        raise SetupError(f"no models to judge: {answer_dir} holds no answer files (or pass --model-list)")
    needed = models + ([args.baseline_model] if args.mode == "pairwise-baseline" else [])
    ref_file = Path(args.ref_answer_dir or bench / "reference_answer") / f"{args.ref_model}.jsonl"
    answers, refs = check_inputs(questions, list(dict.fromkeys(needed)), answer_dir, ref_file)
    kind = "single" if args.mode == "single" else "pair"
    judge_name = args.judge_model.replace("/", "_")  # hub-style names must not make directories
    out = Path(args.output_file or bench / "model_judgment" / f"{judge_name}_{kind}.jsonl")
    log = JsonlLog(out)
    done = {judgment_key(r) for r in log.read()}
    matches = make_matches(args.mode, questions, models, args.baseline_model, prompts, refs)
    todo = [m for m in matches if m.key not in done]
    calls = len(todo) * (1 if kind == "single" else 2)
    print(f"{len(matches)} judgments, {len(matches) - len(todo)} already in {out}; "
          f"{calls} judge calls to {args.judge_model}", file=sys.stderr)
    if args.dry_run or not todo:
        return 0
    client = make_client(args.judge_base_url, args.api_key_env, args.max_retries)
    failures = run_jobs([judge_job(client, args.judge_model, m, answers) for m in todo], log.append,
                        args.parallel, desc="judgments")
    if failures:
        print(f"error: {len(failures)} judgments failed (see above); run the same command again to resume",
              file=sys.stderr)
        return 1
    print(f"wrote {len(todo)} judgments to {out}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# show
# ---------------------------------------------------------------------------------------------
def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def single_scores(records: list[dict], categories: dict[int, str] | None = None) -> list[dict]:
    """Per model: overall, turn1, turn2 and per-category mean scores; ratings of -1 excluded and counted."""
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_model[r["model"]].append(r)
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
        out.append({"model": model,
                    "overall": _mean([r["score"] for r in rated]),
                    "turn1": _mean([r["score"] for r in rated if r["turn"] == 1]),
                    "turn2": _mean([r["score"] for r in rated if r["turn"] == 2]),
                    "categories": {c: _mean(cats[c]) for c in order},
                    "num_judgments": len(recs), "num_unrated": len(recs) - len(rated)})
    return out


def pair_scores(records: list[dict]) -> list[dict]:
    """Per model: wins, losses, ties (FastChat: a verdict that flips with the order is a tie); errors counted."""
    stats: dict[str, dict] = defaultdict(lambda: {"win": 0, "loss": 0, "tie": 0, "num_error": 0})
    for r in records:
        m1, m2 = r["model_1"], r["model_2"]
        if "error" in (r["g1_winner"], r["g2_winner"]):
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
    records = JsonlLog(path).read() if Path(path).is_file() else None
    if records is None:
        raise SetupError(f"judgment file {path} not found")
    if not records:
        raise SetupError(f"judgment file {path} is empty")
    if "model" in records[0]:
        categories = None
        if any("category" not in r for r in records) and question_file and Path(question_file).is_file():
            categories = {q["question_id"]: q.get("category") for q in read_json_records(question_file)}
        return "single", single_scores(records, categories)
    return "pairwise", pair_scores(records)


def plot_scores(kind: str, scores: list[dict], path: Path) -> None:
    """Radar plot of category scores (single) or a bar plot of adjusted win rates (pairwise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if kind == "single":
        cats = [c for c in CATEGORIES if any(s["categories"].get(c) is not None for s in scores)]
        if len(cats) < 3:
            raise SetupError("a radar plot needs scores in at least 3 categories")
        angles = np.linspace(0, 2 * np.pi, len(cats), endpoint=False).tolist()
        fig, ax = plt.subplots(figsize=(6, 6), subplot_kw={"polar": True})
        for s in scores:
            vals = [s["categories"].get(c) or 0 for c in cats]
            ax.plot(angles + angles[:1], vals + vals[:1], label=f"{s['model']} ({s['overall']})")
            ax.fill(angles + angles[:1], vals + vals[:1], alpha=0.1)
        ax.set_xticks(angles)
        ax.set_xticklabels(cats)
        ax.set_ylim(0, 10)
        ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize=8)
        ax.set_title("MT-Bench scores per category")
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.bar([s["model"] for s in scores], [s["win_rate_adjusted"] or 0 for s in scores])
        ax.set_ylabel("win rate (ties count half)")
        ax.set_ylim(0, 1)
        ax.set_title("MT-Bench pairwise win rates")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def format_table(kind: str, scores: list[dict]) -> str:
    def f(x):
        return "-" if x is None else f"{x:.2f}"

    if kind == "single":
        lines = [f"{'model':<28} {'overall':>8} {'turn1':>7} {'turn2':>7} {'judged':>7} {'unrated':>8}"]
        for s in scores:
            lines.append(f"{s['model']:<28} {f(s['overall']):>8} {f(s['turn1']):>7} {f(s['turn2']):>7} "
                         f"{s['num_judgments']:>7} {s['num_unrated']:>8}")
        cats = list(dict.fromkeys(c for s in scores for c in s["categories"]))
        if cats:
            lines += ["", f"{'model':<28} " + " ".join(f"{c[:10]:>10}" for c in cats)]
            for s in scores:
                lines.append(f"{s['model']:<28} " + " ".join(f"{f(s['categories'].get(c)):>10}" for c in cats))
        return "\n".join(lines)
    lines = [f"{'model':<28} {'win':>5} {'loss':>5} {'tie':>5} {'win_rate':>9} {'loss_rate':>9} {'adjusted':>9}"]
    for s in scores:
        lines.append(f"{s['model']:<28} {s['win']:>5} {s['loss']:>5} {s['tie']:>5} {f(s['win_rate']):>9} "
                     f"{f(s['loss_rate']):>9} {f(s['win_rate_adjusted']):>9}")
    return "\n".join(lines)


def cmd_show(args) -> int:
    bench = Path(args.bench_dir)
    kind, scores = scores_from_file(Path(args.judgment_file), Path(args.question_file or bench / "question.jsonl"))
    if args.model:
        scores = [s for s in scores if s["model"] in args.model]
        if not scores:
            raise SetupError(f"{args.judgment_file}: no judgments for {', '.join(args.model)}")
    if args.plot:
        plot_scores(kind, scores, Path(args.plot))
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
        sp.add_argument("--bench-dir", default=str(DEFAULT_BENCH_DIR), help="FastChat-style data directory")
        sp.add_argument("--question-file", help="default: BENCH_DIR/question.jsonl")
        if questions:
            sp.add_argument("--question-begin", type=int, help="first question index (slice start, as FastChat)")
            sp.add_argument("--question-end", type=int, help="slice end")
            sp.add_argument("--question-ids", type=_ids, help="comma-separated question ids")
            sp.add_argument("--parallel", type=int, default=8, help="requests in flight (default 8)")
            sp.add_argument("--max-retries", type=int, default=5, help="retries per request (default 5)")
            sp.add_argument("--api-key-env", default=DEFAULT_KEY_ENV, help="environment variable holding the key")

    a = sub.add_parser("answer", help="generate two-turn answers")
    common(a)
    a.add_argument("--model-id", required=True, help="name written into the answers and the file name")
    a.add_argument("--model-path", help="local checkpoint (or 'smollm2'), generated with model.generate")
    a.add_argument("--template", default="dyadic", choices=("dyadic", "chat"))
    a.add_argument("--base-url", help="OpenAI-compatible endpoint instead of a local model")
    a.add_argument("--model", help="model name at --base-url (default: --model-id)")
    a.add_argument("--system", help="system prompt (default: the PlatoLM prompt for local models, none remote)")
    a.add_argument("--answer-file", help="default: BENCH_DIR/model_answer/MODEL_ID.jsonl")
    a.add_argument("--max-new-tokens", type=int, default=1024)
    a.add_argument("--temperature", type=float, help="one temperature for all (default: per category)")
    a.add_argument("--top-p", type=float, default=1.0)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--batch-size", type=int, default=16, help="questions per local batch")
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
    j.add_argument("--judge-prompts", help="default: BENCH_DIR/judge_prompts.jsonl")
    j.add_argument("--output-file", help="default: BENCH_DIR/model_judgment/JUDGE_{single,pair}.jsonl")
    j.add_argument("--dry-run", action="store_true", help="check inputs and count the calls; send nothing")
    j.set_defaults(func=cmd_judge)

    s = sub.add_parser("show", help="scores from a judgment file")
    common(s, questions=False)
    s.add_argument("--judgment-file", required=True)
    s.add_argument("--model", nargs="+", help="only these models")
    s.add_argument("--json", action="store_true",
                   help="print JSON: one object for one model, else a list of objects")
    s.add_argument("--plot", help="write a radar (single) or bar (pairwise) plot PNG here")
    s.set_defaults(func=cmd_show)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
