"""Split long conversations into segments that fit ``max_length`` as training will tokenise them.

``cut="original"`` (the default) is the original's rule (PlatoLM's ``split_long_conversation.py``, after
Vicuna's), with exact counts: turns join a segment one by one; when a turn makes it overflow, an *answer*
stays in that segment (which then runs over ``max_length``: training truncates it) and also starts the
next one; a *question* starts the next segment after the answer it follows. Either way every segment after
the first starts with an answer, so a follow-up question is trained with the answer it follows.
``cut="round"`` cuts between rounds (a round is a human turn and the assistant turns that answer it), so
every segment fits: the question whose answer overflows moves to the next segment, after its context.
A conversation's leading assistant turns stay at the start of its first segment the same way, and a
trailing unanswered question is dropped. These context turns count in the segment's length. Under
``round``, a context that leaves no room for its round's trained turns (Socratic: the question) is left
out (counted); one that does stays even when the rest of the round then overflows.
``carry_answer=False`` starts every segment with a human turn and drops leading assistant turns (the
default for ``--train-role gpt``, where a carried answer would be trained a second time); under
``original`` the overflowing answer then stays in its segment only.

Segments of fewer than ``min_turns`` turns are dropped, then duplicates of an earlier segment: by the
concatenated texts, as the original (``dedup_key="text"``), or by roles and texts (``"turns"``).

A segment is counted exactly as ``model.dyadic`` renders and tokenises it for training: the system
prompt of the trained role (``--train-role human`` = Socratic's prompt, the default; ``gpt`` = PlatoLM's;
a record's own system prompt wins, ``--system`` overrides both) followed by the segment's turns,
tokenised with ``Template.add_special_tokens``. Segment ids are ``<id>_<k>`` (k = 0, 1, ...).

Linear time: each conversation is rendered and tokenised once with offsets; each turn's first character
is mapped to a token index, so a segment's cost is estimated as ``system tokens + the tokens of its
turns``. ``original``: each cut point found on the estimate is confirmed by the exact counts of the
segment with and without the overflowing turn (one call), and moved a turn at a time where a tokenisation
seam differs. ``round``: whether each round's context leaves room for its question is checked exactly
(one batched call); rounds are packed greedily on the estimate, and each planned segment is rendered and
tokenised once more (one batched call per conversation) to check it exactly; if it overflows, its last
round moves to the next segment. A single round longer than the limit is kept alone and reported
(training truncates it).
"""
from __future__ import annotations

import itertools
from collections import Counter
from typing import Iterable, Iterator, Sequence

import numpy as np

from core.conversation import HUMAN, Conversation, Turn
from model.dyadic import Template, default_system

from data.clean import fingerprint

CUTS = ("original", "round")
DEDUP_KEYS = ("text", "turns")
REPORT_ORDER = ("conversations", "conversations split", "segments written", "segments carrying an answer",
                "segments ending on an overflowing answer", "context left out (would not fit)",
                "leading assistant turns kept as context", "leading assistant turns dropped",
                "trailing unanswered questions dropped", "conversations without a human turn",
                "short segments dropped", "duplicate segments dropped", "cut points moved after the exact check",
                "rounds moved after the exact check", "over-long single rounds kept")


def round_starts(turns: Sequence[Turn]) -> list[int]:
    """Index of the first turn of every round: each human turn starts one."""
    return [i for i, t in enumerate(turns) if t.role == HUMAN]


def first_rounds(turns: list[Turn], k: int) -> tuple[list[Turn], int]:
    """The turns of the first k rounds (leading assistant turns stay), and how many rounds there were."""
    starts = round_starts(turns)
    return (turns[:starts[k]] if len(starts) > k else turns), len(starts)


def context_start(turns: Sequence[Turn], starts: Sequence[int], r: int) -> int:
    """First turn of round r's context: the leading assistant turns for round 0, else the answer just before it."""
    if r == 0:
        return 0
    s = starts[r]
    return s - 1 if turns[s - 1].role != HUMAN else s


