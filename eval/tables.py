"""The paper's tables from result files: MT-Bench, Vicuna-Bench, AlpacaEval, question quality, corpus
statistics, the ablations and the simulator's own quality; with ``--paper``, the published numbers beside ours.

Layout of ``--data DIR`` (every part optional; a part without files is left out of the report, or,
with ``--paper``, shown with the published numbers only). A *group* is a directory holding any of::

    mt_bench/*_single.jsonl, *_pair.jsonl      MT-Bench judgment files (FastChat format, `eval.mt_bench judge`)
    vicuna_bench/*_single.jsonl, *_pair.jsonl  Vicuna-Bench judgment files (`eval.mt_bench judge --bench vicuna_bench`)
    alpaca_eval/*.json                         one summary per model and version (`eval.alpaca_eval judge --out`)
    question_quality/*.json                    one object per corpus (`eval.question_quality --out DIR`)
    corpus_stats/*.json                        `python -m data.prepare stats --json` output, one per corpus (the
                                               file name is the corpus name; otherwise the statistics inside the
                                               question-quality files are used)

The groups, one per table of the paper (model ids name the rows: name them after what differs)::

    DIR/                          main results: PlatoLM against the other 7B models
    DIR/baselines_10k/            10K comparison: models trained on 10K sessions of Baize, UltraChat,
                                  Vicuna-ShareGPT and SocraticChat (e.g. ids baize-10k, ultrachat-10k, ...)
    DIR/ablations/seeds/          free vs WizardLM vs Dolly seeds (e.g. platolm-free-10k, platolm-wizardlm-10k)
    DIR/ablations/turns/          turn ablation: models trained on sessions cut to 1, 2, ... rounds
                                  (e.g. platolm-turns-1, platolm-turns-2, ...; drawn as a figure too)
    DIR/ablations/backbones/      backbone pairing: Socratic and PlatoLM backbones crossed
                                  (e.g. socratic-llama1-platolm-llama2)

and, besides the groups::

    DIR/simulator/*.json          `python -m eval.simulator ... --out FILE`: one metric of one simulator per file
    DIR/converse/                 a run folder of `python -m eval.converse` (or one folder per run): its `show` table
    DIR/figures/<group>/*.png     any other plots (loss curves, length histograms), shown by group

Published numbers live in ``eval/paper_numbers.yaml`` with their sources; a result file whose model id is
one of a published row's ``aliases`` is put right under that row.

Usage::

    python -m eval.tables --data results --out results/REPORT.md
    python -m eval.tables --data results --out results/PAPER.md --paper

Writes the Markdown report and, next to it, the figures (``*_radar_<judge>.png``, ``question_quality.png``,
``turn_ablation.png``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

from eval.converse_report import tables_section as converse_section
from eval.mt_bench import BENCH_TITLES, CATEGORIES, plot_scores, scores_from_file
from eval.question_quality import CRITERIA
from core.conversation import atomic_write
from core.errors import UsageError
from core.options import add_flag
from core.runner import command

PAPER_NUMBERS = Path(__file__).resolve().parent / "paper_numbers.yaml"
# (directory under --data, key in paper_numbers.yaml, heading)
GROUPS = (("", "main", "Main results"),
          ("baselines_10k", "baselines_10k", "10K comparison: Baize, UltraChat, Vicuna-ShareGPT, SocraticChat"),
          ("ablations/seeds", "seeds", "Ablation: free vs WizardLM vs Dolly seeds"),
          ("ablations/turns", "turns", "Ablation: number of turns"),
          ("ablations/backbones", "backbones", "Ablation: backbone pairing"))
SHAREGPT_HUMANS = "ShareGPT humans"
GOAL_LEAKAGE = ("goal_leakage", "goal leakage in turn 1 ↓")  # intent-adherence's sessions, or goal-leakage's openings
# simulator metric -> (field, column) pairs, in column order (a column several metrics fill is shown once)
SIMULATOR_COLUMNS = {"perplexity": (("nll", "held-out human-turn NLL ↓"), ("ppl", "perplexity ↓"),
                                    ("nll_without", "NLL without the intent")),
                     "diversity": (("distinct_1", "distinct-1 ↑"),
                                   ("pairwise_similarity", "pairwise similarity ↓")),
                     "human_likeness": (("human_likeness", "human-likeness ↑"),),
                     "role_adherence": (("role_adherence", "role adherence ↑"),),
                     "termination": (("f1", "termination F1 ↑"),),
                     "intent_adherence": (("intent_accuracy", "intent top-1 ↑"), ("intent_chance", "chance"),
                                          ("intent_judge", "judge: pursues the intent ↑"),
                                          ("first_round_end", "ended in round 1"), GOAL_LEAKAGE),
                     "goal_leakage": (GOAL_LEAKAGE,)}


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
            raise UsageError(f"{path}: not JSON ({err})") from None
    return out


def load_paper_numbers(path: Path = PAPER_NUMBERS) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def interleave(ours: list[tuple[str, list]], published: list[dict], paper_row) -> list[list]:
    """Table rows: each published row ("paper: <source>") followed by our rows whose name is one of its
    aliases; then our other rows. ``ours`` is [(name, row)], ``paper_row(p)`` renders a published one."""
    rows, used = [], set()
    for p in published:
        rows.append(paper_row(p, "paper: " + p["source"]))
        names = {_norm(a) for a in p.get("aliases", [])}
        for i, (name, row) in enumerate(ours):
            if i not in used and _norm(name) in names:
                rows.append(row)
                used.add(i)
    return rows + [row for i, (_, row) in enumerate(ours) if i not in used]


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
def bench_section(d: Path, bench: str, published: list[dict], out_dir: Path, tag: str) -> list[str]:
    """Single-grading tables (with the published rows) and pairwise tables of one benchmark's judgment files."""
    title, lines = BENCH_TITLES[bench], []
    singles = sorted(d.glob("*_single.jsonl")) if d.is_dir() else []
    for path in singles or ([None] if published else []):
        scores = scores_from_file(path)[1] if path else []
        judge = path.name[: -len("_single.jsonl")] if path else "-"
        cats = [c for c in CATEGORIES if any(s["categories"].get(c) is not None for s in scores)]
        turns = ["turn1", "turn2"] if any("turn2" in s for s in scores + published) else ["turn1"]
        header = ["model", "source", "overall", *[t.replace("turn", "turn ") for t in turns], *cats, "unrated"]
        ours = [(s["model"], [s["model"], "ours", _f(s["overall"]), *[_f(s.get(t)) for t in turns],
                              *[_f(s["categories"].get(c)) for c in cats], s["num_unrated"]]) for s in scores]
        rows = interleave(ours, published, lambda p, src: [p["model"], src, _f(p.get("overall")),
                                                           *[_f(p.get(t)) for t in turns],
                                                           *[_f(p.get(c)) for c in cats], "-"])
        lines += [f"### {title}, single-answer grading (judge: {judge})", "", *_table(header, rows)]
        if not scores:
            lines += [f"(no judgment files under {d})", ""]
        if len(cats) >= 3:
            png = out_dir / f"{tag}{bench}_radar_{judge}.png"
            plot_scores("single", scores, png, title)
            lines += [f"![{title} per category]({png.name})", ""]
    for path in sorted(d.glob("*_pair.jsonl")) if d.is_dir() else []:
        _, scores = scores_from_file(path)
        lines += [f"### {title}, pairwise (judge: {path.name[: -len('_pair.jsonl')]})", ""]
        lines += _table(["model", "win", "loss", "tie", "errors", "win rate", "loss rate", "win rate (ties half)"],
                        [[s["model"], s["win"], s["loss"], s["tie"], s["num_error"], _f(s["win_rate"], 3),
                          _f(s["loss_rate"], 3), _f(s["win_rate_adjusted"], 3)] for s in scores])
    return lines


