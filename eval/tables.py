"""The paper's tables from result files: MT-Bench, AlpacaEval, question quality and corpus statistics.

Expected layout of ``--results DIR`` (every part optional; missing parts are left out of the report)::

    DIR/mt_bench/*_single.jsonl        MT-Bench judgment files (FastChat format, from `eval.mt_bench judge`)
    DIR/mt_bench/*_pair.jsonl          pairwise judgment files
    DIR/alpaca_eval/*.json             one summary per model (`eval.alpaca_eval judge --summary FILE`)
    DIR/question_quality/*.json        one object per dataset (`eval.question_quality --out FILE`)
    DIR/corpus_stats/*.json            `python -m data.prepare stats --json` output, one per dataset
                                       (the file name is the dataset name; otherwise the statistics
                                       inside the question-quality files are used)
    DIR/figures/<group>/*.png          any other plots (loss curves, length histograms), shown by group

Usage::

    python -m eval.tables --results results --out results/REPORT.md

Writes the Markdown report and, next to it, ``mt_bench_radar.png`` and ``question_quality.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from eval.judge_client import SetupError
from eval.mt_bench import CATEGORIES, plot_scores, scores_from_file
from model.conversation import atomic_write

CRITERIA = ("complexity", "relevancy", "logicality", "diversity")


def _f(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(map(str, r)) + " |" for r in rows], ""]


def _load_json_dir(d: Path) -> list[tuple[str, dict]]:
    out = []
    for path in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            out.append((path.stem, json.loads(path.read_text(encoding="utf-8"))))
        except json.JSONDecodeError as err:
            raise SetupError(f"{path}: not JSON ({err})") from None
    return out


def mt_bench_section(d: Path, out_dir: Path) -> list[str]:
    lines = []
    for path in sorted(d.glob("*_single.jsonl")) if d.is_dir() else []:
        _, scores = scores_from_file(path)
        cats = [c for c in CATEGORIES if any(s["categories"].get(c) is not None for s in scores)]
        judge = path.name[: -len("_single.jsonl")]
        lines += [f"### MT-Bench, single-answer grading (judge: {judge})", ""]
        lines += _table(["model", "overall", "turn 1", "turn 2", *cats, "unrated"],
                        [[s["model"], _f(s["overall"]), _f(s["turn1"]), _f(s["turn2"]),
                          *[_f(s["categories"].get(c)) for c in cats], s["num_unrated"]] for s in scores])
        if len(cats) >= 3:
            png = out_dir / f"mt_bench_radar_{judge}.png"
            plot_scores("single", scores, png)
            lines += [f"![MT-Bench per category]({png.name})", ""]
    for path in sorted(d.glob("*_pair.jsonl")) if d.is_dir() else []:
        _, scores = scores_from_file(path)
        lines += [f"### MT-Bench, pairwise (judge: {path.name[: -len('_pair.jsonl')]})", ""]
        lines += _table(["model", "win", "loss", "tie", "win rate", "loss rate", "win rate (ties half)"],
                        [[s["model"], s["win"], s["loss"], s["tie"], _f(s["win_rate"], 3), _f(s["loss_rate"], 3),
                          _f(s["win_rate_adjusted"], 3)] for s in scores])
    return lines


def alpaca_section(d: Path) -> list[str]:
    items = _load_json_dir(d)
    if not items:
        return []
    rows = [[s.get("model", stem), s.get("annotator", "-"), _f(s.get("win_rate")), _f(s.get("standard_error")),
             _f(s.get("lc_win_rate")), _f(s.get("n_total"), 0)] for stem, s in items]
    return ["### AlpacaEval", "", *_table(["model", "annotator", "win rate %", "std. error", "LC win rate %", "n"], rows)]


def quality_section(items: list[tuple[str, dict]], out_dir: Path) -> list[str]:
    if not items:
        return []
    rows = []
    for stem, q in items:
        j = q.get("judge", {})
        rows.append([q.get("name", stem), q["num_sessions"], q["num_questions"], _f(q.get("avg_rounds")),
                     _f(q["topic_diversity"], 4), _f(q["topic_diversity_offdiag"], 4), _f(q.get("mtld")),
                     _f(q.get("human_ratio"), 3), *[_f(j.get(c)) for c in CRITERIA]])
    header = ["dataset", "sessions", "questions", "rounds", "topic div. (cos, ↓)", "off-diagonal", "MTLD ↑",
              "human-like ↑", *CRITERIA]
    png = out_dir / "question_quality.png"
    plot_quality(items, png)
    return ["### Question quality", "", *_table(header, rows),
            "Topic diversity is the mean pairwise cosine similarity of the question embeddings over the full "
            "matrix (diagonal included, as in the paper); the off-diagonal mean leaves out each question's "
            "similarity to itself.", "", f"![question quality]({png.name})", ""]


def plot_quality(items: list[tuple[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [q.get("name", stem) for stem, q in items]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(names, [q["topic_diversity"] for _, q in items])
    axes[0].set_title("topic diversity (mean cosine, lower = more diverse)")
    axes[1].bar(names, [q.get("mtld") or 0 for _, q in items])
    axes[1].set_title("lexical diversity (MTLD)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stats_section(stats: list[tuple[str, dict]]) -> list[str]:
    if not stats:
        return []
    rows = [[name, s["sessions"], _f(s["avg_rounds"]), _f(s.get("avg_human_utterance_tokens")),
             _f(s.get("avg_assistant_utterance_tokens")), _f(s["avg_session_tokens"])] for name, s in stats]
    return ["### Corpus statistics", "",
            *_table(["dataset", "sessions", "rounds / session", "tokens / question", "tokens / answer",
                     "tokens / session"], rows)]


def figures_section(d: Path, out_dir: Path) -> list[str]:
    """Embed the PNGs under DIR/figures/<group>/ (e.g. training loss curves, length histograms)."""
    groups = sorted(g for g in d.iterdir() if g.is_dir()) if d.is_dir() else []
    lines = []
    for group in groups:
        pngs = sorted(group.glob("*.png"))
        if pngs:
            lines += [f"### {group.name.replace('_', ' ')}", ""]
            lines += [f"![{png.stem}]({Path(os.path.relpath(png, out_dir)).as_posix()})" for png in pngs] + [""]
    return lines


def build_report(results: Path, out: Path) -> str:
    if not results.is_dir():
        raise SetupError(f"results directory {results} not found")
    out.parent.mkdir(parents=True, exist_ok=True)
    quality = _load_json_dir(results / "question_quality")
    stats = _load_json_dir(results / "corpus_stats")
    named = {n for n, _ in stats}
    stats += [(q.get("name", stem), q["stats"]) for stem, q in quality if "stats" in q and q.get("name", stem) not in named]
    body = (mt_bench_section(results / "mt_bench", out.parent) + alpaca_section(results / "alpaca_eval")
            + quality_section(quality, out.parent) + stats_section(stats)
            + figures_section(results / "figures", out.parent))
    if not body:
        raise SetupError(f"{results} holds no result files (see `python -m eval.tables --help` for the layout)")
    return "\n".join([f"# Results ({results})", "", *body])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.tables", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--results", required=True, type=Path, help="results directory (layout above)")
    p.add_argument("--out", required=True, type=Path, help="Markdown report to write")
    args = p.parse_args(argv)
    try:
        report = build_report(args.results, args.out)
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyError as err:
        print(f"error: a result file under {args.results} lacks the field {err}", file=sys.stderr)
        return 2
    atomic_write(args.out, lambda f: f.write(report))
    print(f"report written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
