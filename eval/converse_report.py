"""What ``eval.converse show`` and ``agreement`` report, and the table ``eval.tables`` includes.

Statistics come from the field's libraries: 95 % percentile bootstrap intervals from
``scipy.stats.bootstrap`` (resampling conversations: every assistant met the same users, so an interval is
over users), Spearman's rho and Kendall's tau from ``scipy.stats``, and the Bradley-Terry strengths as a
logistic regression (scikit-learn) on the pairwise outcomes, each seen from both sides, a tie as half a
win; L2-regularised (C = 1) so that a clean sweep stays finite; shown on the Elo scale (1000 + 400 log10-odds).

Per assistant: ``mean`` and ``ci``: the mean rating per conversation (the ``conversation`` judge's rating,
else the mean of its ``turn`` ratings); ``ratings``: each kind with its interval, the turn ratings both as
the mean and the minimum over a conversation's turns (as MT-Bench-101); ``win_rate`` and ``win_rate_ci``:
the share of pairwise comparisons won (a tie counts half; the two orders disagreeing is a tie) against the
baseline, or against every other assistant when the verdicts have none; ``bt``: the Bradley-Terry strength;
then turns, end reasons, simulator failures (counted apart: they are the simulator's, not the assistant's),
tokens and cost per conversation, failed conversations and judge errors.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.errors import UsageError
from eval.converse_judge import MODES, RunFolder, judge_dir

N_RESAMPLES = 2000
CONFIDENCE = 0.95
SIMULATOR_FAILURES = ("empty", "assistant_like", "repeated")


def bootstrap_ci(samples: Sequence[np.ndarray], statistic: Callable, seed: int = 0,
                 paired: bool = False) -> list[float] | None:
    """The 95 % percentile bootstrap interval of ``statistic(*samples)`` (None with fewer than 2 observations).

    Resamples on which the statistic is undefined (a correlation of a constant resample) are left out."""
    from scipy.stats import bootstrap

    if min(len(s) for s in samples) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant resamples, degenerate distributions
        res = bootstrap(tuple(samples), statistic, n_resamples=N_RESAMPLES, paired=paired, vectorized=False,
                        confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed))
        lo, hi = res.confidence_interval
        if not (np.isfinite(lo) and np.isfinite(hi)):
            tail = 100 * (1 - CONFIDENCE) / 2
            lo, hi = np.nanpercentile(res.bootstrap_distribution, [tail, 100 - tail])
    return None if np.isnan(lo) else [round(float(lo), 4), round(float(hi), 4)]


def mean_ci(values: Sequence[float], seed: int = 0) -> dict:
    x = np.asarray(values, dtype=float)
    return {"mean": round(float(x.mean()), 4) if len(x) else None, "ci": bootstrap_ci([x], np.mean, seed),
            "n": len(x)}


# -- ratings, win rates, Bradley-Terry ---------------------------------------------------------------
def conversation_ratings(turn: list[dict], conversation: list[dict]) -> dict[str, dict[str, dict]]:
    """assistant -> kind (conversation, turn_mean, turn_min) -> conversation id -> rating; errors left out."""
    per_conv: dict[tuple, list[float]] = defaultdict(list)
    for v in turn:
        if v["rating"] is not None:
            per_conv[(v["assistant"], v["id"])].append(v["rating"])
    out: dict[str, dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
    for (name, cid), rs in per_conv.items():
        out[name]["turn_mean"][cid], out[name]["turn_min"][cid] = sum(rs) / len(rs), min(rs)
    for v in conversation:
        if v["rating"] is not None:
            out[v["assistant"]]["conversation"][v["id"]] = v["rating"]
    return out


def pair_scores(pairs: list[dict], name: str, baseline: str | None) -> list[float]:
    """``name``'s score in each of its comparisons (1 won, 0.5 tie, 0 lost), against ``baseline`` if given."""
    scores = []
    for v in pairs:
        sides = (v["assistant_1"], v["assistant_2"])
        if v["winner"] is None or name not in sides or (baseline is not None and baseline not in sides):
            continue
        scores.append(1.0 if v["winner"] == name else 0.5 if v["winner"] == "tie" else 0.0)
    return scores