def alpaca_section(d: Path, published: list[dict]) -> list[str]:
    items = _load_json_dir(d)
    if not items and not published:
        return []

    def row(s: dict, source: str) -> list:
        return [s.get("model", "-"), source, s.get("version", "-"), s.get("annotator", "-"), _f(s.get("win_rate")),
                _f(s.get("standard_error")), _f(s.get("lc_win_rate")), _f(s.get("n_total"), 0)]

    ours = [(s.get("model", stem), row({"model": stem, **s}, "ours")) for stem, s in items]
    rows = interleave(ours, published, row)
    return ["### AlpacaEval", "", *_table(["model", "source", "version", "annotator", "win rate %", "std. error",
                                            "LC win rate %", "n"], rows)]


def quality_section(items: list[tuple[str, dict]], out_dir: Path, tag: str) -> list[str]:
    if not items:
        return []
    rows = []
    for stem, q in items:
        j = q.get("judge", {})
        rows.append([q.get("name", stem), q["num_sessions"], q["num_questions"], _f(q.get("avg_rounds")),
                     _f(q["topic_diversity"], 4), _f(q["topic_diversity_offdiag"], 4), q.get("embedder", "-"),
                     _f(q.get("mtld")), _f(q.get("human_ratio"), 3), *[_f(j.get(c)) for c in CRITERIA],
                     _f(j.get("num_errors"), 0)])
    header = ["corpus", "sessions", "questions", "rounds", "topic div. (cos, ↓)", "off-diagonal", "embedder",
              "MTLD ↑", "human-like ↑", *CRITERIA, "judge errors"]
    png = out_dir / f"{tag}question_quality.png"
    plot_quality(items, png)
    return ["### Question quality", "", *_table(header, rows),
            "Topic diversity is the mean pairwise cosine similarity of the question embeddings over the full "
            "matrix (diagonal included, as in the paper); the off-diagonal mean leaves out each question's "
            "similarity to itself. Values from different embedders are not comparable.", "",
            f"![question quality]({png.name})", ""]


