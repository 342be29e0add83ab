"""Figures worth seeing, written as PNG files (matplotlib without a display)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def plot_lines(path: str | os.PathLike, x: Sequence[float], series: dict[str, Sequence[float]], *,
               title: str, xlabel: str, ylabel: str) -> Path:
    """One line per series against `x`, markers on every point."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, ys in series.items():
        ax.plot(x, ys, marker="o", label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_bars(path: str | os.PathLike, values: dict[str, float], *, title: str, ylabel: str) -> Path:
    """One labelled bar per entry, its value written above it."""
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(values)), 4))
    bars = ax.bar(list(values), list(values.values()), color="tab:blue")
    ax.bar_label(bars, fmt="%.3g")
    ax.set(title=title, ylabel=ylabel)
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
