"""Seeded sampling as the original notebooks did it, without holding a corpus in memory.

The original loaded a corpus, called ``random.seed(125); random.shuffle(items)`` and took the first N
(per sub-corpus, in proportion to its size, then shuffled the union again with the same seed). A
shuffle's permutation depends only on the list's length and the generator, so shuffling the positions
``range(len(items))`` gives the same selection: the corpus is read once to count and once to pick,
and the output is the original's, record for record, in the original's order.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Iterator, TypeVar

T = TypeVar("T")


@dataclass
class Draw:
    """A sample and how it was drawn: usable records and drawn records per stratum, and the records an
    original filter left out (by reason)."""
    items: list
    sizes: dict
    drawn: dict
    left_out: Counter = field(default_factory=Counter)

    def describe(self, what: str = "part") -> str:
        lines = [f"  {self.drawn.get(k, 0):>8} of {n:>8}  {k}" for k, n in self.sizes.items() if k is not None]
        lines += [f"  {n:>8} records left out: {reason}" for reason, n in self.left_out.items()]
        head = f"drew {len(self.items)} of {sum(self.sizes.values())} usable records"
        return "\n".join([head + (f" (by {what}):" if len(lines) else ""), *lines])


def round_quotas(sizes: dict[Hashable, int], n: int) -> dict[Hashable, int]:
    """Each stratum's ``round(n * size / total)`` (the original's rounding; the sum can miss n by one or
    two: see :func:`balance`); every stratum whole when the corpus has no more than n items."""
    total = sum(sizes.values())
    if total <= n:
        return dict(sizes)
    return {k: round(n * (v / total)) for k, v in sizes.items()}


def balance(quotas: dict[Hashable, int], sizes: dict[Hashable, int], n: int) -> dict[Hashable, int]:
    """Give the largest stratum what rounding left over or short of n (the original's notebooks add the
    missing item to the largest category); a no-op when the quotas already sum to n."""
    if not quotas or sum(sizes.values()) <= n:
        return quotas
    largest = max(sizes, key=lambda k: sizes[k])
    out = dict(quotas)
    out[largest] = min(sizes[largest], max(0, out[largest] + n - sum(quotas.values())))
    return out


def shuffled_heads(sizes: dict[Hashable, int], quotas: dict[Hashable, int], seed: int,
                   reshuffle: bool = False) -> list[tuple[Hashable, int]]:
    """(stratum, position) of the items the original picks: one generator seeded once shuffles each
    stratum in turn and takes its head; ``reshuffle`` shuffles the union again with a fresh seeded
    generator (the UltraChat and Baize notebooks)."""
    rng = random.Random(seed)
    picked = []
    for key, size in sizes.items():
        order = list(range(size))
        rng.shuffle(order)
        picked += [(key, p) for p in order[:quotas.get(key, 0)]]
    if reshuffle:
        random.Random(seed).shuffle(picked)
    return picked


def stratified(keys: list[Hashable], n: int, seed: int) -> list[int]:
    """Positions the Dolly notebook picks: per stratum in order of first appearance, all of it when its
    ``round(n * share)`` quota covers it, else ``random.sample`` of the quota (one generator, seeded once);
    a shortfall left by rounding is filled with the largest stratum's first unpicked items in file order
    (the notebook added one ``open_qa`` record this way), a surplus cut from the end."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    sizes = {k: len(g) for k, g in groups.items()}
    quotas = round_quotas(sizes, n)
    rng = random.Random(seed)
    out: list[int] = []
    for key, group in groups.items():
        q = quotas[key]
        out += group if len(group) <= q else [group[j] for j in rng.sample(range(len(group)), q)]
    short = min(n, len(keys)) - len(out)
    if short > 0:
        taken = set(out)
        out += [i for i in groups[max(sizes, key=lambda k: sizes[k])] if i not in taken][:short]
    return out[:n]


def take(picked: Iterable[tuple[Hashable, int]], stream: Callable[[Hashable], Iterable[T]]) -> list[T]:
    """The picked (stratum, position) items in the order they were picked, reading each stratum's
    ``stream(stratum)`` once and keeping only the picked items."""
    wanted: dict[Hashable, dict[int, int]] = {}
    for rank, (key, pos) in enumerate(picked):
        wanted.setdefault(key, {})[pos] = rank
    found = [(ranks[i], item) for key, ranks in wanted.items() for i, item in enumerate(stream(key)) if i in ranks]
    return [item for _, item in sorted(found, key=lambda p: p[0])]


def usable(items: Iterable, dropped: Counter) -> Iterator:
    """The items that are not a string; a string is the reason a converter left a record out (a filter of
    the original's, not bad input), counted in ``dropped``."""
    for item in items:
        if isinstance(item, str):
            dropped[item] += 1
        else:
            yield item