def plot_quality(items: list[tuple[str, dict]], path: Path) -> None:
    from core.plots import figure

    names = [q.get("name", stem) for stem, q in items]
    with figure(path, figsize=(9, 3.5), ncols=2) as (fig, axes):
        axes[0].bar(names, [q["topic_diversity"] for _, q in items])
        axes[0].set_title("topic diversity (mean cosine, lower = more diverse)")
        axes[1].bar(names, [q.get("mtld") or 0 for _, q in items])
        axes[1].set_title("lexical diversity (MTLD)")
        for ax in axes:
            ax.tick_params(axis="x", rotation=30)
        fig.tight_layout()


def stats_section(stats: list[tuple[str, dict]], published: list[dict]) -> list[str]:
    if not stats and not published:
        return []
    rows = [[p["dataset"], "paper: " + p["source"], p["sessions"], p.get("utterances", "-"), "-",
             _f(p.get("avg_utterance_tokens")), "-", "-", _f(p.get("avg_session_tokens"))] for p in published]
    rows += [[name, "ours", s["sessions"], s.get("utterances", "-"), _f(s["avg_rounds"]),
              _f(s.get("avg_utterance_tokens")), _f(s.get("avg_human_utterance_tokens")),
              _f(s.get("avg_assistant_utterance_tokens")), _f(s["avg_session_tokens"])] for name, s in stats]
    return ["### Corpus statistics", "",
            *_table(["corpus", "source", "sessions", "utterances", "rounds / session", "tokens / utterance",
                     "tokens / question", "tokens / answer", "tokens / session"], rows),
            "Token counts depend on the tokenizer: the original counted with LLaMA-1's.", ""]


def turns_figure(d: Path, out_dir: Path, tag: str) -> list[str]:
    """The turn ablation as a figure: overall, turn-1 and turn-2 MT-Bench scores per model."""
    from core.plots import figure

    singles = sorted((d / "mt_bench").glob("*_single.jsonl")) if (d / "mt_bench").is_dir() else []
    if not singles:
        return []
    scores = scores_from_file(singles[0])[1]
    png = out_dir / f"{tag}turn_ablation.png"
    with figure(png, figsize=(7, 4)) as (_, ax):
        for key in ("overall", "turn1", "turn2"):
            ax.plot([s["model"] for s in scores], [s.get(key) for s in scores], marker="o", label=key)
        ax.set_ylabel("MT-Bench score")
        ax.tick_params(axis="x", rotation=30)
        ax.legend()
    return [f"![turn ablation]({png.name})", ""]


