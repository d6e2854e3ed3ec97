"""Corpus statistics: sessions, utterances, rounds, and tokens per utterance and per session.

Tokens are those of each utterance's own text, tokenised without special tokens or template, so
the figures describe the corpus rather than a prompt format (the paper's Table 2 convention);
a session's tokens are the sum of its utterances'. Human and assistant figures are kept apart.
Only per-conversation numbers are kept in memory (a few integers each), never the text.
Several corpora are compared side by side: :func:`table` has a column per corpus, :func:`plot_corpora`
a histogram per corpus.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from core.conversation import GPT, HUMAN, Conversation

from data.split import round_starts

ROLES = {HUMAN: "human", GPT: "assistant"}


class CorpusStats:
    def __init__(self, tokenizer, batch_size: int = 128):
        self.tokenizer, self.batch_size = tokenizer, batch_size
        self.rounds: list[int] = []
        self.session_tokens: list[int] = []
        self.utterance_tokens: dict[str, list[int]] = {HUMAN: [], GPT: []}
        self.session_role_tokens: dict[str, list[int]] = {HUMAN: [], GPT: []}

    def add_all(self, convs: Iterable[Conversation]) -> "CorpusStats":
        batch: list[Conversation] = []
        for conv in convs:
            batch.append(conv)
            if len(batch) == self.batch_size:
                self._add_batch(batch)
                batch = []
        if batch:
            self._add_batch(batch)
        return self

    def _add_batch(self, convs: list[Conversation]) -> None:
        texts = [t.text for c in convs for t in c.turns]
        lengths = iter(len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"])
        for conv in convs:
            per_role = {HUMAN: 0, GPT: 0}
            for turn in conv.turns:
                n = next(lengths)
                self.utterance_tokens[turn.role].append(n)
                per_role[turn.role] += n
            self.rounds.append(len(round_starts(conv.turns)))  # a carried answer opens no round
            self.session_tokens.append(per_role[HUMAN] + per_role[GPT])
            for role in (HUMAN, GPT):
                self.session_role_tokens[role].append(per_role[role])

    def summary(self) -> dict:
        """One flat JSON-ready object; averages are 0.0 for an empty corpus."""
        def mean(xs) -> float:
            return round(float(np.mean(xs)), 2) if len(xs) else 0.0

        both = self.utterance_tokens[HUMAN] + self.utterance_tokens[GPT]
        out = {
            "sessions": len(self.rounds),
            "utterances": len(both),
            "avg_rounds": mean(self.rounds),
            "avg_utterance_tokens": mean(both),
            "avg_session_tokens": mean(self.session_tokens),
            "max_session_tokens": int(max(self.session_tokens, default=0)),
            "median_session_tokens": float(np.median(self.session_tokens)) if self.session_tokens else 0.0,
        }
        for role, name in ROLES.items():
            out[f"{name}_utterances"] = len(self.utterance_tokens[role])
            out[f"avg_{name}_utterance_tokens"] = mean(self.utterance_tokens[role])
            out[f"avg_{name}_session_tokens"] = mean(self.session_role_tokens[role])
        return out


TABLE_ROWS = (  # (label, summary key)
    ("sessions", "sessions"), ("utterances", "utterances"), ("  human", "human_utterances"),
    ("  assistant", "assistant_utterances"), ("rounds / session", "avg_rounds"),
    ("tokens / utterance", "avg_utterance_tokens"), ("  human", "avg_human_utterance_tokens"),
    ("  assistant", "avg_assistant_utterance_tokens"), ("tokens / session", "avg_session_tokens"),
    ("  human", "avg_human_session_tokens"), ("  assistant", "avg_assistant_session_tokens"),
    ("median tokens / session", "median_session_tokens"), ("max tokens / session", "max_session_tokens"),
)


def table(corpora: list[tuple[str, dict]]) -> str:
    """One row per measure, one column per corpus (the paper's side-by-side corpus table)."""
    width = max([12, *(len(name) + 2 for name, _ in corpora)])
    lines = [f"{'':<24}" + "".join(f"{name:>{width}}" for name, _ in corpora)]
    lines += [f"{label:<24}" + "".join(f"{s[key]:>{width}}" for _, s in corpora) for label, key in TABLE_ROWS]
    return "\n".join(lines)


def plot_corpora(corpora: list[tuple[str, "CorpusStats"]], out_dir) -> list[str]:
    """One PNG per measure, a histogram per corpus (and per role for utterances); densities when comparing."""
    from pathlib import Path

    from core.plots import figure

    several = len(corpora) > 1

    def label(name: str, role: str) -> str:
        return " ".join(x for x in (name if several else "", role) if x) or "all"

    figures = {
        "rounds_per_session.png": ("rounds per session", [(label(n, ""), c.rounds) for n, c in corpora]),
        "tokens_per_utterance.png": ("tokens per utterance", [
            (label(n, ROLES[r]), c.utterance_tokens[r]) for n, c in corpora for r in (HUMAN, GPT)]),
        "tokens_per_session.png": ("tokens per session", [(label(n, ""), c.session_tokens) for n, c in corpora]),
    }
    paths = []
    for file, (xlabel, series) in figures.items():
        path = Path(out_dir) / file
        with figure(path, figsize=(6, 4)) as (fig, ax):
            for name, values in series:
                if values:
                    ax.hist(values, bins=50, alpha=0.5, label=name, density=several)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("density" if several else "count")
            if len(series) > 1:
                ax.legend()
        paths.append(str(path))
    return paths
