"""Prompt files (judges, intent writers): the one reader, which names the file and what it lacks."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from core.errors import UsageError


def read_prompt(path: str | Path, placeholders: Iterable[str] = (), what: str = "prompt") -> str:
    """The text of the prompt file ``path``; a UsageError naming the file when it is missing or lacks one of
    ``placeholders`` (checked before any work, so a bad prompt never costs a call)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: {what} file not found")
    text = path.read_text(encoding="utf-8")
    missing = [p for p in placeholders if p not in text]
    if missing:
        raise UsageError(f"{path}: the {what} needs the placeholder(s) {', '.join(missing)}")
    return text