def rejoin(pieces: Iterable[Conversation]) -> Iterator[Conversation]:
    """Undo a split whose ids are ``<id>_<index of the piece's first turn>`` (the original's and FastChat's,
    e.g. the ShareGPT V3 file): consecutive pieces of one id become one conversation, and a turn two pieces
    share (the carried answer) appears once. Pieces with another id shape stay as they are."""
    def base_and_start(c: Conversation) -> tuple[str, int | None]:
        base, _, k = c.id.rpartition("_")
        return (base, int(k)) if base and k.isdigit() else (c.id, None)

    for base, group in itertools.groupby(pieces, key=lambda c: base_and_start(c)[0]):
        group = list(group)
        turns, end = [], 0
        for piece in group:
            start = base_and_start(piece)[1]
            skip = max(0, end - start) if start is not None else 0
            turns += piece.turns[skip:]
            end = (start if start is not None else end) + len(piece.turns)
        yield Conversation(base, turns, group[0].system, group[0].extra)


class Splitter:
    """Splits conversations for one tokenizer, template, trained role and length limit."""

    def __init__(self, tokenizer, max_length: int = 2048, train_role: str = HUMAN, template: str = "dyadic",
                 system: str | None = None, min_turns: int = 2, dedup: bool = True, batch_size: int = 64,
                 carry_answer: bool | None = None, keep_trailing_question: bool = False, cut: str = "original",
                 dedup_key: str = "text"):
        if max_length < 1:
            raise ValueError(f"max_length must be positive, not {max_length}")
        if cut not in CUTS or dedup_key not in DEDUP_KEYS:
            raise ValueError(f"cut must be one of {CUTS} and dedup_key one of {DEDUP_KEYS}")
        self.cut, self.dedup_roles = cut, dedup_key == "turns"
        self.tokenizer, self.max_length, self.train_role = tokenizer, max_length, train_role
        self.template = Template(tokenizer, template)
        self.system, self.min_turns, self.dedup, self.batch_size = system, min_turns, dedup, batch_size
        # the carried answer is context only when the trained role is not the assistant's
        self.carry_answer = train_role == HUMAN if carry_answer is None else carry_answer
        self.keep_trailing_question = keep_trailing_question
        self.counts: Counter[str] = Counter()
        self.too_long: list[str] = []  # ids of segments that are one round longer than max_length
        self.seen: set[bytes] = set()

    def lengths(self, segments: Sequence[Sequence[Turn]], system: str) -> list[int]:
        """Exact token counts of segments as training renders and tokenises them (one batched call)."""
        texts = [self.template.render(turns, system).text for turns in segments]
        ids = self.tokenizer(texts, add_special_tokens=self.template.add_special_tokens)["input_ids"]
        return [len(x) for x in ids]

    def run(self, convs: Iterable[Conversation]) -> Iterator[Conversation]:
        it = iter(convs)
        while batch := list(itertools.islice(it, self.batch_size)):
            yield from self._split_batch(batch)

    def trim(self, turns: list[Turn]) -> list[Turn]:
        """The turns the split works on: no trailing unanswered question; no leading answers without carry."""
        if turns and turns[-1].role == HUMAN and len(turns) > 1 and not self.keep_trailing_question:
            self.counts["trailing unanswered questions dropped"] += 1
            turns = turns[:-1]
        lead = next((i for i, t in enumerate(turns) if t.role == HUMAN), len(turns))
        if lead and lead < len(turns):
            self.counts["leading assistant turns kept as context" if self.carry_answer
                        else "leading assistant turns dropped"] += lead
            if not self.carry_answer:
                turns = turns[lead:]
        return turns

    def _split_batch(self, convs: list[Conversation]) -> Iterator[Conversation]:
        prepared = []
        for conv in convs:
            self.counts["conversations"] += 1
            turns = self.trim(conv.turns)
            if not round_starts(turns):
                self.counts["conversations without a human turn"] += 1
                continue
            system = default_system(self.train_role, conv, self.system)
            prepared.append((conv, turns, system, self.template.render(turns, system)))
        if not prepared:
            return
        enc = self.tokenizer([r.text for *_, r in prepared], add_special_tokens=self.template.add_special_tokens,
                             return_offsets_mapping=True)
        for (conv, turns, system, rendered), ids, offs in zip(prepared, enc["input_ids"], enc["offset_mapping"]):
            for seg in self._segments(conv, turns, system, rendered, len(ids), offs):
                if self._keep(seg):
                    self.counts["segments written"] += 1
                    yield seg

    def _keep(self, seg: Conversation) -> bool:
        if len(seg.turns) < self.min_turns:
            self.counts["short segments dropped"] += 1
            return False
        if self.dedup:
            key = fingerprint(seg.turns, self.dedup_roles)
            if key in self.seen:
                self.counts["duplicate segments dropped"] += 1
                return False
            self.seen.add(key)
        return True

    def _segments(self, conv: Conversation, turns: list[Turn], system: str, rendered, n_tokens: int,
                  offsets) -> Iterator[Conversation]:
        if n_tokens <= self.max_length:  # exact already: the whole conversation fits
            yield Conversation(f"{conv.id}_0", turns, conv.system, conv.extra)
            return
        sys_cost, edges = self.estimate(rendered, system, n_tokens, offsets)

        def cost(lo: int, hi: int) -> int:
            return sys_cost + edges[hi] - edges[lo]

        cuts = self._original_cuts if self.cut == "original" else self._round_cuts
        k = 0
        for k, (lo, hi) in enumerate(cuts(conv.id, turns, system, cost)):
            yield Conversation(f"{conv.id}_{k}", turns[lo:hi], conv.system, conv.extra)
        if k:
            self.counts["conversations split"] += 1

    def _original_cuts(self, conv_id: str, turns: list[Turn], system: str, cost) -> Iterator[tuple[int, int]]:
        """The original's cut points (split_long_conversation.py), counted exactly: turns join the segment one by
        one; when one overflows, an *answer* stays (the segment runs over) and starts the next segment, a
        *question* starts the next segment after the answer before it (without carry: the next segment starts
        with the next question). A last answer that overflows opens no segment. A first turn that alone
        overflows stays (the original wrote an empty segment there), and a segment that would hold the carried
        answer alone (its question overflowed at once) is not written (the original's next step dropped it)."""
        n, lo, scan, k = len(turns), 0, 1, 0
        while True:
            idx = self._first_overflow(turns, system, cost, lo, scan)
            answer = idx is not None and turns[idx].role != HUMAN
            hi = n if idx is None else idx + 1 if answer else idx
            if any(t.role == HUMAN for t in turns[lo:hi]):
                self.counts["segments carrying an answer"] += k > 0 and turns[lo].role != HUMAN
                if answer:
                    self.counts["segments ending on an overflowing answer"] += 1
                    self.too_long.append(f"{conv_id}_{k}")
                yield lo, hi
                k += 1
            if idx is None or idx == n - 1:
                return
            if self.carry_answer:
                lo = idx if answer else idx - 1 if turns[idx - 1].role != HUMAN else idx
            else:
                lo = idx + 1 if answer else idx
            scan = max(idx + 1, lo + 1)

    def _first_overflow(self, turns: list[Turn], system: str, cost, lo: int, scan: int) -> int | None:
        """The first turn index from ``scan`` on whose addition makes ``turns[lo:]`` exceed max_length, exactly
        (None: the rest fits). The estimate guesses; exact counts of the two segments around the guess confirm
        it or move it one turn at a time."""
        n = len(turns)
        j = next((i + 1 for i in range(scan, n) if cost(lo, i + 1) > self.max_length), n + 1)
        guess, exact = j, {}
        while True:
            need = [x for x in (j - 1, j) if scan < x <= n and x not in exact]
            if need:
                exact.update(zip(need, self.lengths([turns[lo:x] for x in need], system)))
            if j <= n and exact[j] <= self.max_length:
                j += 1
            elif j - 1 > scan and exact[j - 1] > self.max_length:
                j -= 1
            else:
                self.counts["cut points moved after the exact check"] += j != guess
                return j - 1 if j <= n else None

    def _round_cuts(self, conv_id: str, turns: list[Turn], system: str, cost) -> Iterator[tuple[int, int]]:
        """Cuts between rounds (``--cut round``): segments that fit, each later one carrying its context."""
        starts = round_starts(turns)
        bounds = starts + [len(turns)]
        context = self._contexts(turns, starts, bounds, system)

        def plan(i: int) -> list[tuple[int, int, int]]:
            """Greedy (first turn, first round, end round) triples from round i on, packed on the estimate."""
            out = []
            while i < len(starts):
                lo = context[i]
                j = i + 1
                while j < len(starts) and cost(lo, bounds[j + 1]) <= self.max_length:
                    j += 1
                out.append((lo, i, j))
                i = j
            return out

        k, i = 0, 0
        while i < len(starts):
            pending = plan(i)
            # the exact check, all planned segments in one tokenizer call
            for (lo, a, b), exact in zip(pending, self.lengths([turns[lo:bounds[b]] for lo, a, b in pending], system)):
                end = self._fit(conv_id, k, turns, system, bounds, lo, a, b, exact)
                self._count_context(turns, starts, k, lo, a)
                yield lo, bounds[end]
                k, i = k + 1, end
                if end != b:  # the rest of the plan started from the wrong round: plan again from here
                    break

    def _fit(self, conv_id: str, k: int, turns: list[Turn], system: str, bounds: list[int], lo: int, a: int,
             b: int, exact: int) -> int:
        """The end round of a planned segment once it fits exactly: its last rounds move on. A single round
        that does not fit stays (with its context, whose trained turns were checked to fit)."""
        while exact > self.max_length and b > a + 1:  # the estimate was off at a seam
            self.counts["rounds moved after the exact check"] += 1
            b -= 1
            exact = self.lengths([turns[lo:bounds[b]]], system)[0]
        if exact > self.max_length:
            self.counts["over-long single rounds kept"] += 1
            self.too_long.append(f"{conv_id}_{k}")
        return b

    def _contexts(self, turns: list[Turn], starts: list[int], bounds: list[int], system: str) -> list[int]:
        """Each round's first turn as a segment's start: its context's when the round's trained turns
        (Socratic: the question) still fit after the context, checked exactly in one batched call."""
        wanted = [self._wanted_start(turns, starts, r) for r in range(len(starts))]
        with_context = [r for r in range(len(starts)) if wanted[r] < starts[r]]
        lengths = self.lengths([turns[wanted[r]:self._trained_end(turns, bounds, r)] for r in with_context], system) \
            if with_context else []
        for r, n in zip(with_context, lengths):
            if n > self.max_length:
                wanted[r] = starts[r]
        return wanted

    def _trained_end(self, turns: list[Turn], bounds: list[int], r: int) -> int:
        """End of round r's last turn of the trained role: what has to fit after the round's context."""
        ends = [t + 1 for t in range(bounds[r], bounds[r + 1]) if turns[t].role == self.train_role]
        return ends[-1] if ends else bounds[r] + 1

    def _wanted_start(self, turns: list[Turn], starts: list[int], r: int) -> int:
        return context_start(turns, starts, r) if self.carry_answer else starts[r]

    def _count_context(self, turns: list[Turn], starts: list[int], k: int, lo: int, a: int) -> None:
        if lo > self._wanted_start(turns, starts, a):
            self.counts["context left out (would not fit)"] += 1
        elif k and lo < starts[a]:
            self.counts["segments carrying an answer"] += 1

    def estimate(self, rendered, system: str, n_tokens: int, offsets) -> tuple[int, list[int]]:
        """(system tokens, the token index where each turn starts, and the end), read off the whole
        conversation's tokenisation.

        Turn 0 starts after the system prompt, turn t after the end (EOS / end-of-turn marker) of turn
        t - 1. Special tokens the tokenizer appends at the end (offsets (0, 0)) belong to every segment,
        so they are counted with the system prompt.
        """
        spans = rendered.spans
        first = len(system) if self.template.template == "dyadic" else spans[0][0]
        chars = [first] + [spans[t - 1][1] for t in range(1, len(spans))]
        offs = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        tail = 0
        while tail < n_tokens - 1 and offs[n_tokens - 1 - tail, 1] == 0:
            tail += 1
        tok_starts = np.maximum.accumulate(offs[:, 0])
        edges = np.searchsorted(tok_starts[: n_tokens - tail], np.asarray(chars, dtype=np.int64), side="left")
        edges = [*edges.tolist(), n_tokens - tail]
        return edges[0] + tail, edges

    def state(self) -> dict:
        return {"counts": dict(self.counts), "too_long": self.too_long}

    def restore(self, state: dict, written: Iterable[Conversation]) -> None:
        """Continue a resumed run: its counters, and the duplicate filter rebuilt from its output."""
        self.counts, self.too_long = Counter(state["counts"]), list(state["too_long"])
        self.seen = {fingerprint(seg.turns, self.dedup_roles) for seg in written} if self.dedup else set()

    def report(self) -> str:
        lines = [f"  {self.counts[name]:>8}  {name}" for name in REPORT_ORDER
                 if self.counts[name] or name in REPORT_ORDER[:3]]
        if self.too_long:
            shown = ", ".join(self.too_long[:5]) + (" ..." if len(self.too_long) > 5 else "")
            lines.append(f"  over-long segments (training truncates them to {self.max_length} tokens): {shown}")
        return "\n".join(lines)
