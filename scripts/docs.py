"""Keep the documentation honest: docs/cli.md is generated from every command's ``--help``, and every
``python -m`` command that README.md and docs/ show is checked against the real ``--help``.

Usage::

    python -m scripts.docs            # rewrite docs/cli.md
    python -m scripts.docs --check    # exit 1 if docs/cli.md is stale, a shown command uses an unknown
                                      # module, sub-command or flag, or a relative link is broken
                                      # (tests/test_docs.py runs the same checks)
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.runner import command

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = ROOT / "docs" / "cli.md"
# every runnable command under model/ data/ eval/ scripts/, with its sub-commands (bench/ is left out: its
# scripts are documented in bench/README.md); the trainers' long TrainingArguments list is summarised
COMMANDS = {
    "model.dyadic": [], "model.sft_socratic.train": [], "model.sft_platolm.train": [],
    "model.sft_socratic.cli": [], "model.sft_platolm.cli": [], "model.serve": [],
    "data.prepare": ["clean", "split", "convert", "seeds", "baseline", "truncate", "stats", "intents"],
    "data.simulate": [],
    "eval.fetch_mt_bench": [], "eval.mt_bench": ["answer", "judge", "show"],
    "eval.alpaca_eval": ["generate", "judge"], "eval.question_quality": [],
    "eval.simulator": ["perplexity", "diversity", "human-likeness", "role-adherence", "termination",
                       "intent-adherence", "goal-leakage"],
    "eval.detector": ["train", "score"], "eval.tables": [],
    "eval.converse": ["run", "judge", "show", "agreement"],
    "scripts.demo": [], "scripts.take_sharegpt": [], "scripts.gpu_check": [], "scripts.docs": [],
}
TRAINERS = ("model.sft_socratic.train", "model.sft_platolm.train")
SHELL_BREAKS = {"|", "||", "&&", "&", ";"}


def help_text(module: str, sub: str | None = None) -> str:
    """``python -m module [sub] --help`` as a user sees it at 100 columns."""
    env = dict(os.environ, COLUMNS="100", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", module, *([sub] if sub else []), "--help"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd[1:])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    if str(ROOT) in proc.stdout:  # the generated file must not depend on where the clone lives
        raise RuntimeError(f"{shlex.join(cmd[1:])} shows the absolute path {ROOT}: make its help text relative")
    return proc.stdout


def trainer_summary(module: str) -> str:
    """The project's own trainer options, as --help spells them (every ``TrainingArguments`` flag is accepted
    besides them, hyphenated)."""
    import dataclasses

    from model import train

    flag = {a.dest: a.option_strings[-1] for a in reversed(train.build_parser()._actions) if a.option_strings}
    lines = [f"usage: python -m {module} [--config RECIPE.yaml] [OPTIONS] [every TrainingArguments flag]", "",
             "The original's spellings still parse: --model_name_or_path, --data_path, --output_dir,",
             "--model_max_length, --system_prompt, and every flag with underscores.", ""]
    for cls in (train.ModelArguments, train.LoraArguments, train.DataArguments, train.TrainArguments):
        own = cls.__annotations__  # TrainArguments: only what it adds to TrainingArguments
        lines.append(f"{cls.__name__}:")
        for f in (f for f in dataclasses.fields(cls) if f.name in own):
            default = f.default if f.default is not dataclasses.MISSING else None
            help_ = f.metadata.get("help", "").replace("%%", "%")  # argparse's escape, as --help prints it
            lines.append(f"  {flag[f.name]} (default {default!r}): {help_}")
        lines.append("")
    return "\n".join(lines)


def vocabulary_table() -> list[str]:
    """core.options.VOCABULARY as a Markdown table."""
    from core.options import VOCABULARY

    return ["| concept | flag | other spellings: none is a flag of its own; a command's old one still parses |",
            "|---|---|---|",
            *(f"| {concept} | `{flag}` | {', '.join(f'`{s}`' for s in others)} |"
              for concept, (flag, others) in VOCABULARY.items())]


def render_cli_doc() -> str:
    """docs/cli.md's text: every command's help, the ``--help`` runs spread over the CPUs."""
    jobs = [(m, s) for m, subs in COMMANDS.items() for s in (None, *subs)]
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        texts = dict(zip(jobs, pool.map(
            lambda job: trainer_summary(job[0]) if job[0] in TRAINERS else help_text(*job), jobs)))
    out = ["# Command reference", "",
           "Generated by `python -m scripts.docs` from every command's `--help`; a test fails when it is stale.", "",
           "One flag per concept in every command (`core.options.VOCABULARY`; tests/test_docs.py checks it):", "",
           *vocabulary_table(), ""]
    for module, sub in jobs:
        title = f"## `python -m {module}`" if sub is None else f"### `python -m {module} {sub}`"
        out += [title, "", "```text", texts[module, sub].rstrip(), "```", ""]
    return "\n".join(out)


def help_sections(cli_doc: str) -> dict[tuple[str, str | None], str]:
    """{(module, sub-command or None): help text} read back from docs/cli.md's text."""
    pattern = r"^#{2,3} `python -m (\S+?)(?: (\S+))?`\n\n```text\n(.*?)\n```$"
    return {(m, s or None): body for m, s, body in re.findall(pattern, cli_doc, re.DOTALL | re.MULTILINE)}


