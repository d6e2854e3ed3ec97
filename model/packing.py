"""Rows and batches for training: pack encoded conversations into rows, or pad them, and measure the waste.

Packing puts several conversations in one row of at most ``model_max_length`` tokens (best-fit
decreasing, so rows come out nearly full) with ``position_ids`` that restart at 0 for every
conversation. No conversation sees another one:

* SDPA / eager attention (CPU and GPU): when a batch has ``position_ids`` and *no* ``attention_mask``,
  transformers (``masking_utils.find_packed_sequence_indices``) turns every restart of the positions
  into a new block of a block-diagonal causal mask. The padded tail of a row is given positions that
  restart at 0 too, so it is a block of its own that no real token attends to.
* flash-attention 2 (GPU): its variable-length kernel is used when the batch is one flattened row
  with restarting ``position_ids``, so :class:`PackingCollator` flattens the batch (``flatten=True``).

The label of the first token of every conversation is set to -100, so the last token of one
conversation is never trained to predict the first token of the next (it is the BOS, never trained
anyway). ``tests/test_train.py`` checks that packed and padded batches give the same loss.
"""
from __future__ import annotations

import bisect
from itertools import chain
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from model.dyadic import IGNORE_INDEX


def pack_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group item indices into bins whose lengths sum to at most ``capacity`` (best-fit decreasing).

    Items longer than ``capacity`` get a bin of their own (the encoder has already cut them to
    ``model_max_length``). Deterministic: the same lengths always give the same bins.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin index), sorted: best fit = first with enough room
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            space, b = free.pop(k)
            bins[b].append(i)
            space -= n
        else:
            b, space = len(bins), capacity - n
            bins.append([i])
        if space > 0:
            bisect.insort(free, (space, b))
    return bins


class Rows(torch.utils.data.Dataset):
    """Training rows: each row is the concatenation of the encoded conversations of one bin.

    ``encoded`` is anything indexable by a list of indices returning ``{"input_ids": [...],
    "labels": [...]}`` columns (a ``datasets.Dataset``); rows are built on access, so nothing is
    copied in memory. With singleton bins a row is one conversation (the padded mode).
    """

    def __init__(self, encoded, bins: list[list[int]]):
        self.encoded, self.bins = encoded, bins

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, i: int) -> dict:
        cols = self.encoded[self.bins[i]]
        input_ids, labels, position_ids = [], [], []
        for ids, labs in zip(cols["input_ids"], cols["labels"]):
            input_ids += ids
            labels += [IGNORE_INDEX, *labs[1:]]
            position_ids += range(len(ids))
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def _pad(seqs: list[list[int]], value: int, width: int) -> torch.Tensor:
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


def _width(rows: list[dict], multiple: int | None) -> int:
    width = max(len(r["input_ids"]) for r in rows)
    return -(-width // multiple) * multiple if multiple else width


@dataclass
class PaddingCollator:
    """The original's batches: one conversation per row, right-padded to the longest, with an attention mask."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict]) -> dict:
        width = _width(rows, self.pad_to_multiple_of)
        ids = [r["input_ids"] for r in rows]
        return {
            "input_ids": _pad(ids, self.pad_token_id, width),
            "labels": _pad([r["labels"] for r in rows], IGNORE_INDEX, width),
            "attention_mask": _pad([[1] * len(s) for s in ids], 0, width),
        }


@dataclass
class PackingCollator:
    """Packed rows with restarting ``position_ids`` and no attention mask (see the module docstring).

    ``flatten=True`` concatenates the whole batch into one row, the layout flash-attention 2's
    variable-length path needs; otherwise rows are right-padded and the padding is its own block.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    flatten: bool = False

    def __call__(self, rows: list[dict]) -> dict:
        if self.flatten:
            return {k: torch.tensor([list(chain.from_iterable(r[k] for r in rows))], dtype=torch.long)
                    for k in ("input_ids", "labels", "position_ids")}
        width = _width(rows, self.pad_to_multiple_of)
        positions = [r["position_ids"] + list(range(width - len(r["position_ids"]))) for r in rows]
        return {
            "input_ids": _pad([r["input_ids"] for r in rows], self.pad_token_id, width),
            "labels": _pad([r["labels"] for r in rows], IGNORE_INDEX, width),
            "position_ids": torch.tensor(positions, dtype=torch.long),
        }


def row_lengths(lengths: Sequence[int], bins: list[list[int]]) -> list[int]:
    return [sum(lengths[i] for i in b) for b in bins]


def padding_efficiency(rows: Sequence[int], batch_size: int, seed: int = 0) -> float:
    """Real tokens / tokens computed for one shuffled epoch of rows in batches padded to their longest row."""
    if not len(rows):
        return 0.0
    lengths = np.asarray(rows, dtype=np.int64)[np.random.default_rng(seed).permutation(len(rows))]
    computed = sum(int(chunk.max()) * len(chunk) for chunk in np.array_split(
        lengths, range(batch_size, len(lengths), batch_size)))
    return float(lengths.sum() / computed)
