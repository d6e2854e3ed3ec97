"""Split long conversations into segments that fit ``max_length`` as training will tokenise them.

A segment is counted exactly as ``model.dyadic`` renders and tokenises it for training: the
system prompt of the trained role (``--train-role human`` = Socratic's prompt, the default;
``gpt`` = PlatoLM's; a record's own system prompt wins, ``--system`` overrides both) followed by
the segment's turns, tokenised with ``Template.add_special_tokens``. Segments are cut only at
round boundaries (a round is a human turn and the assistant turns that answer it), so every
segment starts with a human turn; segment ids are ``<id>_<k>`` (k = 0, 1, ...).

Linear time: each conversation is rendered and tokenised once with offsets; each round's first
character is mapped to a token index, so a segment's cost is estimated as
``system tokens + the tokens of its rounds``. Rounds are packed greedily on that estimate, and each
planned segment is rendered and tokenised once more (one batched call per conversation) to check
it exactly; if it overflows (a tokenisation seam that differs), its last round moves to the next
segment. A single round longer
than the limit is kept alone and reported (training truncates it).
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Iterator, Sequence

import numpy as np

from model.conversation import HUMAN, Conversation, Turn
from model.dyadic import Template, default_system

from data.clean import fingerprint


def round_starts(turns: Sequence[Turn]) -> list[int]:
    """Index of the first turn of every round: each human turn starts one."""
    return [i for i, t in enumerate(turns) if t.role == HUMAN]


class Splitter:
    """Splits conversations for one tokenizer, template, trained role and length limit."""

    def __init__(self, tokenizer, max_length: int = 2048, train_role: str = HUMAN, template: str = "dyadic",
                 system: str | None = None, min_turns: int = 2, dedup: bool = True, batch_size: int = 64):
        if max_length < 1:
            raise ValueError(f"max_length must be positive, not {max_length}")
        self.tokenizer, self.max_length, self.train_role = tokenizer, max_length, train_role
        self.template = Template(tokenizer, template)
        self.system, self.min_turns, self.dedup, self.batch_size = system, min_turns, dedup, batch_size
        self.counts: Counter[str] = Counter()
        self.too_long: list[str] = []  # ids of segments that are one round longer than max_length
        self.seen: set[bytes] = set()

    def lengths(self, segments: Sequence[Sequence[Turn]], system: str) -> list[int]:
        """Exact token counts of segments as training renders and tokenises them (one batched call)."""
        texts = [self.template.render(turns, system).text for turns in segments]
        ids = self.tokenizer(texts, add_special_tokens=self.template.add_special_tokens)["input_ids"]
        return [len(x) for x in ids]

    def run(self, convs: Iterable[Conversation]) -> Iterator[Conversation]:
        batch: list[Conversation] = []
        for conv in convs:
            batch.append(conv)
            if len(batch) == self.batch_size:
                yield from self._split_batch(batch)
                batch = []
        if batch:
            yield from self._split_batch(batch)

    def _split_batch(self, convs: list[Conversation]) -> Iterator[Conversation]:
        prepared = []
        for conv in convs:
            self.counts["conversations"] += 1
            starts = round_starts(conv.turns)
            if not starts:
                self.counts["conversations without a human turn"] += 1
                continue
            if starts[0]:
                self.counts["leading assistant turns dropped"] += starts[0]
            turns = conv.turns[starts[0]:]
            system = default_system(self.train_role, conv, self.system)
            prepared.append((conv, turns, system, self.template.render(turns, system)))
        if not prepared:
            return
        enc = self.tokenizer([r.text for *_, r in prepared], add_special_tokens=self.template.add_special_tokens,
                             return_offsets_mapping=True)
        for (conv, turns, system, rendered), ids, offs in zip(prepared, enc["input_ids"], enc["offset_mapping"]):
            for seg in self._segments(conv, turns, system, rendered, len(ids), offs):
                if len(seg.turns) < self.min_turns:
                    self.counts["short segments dropped"] += 1
                    continue
                if self.dedup:
                    key = fingerprint(seg.turns)
                    if key in self.seen:
                        self.counts["duplicate segments dropped"] += 1
                        continue
                    self.seen.add(key)
                self.counts["segments written"] += 1
                yield seg

    def _segments(self, conv: Conversation, turns: list[Turn], system: str, rendered, n_tokens: int,
                  offsets) -> Iterator[Conversation]:
        def segment(k: int, a: int, b: int) -> Conversation:
            return Conversation(f"{conv.id}_{k}", turns[a:b], conv.system, conv.extra)

        if n_tokens <= self.max_length:  # exact already: the whole conversation fits
            yield segment(0, 0, len(turns))
            return
        starts = round_starts(turns)
        bounds = starts + [len(turns)]
        sys_cost, costs = self.estimate(rendered, system, starts, n_tokens, offsets)

        def plan(i: int) -> list[tuple[int, int]]:
            """Greedy (first round, end round) pairs from round i on, packed on the estimate."""
            out = []
            while i < len(starts):
                total, j = sys_cost + costs[i], i + 1
                while j < len(starts) and total + costs[j] <= self.max_length:
                    total += costs[j]
                    j += 1
                out.append((i, j))
                i = j
            return out

        k, i = 0, 0
        while i < len(starts):
            pending = plan(i)
            # the exact check, all planned segments in one tokenizer call
            for (a, b), exact in zip(pending, self.lengths([turns[bounds[a]:bounds[b]] for a, b in pending], system)):
                moved = False
                while exact > self.max_length and b > a + 1:  # the estimate was off at a seam
                    self.counts["rounds moved after the exact check"] += 1
                    b, moved = b - 1, True
                    exact = self.lengths([turns[bounds[a]:bounds[b]]], system)[0]
                if exact > self.max_length:
                    self.counts["over-long single rounds kept"] += 1
                    self.too_long.append(f"{conv.id}_{k}")
                yield segment(k, bounds[a], bounds[b])
                k, i = k + 1, b
                if moved:  # the rest of the plan started from the wrong round: plan again from here
                    break
        if k > 1:
            self.counts["conversations split"] += 1

    def estimate(self, rendered, system: str, starts: list[int], n_tokens: int, offsets) -> tuple[int, list[int]]:
        """(system tokens, tokens of each round), read off the whole conversation's tokenisation.

        Round 0 starts after the system prompt, round r after the end (EOS / end-of-turn marker) of
        the previous turn. Special tokens the tokenizer appends at the end (offsets (0, 0)) belong to
        every segment, so they are counted with the system prompt.
        """
        spans = rendered.spans
        first = len(system) if self.template.template == "dyadic" else spans[0][0]
        chars = [first] + [spans[s - 1][1] for s in starts[1:]]
        offs = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        tail = 0
        while tail < n_tokens - 1 and offs[n_tokens - 1 - tail, 1] == 0:
            tail += 1
        tok_starts = np.maximum.accumulate(offs[:, 0])
        bounds = np.searchsorted(tok_starts[: n_tokens - tail], np.asarray(chars, dtype=np.int64), side="left")
        bounds = [*bounds.tolist(), n_tokens - tail]
        return bounds[0] + tail, [bounds[r + 1] - bounds[r] for r in range(len(starts))]

    def state(self) -> dict:
        return {"counts": dict(self.counts), "too_long": self.too_long}

    def restore(self, state: dict, written: Iterable[Conversation]) -> None:
        """Continue a resumed run: its counters, and the duplicate filter rebuilt from its output."""
        self.counts, self.too_long = Counter(state["counts"]), list(state["too_long"])
        self.seen = {fingerprint(seg.turns) for seg in written} if self.dedup else set()

    def report(self) -> str:
        order = ["conversations", "conversations split", "segments written", "conversations without a human turn",
                 "leading assistant turns dropped", "short segments dropped", "duplicate segments dropped",
                 "rounds moved after the exact check", "over-long single rounds kept"]
        lines = [f"  {self.counts[name]:>8}  {name}" for name in order if self.counts[name] or name in order[:3]]
        if self.too_long:
            shown = ", ".join(self.too_long[:5]) + (" ..." if len(self.too_long) > 5 else "")
            lines.append(f"  over-long segments (training truncates them to {self.max_length} tokens): {shown}")
        return "\n".join(lines)