def group_section(results: Path, sub: str, key: str, heading: str, paper: dict | None, out: Path) -> list[str]:
    """Every table of one group; with ``--paper`` the group is shown even when only published numbers exist."""
    d, published = results / sub, (paper or {}).get(key, {})
    tag = sub.replace("/", "_") + "_" if sub else ""
    quality = _load_json_dir(d / "question_quality")
    stats = _load_json_dir(d / "corpus_stats")
    named = {n for n, _ in stats}
    stats += [(q.get("name", stem), q["stats"]) for stem, q in quality
              if "stats" in q and q.get("name", stem) not in named]
    body = (bench_section(d / "mt_bench", "mt_bench", published.get("mt_bench", []), out.parent, tag)
            + bench_section(d / "vicuna_bench", "vicuna_bench", published.get("vicuna_bench", []), out.parent, tag)
            + alpaca_section(d / "alpaca_eval", published.get("alpaca_eval", []))
            + quality_section(quality, out.parent, tag) + stats_section(stats, published.get("corpus_stats", []))
            + (turns_figure(d, out.parent, tag) if key == "turns" else []))
    if not body and paper is not None and sub:
        body = [f"(no published numbers known to this project, and no results under {d})", ""]
    return [f"## {heading}", "", *body] if body else []


def simulator_section(d: Path) -> list[str]:
    """One row per simulator ("ShareGPT humans", the reference, first), one column per metric field."""
    items = _load_json_dir(d)
    if not items:
        return []
    cells: dict[str, dict] = defaultdict(dict)
    for stem, r in items:
        if r.get("metric") not in SIMULATOR_COLUMNS:
            raise UsageError(f"{d / stem}.json: unknown metric {r.get('metric')!r} "
                             f"(one of {', '.join(SIMULATOR_COLUMNS)})")
        row = cells[r.get("name", stem)]
        row.setdefault("source", r.get("model") or r.get("data") or "-")
        for field, _ in SIMULATOR_COLUMNS[r["metric"]]:
            row[field] = r.get(field, row.get(field))
    names = sorted(cells, key=lambda n: (n != SHAREGPT_HUMANS, n))
    columns = [c for c in dict.fromkeys(c for metric in SIMULATOR_COLUMNS.values() for c in metric)
               if any(row.get(c[0]) is not None for row in cells.values())]  # those no file fills are left out
    rows = [[n, cells[n]["source"], *[_f(cells[n].get(field), 3) for field, _ in columns]] for n in names]
    return ["## Simulator quality", "", *_table(["simulator", "model / data", *[c for _, c in columns]], rows)]


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


def build_report(results: Path, out: Path, paper: bool = False) -> str:
    if not results.is_dir():
        raise UsageError(f"results directory {results} not found")
    out.parent.mkdir(parents=True, exist_ok=True)
    numbers = load_paper_numbers() if paper else None
    body = [line for sub, key, heading in GROUPS for line in group_section(results, sub, key, heading, numbers, out)]
    body += simulator_section(results / "simulator")
    body += converse_section(results, out.parent)
    figures = figures_section(results / "figures", out.parent)
    body += ["## Figures", "", *figures] if figures else []
    if not body:
        raise UsageError(f"{results} holds no result files (see `python -m eval.tables --help` for the layout)")
    head = [f"# Results ({results})", ""]
    if paper:
        head += ["Rows marked `paper: <source>` are published numbers (sources in eval/paper_numbers.yaml: "
                 + "; ".join(f"`{k}`: {v}" for k, v in numbers["sources"].items()) + ").", ""]
    return "\n".join(head + body)


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.tables", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_flag(p, "--data", "--results", dest="results", required=True, type=Path,
             help="the results directory (layout above)")
    p.add_argument("--out", required=True, type=Path, help="Markdown report to write")
    p.add_argument("--paper", action="store_true",
                   help="every table the paper reports, with the published numbers beside ours")
    args = p.parse_args(argv)
    try:
        report = build_report(args.results, args.out, args.paper)
    except KeyError as err:
        raise UsageError(f"a result file under {args.results} lacks the field {err}") from None
    atomic_write(args.out, lambda f: f.write(report))
    print(f"report written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
