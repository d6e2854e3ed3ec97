"""Corpus statistics: sessions, utterances, rounds, and tokens per utterance and per session.

Tokens are those of each utterance's own text, tokenised without special tokens or template, so
the figures describe the corpus rather than a prompt format (the paper's Table 2 convention);
a session's tokens are the sum of its utterances'. Human and assistant figures are kept apart.
Only per-conversation numbers are kept in memory (a few integers each), never the text.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from model.conversation import GPT, HUMAN, Conversation

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
            self.rounds.append(len(round_starts(conv.turns)) + (conv.turns[0].role != HUMAN))
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

    def table(self) -> str:
        s = self.summary()
        rows = [("sessions", s["sessions"], "", ""), ("utterances", s["utterances"], s["human_utterances"],
                                                    s["assistant_utterances"]),
                ("rounds / session", s["avg_rounds"], "", ""),
                ("tokens / utterance", s["avg_utterance_tokens"], s["avg_human_utterance_tokens"],
                 s["avg_assistant_utterance_tokens"]),
                ("tokens / session", s["avg_session_tokens"], s["avg_human_session_tokens"],
                 s["avg_assistant_session_tokens"])]
        lines = [f"{'':<20}{'all':>12}{'human':>12}{'assistant':>12}"]
        lines += [f"{name:<20}{a:>12}{h:>12}{g:>12}" for name, a, h, g in rows]
        return "\n".join(lines)

    def plot(self, out_dir) -> list[str]:
        """PNG histograms of rounds per session and tokens per utterance/session; returns the paths."""
        from pathlib import Path

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        figures = {
            "rounds_per_session.png": ("rounds per session", {"all": self.rounds}),
            "tokens_per_utterance.png": ("tokens per utterance", {
                "human": self.utterance_tokens[HUMAN], "assistant": self.utterance_tokens[GPT]}),
            "tokens_per_session.png": ("tokens per session", {"all": self.session_tokens}),
        }
        paths = []
        for name, (xlabel, series) in figures.items():
            fig, ax = plt.subplots(figsize=(6, 4))
            for label, values in series.items():
                if values:
                    ax.hist(values, bins=50, alpha=0.6, label=label)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("count")
            if len(series) > 1:
                ax.legend()
            fig.tight_layout()
            fig.savefig(out / name, dpi=100)
            plt.close(fig)
            paths.append(str(out / name))
        return paths
