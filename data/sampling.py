"""Seeded sampling over streams: memory holds the sample, never the corpus.

``reservoir`` draws n items uniformly (Algorithm R); ``stratified`` splits n across strata in
proportion to their sizes (largest remainder) and draws each stratum's share with its own
reservoir. Both return the chosen items in their input order, so outputs read like the source.
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Callable, Hashable, Iterable, TypeVar

T = TypeVar("T")


def reservoir(items: Iterable[T], n: int, seed: int) -> list[T]:
    rng = random.Random(seed)
    chosen: list[tuple[int, T]] = []
    for i, item in enumerate(items):
        if len(chosen) < n:
            chosen.append((i, item))
        else:
            j = rng.randint(0, i)
            if j < n:
                chosen[j] = (i, item)
    return [item for _, item in sorted(chosen, key=lambda p: p[0])]


def quotas(sizes: Counter, n: int) -> dict:
    """n split across strata in proportion to their sizes (largest remainder; ties by name)."""
    total = sum(sizes.values())
    if total <= n:
        return dict(sizes)
    exact = {k: n * v / total for k, v in sizes.items()}
    share = {k: int(x) for k, x in exact.items()}
    rest = sorted(sizes, key=lambda k: (-(exact[k] - share[k]), str(k)))
    for k in rest[: n - sum(share.values())]:
        share[k] += 1
    return share


def stratified(make_items: Callable[[], Iterable[T]], key: Callable[[T], Hashable], n: int, seed: int) -> list[T]:
    """Two streaming passes over ``make_items()``: count the strata, then sample each one's quota."""
    share = quotas(Counter(key(item) for item in make_items()), n)
    pools: dict = {k: [] for k in share}
    seen: Counter = Counter()
    rng = random.Random(seed)
    for i, item in enumerate(make_items()):
        k = key(item)
        pool, want = pools[k], share[k]
        seen[k] += 1
        if len(pool) < want:
            pool.append((i, item))
        elif want:
            j = rng.randint(0, seen[k] - 1)
            if j < want:
                pool[j] = (i, item)
    return [item for _, item in sorted((p for pool in pools.values() for p in pool), key=lambda p: p[0])]