def bradley_terry(pairs: list[dict]) -> dict[str, float]:
    """Bradley-Terry strengths on the Elo scale from the pairwise outcomes (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression

    names = sorted({v[k] for v in pairs for k in ("assistant_1", "assistant_2")})
    rows, labels, weights = [], [], []
    for v in pairs:
        if v["winner"] is None:
            continue
        x = np.zeros(len(names))
        x[names.index(v["assistant_1"])], x[names.index(v["assistant_2"])] = 1.0, -1.0
        first = 1.0 if v["winner"] == v["assistant_1"] else 0.5 if v["winner"] == "tie" else 0.0
        for sign, won in ((1.0, first), (-1.0, 1.0 - first)):  # each outcome from both sides
            for label, weight in ((1, won), (0, 1.0 - won)):
                if weight:
                    rows.append(sign * x)
                    labels.append(label)
                    weights.append(weight)
    if len(set(labels)) < 2:
        return {}
    fit = LogisticRegression(fit_intercept=False, C=1.0).fit(np.array(rows), labels, sample_weight=weights)
    return {n: round(1000 + 400 * float(c) / math.log(10), 1) for n, c in zip(names, fit.coef_[0])}


def position_bias(pairs: list[dict]) -> dict:
    """How often the verdict followed the position, not the conversation: the same position won both orders."""
    parsed = [v["positions"] for v in pairs if v["winner"] is not None]
    first = sum(p == ["A", "A"] for p in parsed)
    second = sum(p == ["B", "B"] for p in parsed)
    return {"n": len(parsed), "first": first, "second": second,
            "rate": round((first + second) / len(parsed), 4) if parsed else None}


# -- the summary show prints -------------------------------------------------------------------------
def pick_judge(folder: RunFolder, judge: str | None) -> str | None:
    judges = folder.judges()
    if judge is not None:
        if judge_dir(judge) not in judges:
            raise UsageError(f"{folder.path}: no verdicts of judge {judge!r} (judged by: {', '.join(judges) or 'none'})")
        return judge
    if len(judges) > 1:
        raise UsageError(f"{folder.path}: judged by {', '.join(judges)}; choose one with --judge-model")
    return judges[0] if judges else None


def conversation_figures(recs: list[dict], skipped: list[dict], failed: int) -> dict:
    """What the conversations themselves show: turns, end reasons, simulator failures, tokens and cost."""
    failures = Counter()
    for r in recs:
        failures.update(r.get("simulator_failures", {}))
    failures["empty"] += sum(r.get("end_reason") == "empty_question" for r in skipped)
    with_failure = sum(any(r.get("simulator_failures", {}).values()) for r in recs)
    n = len(recs)
    avg = (lambda xs: round(sum(xs) / n, 4) if n else None)  # noqa: E731
    return {"conversations": n, "failed": failed, "skipped": len(skipped),
            "avg_turns": avg([r["num_of_rounds"] for r in recs]),
            "end_reasons": dict(Counter(r["end_reason"] for r in recs).most_common()),
            "simulator_failure_rate": avg([1.0] * with_failure),
            "simulator_failures": {k: failures[k] for k in SIMULATOR_FAILURES},
            "tokens_per_conversation": avg([r["calls"]["tokens"] for r in recs]),
            "cost_per_conversation": avg([r["calls"]["cost"] for r in recs])}


def summarize(folder: RunFolder, judge: str | None = None, baseline: str | None = None, seed: int = 0) -> dict:
    """The ``show --json`` object: ``{"run", "judge", "baseline", "assistants": [...], "pairwise": {...}}``."""
    judge = pick_judge(folder, judge)
    verdicts = {m: folder.verdicts(judge, m) if judge else [] for m in MODES}
    judge = next((v["judge"] for m in MODES for v in verdicts[m]), judge)  # its name, not its folder's
    pairs = verdicts["pairwise"]
    if baseline is None:
        recorded = {v.get("baseline") for v in pairs}
        baseline = recorded.pop() if len(recorded) == 1 else None
    if baseline is not None and baseline not in folder.assistants():
        raise UsageError(f"--baseline {baseline!r} is not an assistant of {folder.path}")
    ratings = conversation_ratings(verdicts["turn"], verdicts["conversation"])
    bt = bradley_terry(pairs)
    done, skipped, failed = (folder.conversations(k) for k in ("done", "skipped", "failed"))
    rows = []
    for name in folder.assistants():
        kinds = {k: mean_ci(list(v.values()), seed) for k, v in ratings[name].items()}
        main = kinds.get("conversation") or kinds.get("turn_mean") or {"mean": None, "ci": None}
        wins = pair_scores(pairs, name, baseline) if name != baseline else []
        win = mean_ci(wins, seed) if wins else {"mean": None, "ci": None}
        errors = sum(v["error"] is not None and name in (v.get("assistant"), v.get("assistant_1"), v.get("assistant_2"))
                     for m in MODES for v in verdicts[m])
        rows.append({"name": name, "mean": main["mean"], "ci": main["ci"],
                     "rating_source": "conversation" if "conversation" in kinds else "turn" if kinds else None,
                     "ratings": kinds, "win_rate": win["mean"], "win_rate_ci": win["ci"], "bt": bt.get(name),
                     **conversation_figures(list(done[name].values()), list(skipped[name].values()),
                                            len(failed[name])),
                     "judge_errors": errors})
    rows.sort(key=lambda r: tuple(-(r[k] if r[k] is not None else -math.inf) for k in ("mean", "win_rate", "bt")))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return {"run": str(folder.path), "judge": judge, "baseline": baseline, "assistants": rows,
            "pairwise": {"verdicts": len(pairs), "errors": sum(v["winner"] is None for v in pairs),
                         "position_bias": position_bias(pairs)}}


# -- rendering ------------------------------------------------------------------------------------------
def _f(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _with_ci(value, ci, digits: int = 2) -> str:
    return _f(value, digits) + (f" [{_f(ci[0], digits)}, {_f(ci[1], digits)}]" if ci else "")


def markdown(summary: dict) -> list[str]:
    """The show table (and the pairwise line) as Markdown lines."""
    rows, base = summary["assistants"], summary["baseline"]
    turn_min = any("turn_min" in r["ratings"] for r in rows)
    header = ["rank", "assistant", "rating [95% CI]", *(["min turn rating"] if turn_min else []),
              f"win rate vs {base}" if base else "win rate", "BT (Elo)", "conversations", "turns", "ended by",
              "simulator failures", "tokens / conv.", "cost / conv.", "failed", "judge errors"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        tmin = r["ratings"].get("turn_min", {})
        fails = ", ".join(f"{k} {v}" for k, v in r["simulator_failures"].items() if v) or "none"
        cells = [r["rank"], r["name"], _with_ci(r["mean"], r["ci"]),
                 *([_with_ci(tmin.get("mean"), tmin.get("ci"))] if turn_min else []),
                 _with_ci(r["win_rate"], r["win_rate_ci"], 3), _f(r["bt"], 0), r["conversations"],
                 _f(r["avg_turns"], 1), ", ".join(f"{k} {v}" for k, v in r["end_reasons"].items()) or "-",
                 f"{_f(r['simulator_failure_rate'], 2)} ({fails})", _f(r["tokens_per_conversation"], 0),
                 f"${r['cost_per_conversation']:.4f}" if r["cost_per_conversation"] is not None else "-",
                 r["failed"], r["judge_errors"]]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    p = summary["pairwise"]
    if p["verdicts"]:
        bias = p["position_bias"]
        lines += ["", f"Pairwise: {p['verdicts']} verdicts ({p['errors']} without a verdict), each asked in both "
                      f"orders; the same position won both orders {bias['first']} times (first) and "
                      f"{bias['second']} times (second) of {bias['n']} (position bias {_f(bias['rate'], 3)})."]
    lines += ["", f"Judge: {summary['judge'] or 'none yet'}. Intervals: 95 % bootstrap over conversations. "
                  "Simulator failures are the simulator's (empty, assistant-like or repeated user turns), not the "
                  "assistant's."]
    return lines


def plot(summary: dict, path: Path) -> None:
    """Bars of the mean rating (and win rate) per assistant with their 95 % intervals."""
    from core.plots import figure

    rows = summary["assistants"]
    panels = [(k, ci, label, top) for k, ci, label, top in
              (("mean", "ci", "mean rating (1-10)", 10), ("win_rate", "win_rate_ci", "win rate", 1))
              if any(r[k] is not None for r in rows)]
    if not panels:
        return
    with figure(path, figsize=(4 + 2.5 * len(panels), 3.5), ncols=len(panels)) as (fig, axes):
        for ax, (key, ci, label, top) in zip(np.atleast_1d(axes), panels):
            values = [r[key] or 0 for r in rows]
            err = [[v - (r[ci] or [v, v])[0] for v, r in zip(values, rows)],
                   [(r[ci] or [v, v])[1] - v for v, r in zip(values, rows)]]
            ax.bar([r["name"] for r in rows], values, yerr=err, capsize=4)
            ax.set_ylim(0, top)
            ax.set_ylabel(label)
            ax.tick_params(axis="x", rotation=30)
        fig.suptitle(f"conversations judged by {summary['judge']} (95 % bootstrap intervals)")
        fig.tight_layout()


def tables_section(results: Path, out_dir: Path) -> list[str]:
    """``eval.tables``: a table (and chart) per converse run under ``results/converse`` (the folder itself, or
    one folder per run), per judge."""
    base = results / "converse"
    runs = [base] if (base / "run.json").is_file() else sorted(p.parent for p in base.glob("*/run.json"))
    lines = []
    for run in runs:
        folder = RunFolder(run)
        for judge in folder.judges() or [None]:
            summary = summarize(folder, judge)
            png = out_dir / f"converse_{run.name}_{judge or 'unjudged'}.png"
            plot(summary, png)
            lines += [f"### {run.name}: assistants evaluated by conversation (judge: {judge or 'none yet'})", "",
                      *markdown(summary), ""]
            lines += [f"![{run.name}]({png.name})", ""] if png.is_file() else []
    return ["## Evaluation by conversation", "", *lines] if lines else []


# -- agreement with people ---------------------------------------------------------------------------
def correlations(human: np.ndarray, judge: np.ndarray, samples: Sequence[np.ndarray] | None = None,
                 seed: int = 0) -> dict:
    """Spearman and Kendall between ``human`` and ``judge``, each with a bootstrap interval: paired over
    conversations, or (``samples``: index arrays per model) over the models' means, resampling within each model."""
    from scipy.stats import kendalltau, spearmanr

    def stat(fn, key):
        if samples is None:
            return {key: _r(fn(human, judge).statistic),
                    "ci": bootstrap_ci([human, judge], lambda h, j: fn(h, j).statistic, seed, paired=True)}
        means = lambda *idx: fn([human[i].mean() for i in idx], [judge[i].mean() for i in idx]).statistic  # noqa: E731
        return {key: _r(means(*samples)), "ci": bootstrap_ci(samples, means, seed)}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input gives NaN, reported as null
        return {"spearman": stat(spearmanr, "rho"), "kendall": stat(kendalltau, "tau")}


