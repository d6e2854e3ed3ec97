"""The one plotting helper: a headless matplotlib figure that is written atomically as a PNG and closed.

Usage::

    with figure("loss.png", figsize=(7, 4)) as (fig, ax):
        ax.plot(steps, losses)
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def figure(path: str | os.PathLike, figsize: tuple[float, float] = (7, 4), ncols: int = 1,
           polar: bool = False, dpi: int = 110) -> Iterator[tuple]:
    """Yield (fig, ax or axes); on a clean exit the PNG is saved (temp file, then rename)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=figsize, subplot_kw={"polar": True} if polar else None)
    try:
        yield fig, axes
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
