"""The summary ``scripts.demo`` puts on top of its REPORT.md: what ran, where the time went, what came out."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from core.conversation import atomic_write

SETUP_SECONDS = Path(sys.prefix) / ".setup-seconds"  # written by `make setup` (Makefile)


def base_label(base_model: str) -> str:
    return "SmolLM2" if base_model == "smollm2" else Path(base_model.rstrip("/")).name


def excerpt(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + " …"


def training_line(role: str, t) -> str:
    if t is None:
        return f"{role}: the paper's recipe"
    return (f"{role}: {t.steps} steps, {'LoRA' if t.lora else 'all weights'}, lr {t.learning_rate}, "
            f"batch {t.batch}")


def stage_table(out: Path, stage_names: list[str]) -> list[str]:
    """Seconds per stage (``make setup``'s too, when it was timed), each with its commands' seconds."""
    lines = ["| stage | seconds | where the time goes (seconds per command) |", "|---|---|---|"]
    total = 0.0
    if SETUP_SECONDS.exists():
        total = float(SETUP_SECONDS.read_text())
        lines.append(f"| `make setup` (its last run) | {total:.0f} | the environment and the offline assets |")
    for name in stage_names:
        marker = out / "stages" / f"{name}.json"
        if not marker.exists():
            continue
        record = json.loads(marker.read_text())
        total += record["seconds"]
        steps = " · ".join(f"`{s['command']}` {s['seconds']:.0f}" for s in record.get("steps", []))
        lines.append(f"| {name} | {record['seconds']:.0f} | {steps} |")
    return lines + [f"| total | {total:.0f} | |"]


def nll_summary(results: Path) -> list[str]:
    """One line: Socratic's held-out NLL against the untrained base's, and the relative change."""
    files = [results / "simulator" / f for f in ("base.json", "socratic.json")]
    if not all(f.exists() for f in files):
        return []
    base, trained = (json.loads(f.read_text()) for f in files)
    change = 100 * (trained["nll"] - base["nll"]) / base["nll"]
    return ["", f"Held-out human turns ({trained['conversations']} ShareGPT conversations Socratic never saw, "
                f"{trained['tokens']} tokens): NLL {trained['nll']:.3f} for Socratic against {base['nll']:.3f} for the "
                f"{base['name']} model it started from ({change:+.1f}%)."]


def intent_summary(results: Path) -> list[str]:
    """One line: how the base and Socratic pursue intents, next to the people's own conversations."""
    files = [results / "simulator" / f"{stem}_intents.json" for stem in ("sharegpt", "base", "socratic")]
    if not all(f.exists() for f in files):
        return []
    rows = [json.loads(f.read_text()) for f in files]
    match, leak = (", ".join(f"{r['name']} {r[key]:.2f}" for r in rows if r.get(key) is not None)
                   for key in ("intent_accuracy", "goal_leakage"))
    return ["", f"Intents ({rows[0]['n']} unseen conversations, intents written by the teacher): each conversation "
                f"matched to its own intent among {rows[0]['candidates']}, top-1 {match} (chance "
                f"{rows[0]['intent_chance']:.2f}); share of the intent's content words the first turn states: {leak}. "
                "This Socratic was trained without intents; scripts/intent_experiment.sh trains one with "
                "`--condition intent` and measures both."]


def samples(out: Path, name: str) -> list[str]:
    """The cleaning counts, the first free SocraticChat session and PlatoLM's first MT-Bench answer."""
    res, lines = out / "results", []
    if (res / "clean.json").exists():
        counts = json.loads((res / "clean.json").read_text())
        read, kept = counts.pop("read", "?"), counts.pop("kept", "?")
        lines += ["", f"Cleaning ShareGPT: {read} records read; removed by each step: "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; {kept} kept."]
    first = (out / "socraticchat_free.jsonl").read_text().splitlines()[:1]
    if first:
        rec = json.loads(first[0])
        lines += ["", f"A SocraticChat session (`{rec['id']}`, rounds: {rec['num_of_rounds']}, ended by "
                      f"`{rec['end_reason']}`):", ""]
        lines += [f"> **{'Socratic' if t['from'] == 'human' else 'teacher'}**: {excerpt(t['value'])}  "
                  for t in rec["conversations"]]
    answers = res / "mt_bench" / "model_answer" / f"platolm-{name}.jsonl"
    if answers.exists():
        ans = json.loads(answers.read_text().splitlines()[0])
        lines += ["", f"PlatoLM's answer to MT-Bench question {ans['question_id']} (turn 1): "
                      f"{excerpt(ans['choices'][0]['turns'][0])}"]
    return lines


def prepend_summary(out: Path, name: str, scale, teacher_model: str, stage_names: list[str]) -> None:
    """Put what ran on top of OUT/REPORT.md: settings, the seconds per stage, cleaning counts, one generated
    session, one answer."""
    lines = [f"# PlatoLM pipeline run: `--scale {name}`", "",
             f"Base model `{scale.base_model}` ({scale.template} template), teacher `{teacher_model}`; "
             f"{training_line('Socratic', scale.socratic)}; {training_line('PlatoLM', scale.platolm)}; "
             f"context {scale.max_length} tokens.", *nll_summary(out / "results"), *intent_summary(out / "results"), "",
             *stage_table(out, stage_names), *samples(out, name)]
    report = out / "REPORT.md"
    body = report.read_text()
    atomic_write(report, lambda f: f.write("\n".join(lines) + "\n\n" + body))