def _r(x) -> float | None:
    return None if x is None or np.isnan(x) else round(float(x), 4)


def agreement_report(records: list[dict], seed: int = 0) -> dict:
    """``agreement --json``: per conversation at the top level, and between the models' rankings."""
    rated = [r for r in records if r["judge"] is not None]
    if len(rated) < 2:
        raise UsageError(f"only {len(rated)} conversations have both ratings; agreement needs at least 2")
    human, judge = (np.array([r[k] for r in rated], dtype=float) for k in ("human", "judge"))
    by_model: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rated):
        by_model[r["model"]].append(i)
    models = sorted(by_model)
    ranking = sorted(({"model": m, "n": len(by_model[m]), "human": round(float(human[by_model[m]].mean()), 4),
                       "judge": round(float(judge[by_model[m]].mean()), 4)} for m in models),
                     key=lambda x: -x["human"])
    return {"n": len(rated), "errors": len(records) - len(rated), **correlations(human, judge, seed=seed),
            "models": {"n": len(models), **correlations(human, judge, [np.array(by_model[m]) for m in models], seed),
                       "ranking": ranking}}


def agreement_text(report: dict, judge: str) -> str:
    def line(what: str, r: dict) -> str:
        return (f"{what}: Spearman {_with_ci(r['spearman']['rho'], r['spearman']['ci'], 3)}, "
                f"Kendall {_with_ci(r['kendall']['tau'], r['kendall']['ci'], 3)}")

    m = report["models"]
    rows = [f"  {x['model']:<24} n={x['n']:<4} people {x['human']:.2f}  judge {x['judge']:.2f}" for x in m["ranking"]]
    return "\n".join([f"judge {judge} vs people on {report['n']} conversations "
                      f"({report['errors']} judge replies without a rating left out)",
                      line("per conversation", report), line(f"ranking of {m['n']} models", m), *rows,
                      "(intervals: 95 % bootstrap)"])