def option_flags(help_body: str) -> set[str]:
    """The ``--flags`` an argparse help text declares (its option lines, aliases included)."""
    flags: set[str] = set()
    for line in help_body.splitlines():
        stripped = line.strip()
        if stripped.startswith("-"):
            flags.update(re.findall(r"--[\w-]+", re.split(r"\s{2,}", stripped)[0]))
    return flags


def trainer_flags() -> set[str]:
    """Every flag the trainer's --help shows: the project's dataclasses', TrainingArguments', ``--config``
    (not the original's underscore spellings, which parse but are not documented)."""
    from model import train

    return {o for action in train.build_parser()._actions for o in action.option_strings}


def _strip_fences(markdown: str) -> tuple[list[str], str]:
    """(fenced code blocks, the markdown without them)."""
    blocks = re.findall(r"^```[\w-]*\n(.*?)^```", markdown, re.DOTALL | re.MULTILINE)
    return blocks, re.sub(r"^```[\w-]*\n.*?^```", "", markdown, flags=re.DOTALL | re.MULTILINE)


def _command(words: list[str]) -> tuple[str, str | None, list[str]]:
    """(module, sub-command word or None, flags) of ``module args...``, up to the first shell operator."""
    module, rest = words[0], []
    for word in words[1:]:
        if word in SHELL_BREAKS or word.startswith((">", "2>", "<")):
            break
        rest.append(word.split("=")[0])
    sub = rest[0] if COMMANDS.get(module) and rest and not rest[0].startswith("-") else None
    flags = [w.strip("[]()") for w in rest]
    return module, sub, [w for w in flags if re.fullmatch(r"--[a-z][\w-]*", w)]


def shown_commands(markdown: str) -> list[tuple[str, str | None, list[str]]]:
    """(module, sub-command or None, flags) of every command the markdown shows.

    In code blocks: every ``-m module`` (``python -m``, ``torchrun ... -m``). In inline code: ``python -m
    module ...``, and a span that opens with a command's name (``data.simulate --end-rule paper``).
    """
    blocks, prose = _strip_fences(markdown)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    spans = re.findall(r"`([^`\n]+)`", prose)
    found = []
    for text, in_span in [(line, False) for line in lines] + [(span, True) for span in spans]:
        text = "" if text.lstrip().startswith("#") else text.split(" #")[0]
        try:
            words = shlex.split(text)
        except ValueError:
            continue
        starts = [i + 1 for i, w in enumerate(words[:-1])
                  if w == "-m" and words[i + 1].split(".")[0] in ("model", "data", "eval", "scripts", "bench")]
        if not starts and in_span and words and words[0] in COMMANDS:
            starts = [0]
        found += [_command(words[i:]) for i in starts]
    return found


def command_problems(markdown: str, sections: dict, trainer: set[str], where: str) -> list[str]:
    """What is wrong with the commands a markdown file shows, one line each (empty: nothing)."""
    problems = []
    for module, sub, flags in shown_commands(markdown):
        shown = " ".join(["python -m", module, *([sub] if sub else [])])
        if module not in COMMANDS:
            problems.append(f"{where}: `{shown}`: no such command (scripts.docs.COMMANDS)")
            continue
        if sub is not None and sub not in COMMANDS[module]:
            problems.append(f"{where}: `{shown}`: {module} has no sub-command {sub!r}")
            continue
        if COMMANDS[module] and sub is None and set(flags) - {"--help"}:
            problems.append(f"{where}: `{shown} {' '.join(flags)}`: names no sub-command")
            continue
        known = trainer if module in TRAINERS else option_flags(sections.get((module, sub), ""))
        unknown = [f for f in flags if f not in known and f != "--help"]
        if unknown:
            problems.append(f"{where}: `{shown}`: {', '.join(unknown)} not in its --help")
    return problems


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown file."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _strip_fences(markdown)[1], re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def link_problems(path: Path) -> list[str]:
    """Relative links (and their #anchors in markdown files) of ``path`` that lead nowhere."""
    text = path.read_text(encoding="utf-8")
    prose = re.sub(r"`[^`\n]*`", "", _strip_fences(text)[1])
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z][\w+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: ({target})"
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in github_anchors(dest.read_text(encoding="utf-8")):
            problems.append(f"{where}: no heading with that anchor")
    return problems


def doc_files() -> list[Path]:
    """The hand-written documentation: README.md and docs/*.md (not the generated docs/cli.md)."""
    return [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p != CLI_DOC)]


def check(text: str) -> list[str]:
    """Every problem of the documentation, given docs/cli.md's freshly rendered text."""
    problems = [] if CLI_DOC.is_file() and CLI_DOC.read_text(encoding="utf-8") == text else [
        f"{CLI_DOC.relative_to(ROOT)} is out of date: run `python -m scripts.docs`"]
    sections, trainer = help_sections(text), trainer_flags()
    for path in doc_files():
        problems += command_problems(path.read_text(encoding="utf-8"), sections, trainer,
                                     str(path.relative_to(ROOT)))
        problems += link_problems(path)
    return problems


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.docs", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true",
                   help="exit 1 if docs/cli.md is stale or a shown command or a link is wrong")
    args = p.parse_args(argv)
    text = render_cli_doc()
    if args.check:
        problems = check(text)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    from core.conversation import atomic_write

    atomic_write(CLI_DOC, lambda f: f.write(text))
    print(f"wrote {CLI_DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
