"""Figures of the per-user data: how unevenly samples spread over users."""
from __future__ import annotations

import os
import pathlib

import numpy as np


def plot_user_sizes(summary: dict, out: str | os.PathLike, title: str) -> pathlib.Path:
    """A histogram (log-spaced bins) of samples per user, with the top-10% cut-off marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    per_user = summary["per_user"]
    key = "examples" if "examples" in next(iter(per_user.values())) else "images"
    counts = np.array([size[key] for size in per_user.values()])
    cutoff = min(per_user[user][key] for user in summary["top_10_percent"])
    figure, axes = plt.subplots(figsize=(6, 4))
    bins = np.geomspace(max(1, counts.min()), max(2, counts.max()), 30)
    axes.hist(counts, bins=bins, color="tab:blue")
    axes.axvline(cutoff, color="tab:red", linestyle="--", label=f"top 10% (>= {cutoff})")
    axes.set_xscale("log")
    axes.set_xlabel(f"{key} per user")
    axes.set_ylabel("users")
    axes.set_title(f"{title}: {summary['users']} users, {summary['samples']} {key}")
    axes.legend()
    figure.tight_layout()
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
