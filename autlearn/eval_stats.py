"""Per-user accuracies summarised as the paper's figures need them: the mean over users with a
95% confidence interval (Student's t over users), in points."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def summarise(per_user: dict[str, float]) -> dict[str, Any]:
    """{mean, ci95, per_user} in percentage points; ci95 is the half-width (0 for one user)."""
    from scipy import stats

    values = [100.0 * v for v in per_user.values() if not math.isnan(v)]
    if not values:
        raise ValueError("no user has an accuracy to summarise")
    mean = sum(values) / len(values)
    ci = 0.0
    if len(values) > 1:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        ci = float(stats.t.ppf(0.975, len(values) - 1)) * sd / math.sqrt(len(values))
    return {"mean": round(mean, 2), "ci95": round(ci, 2), "per_user": {u: round(100.0 * v, 2) for u, v in per_user.items()}}


def paired_gain(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """`a - b` per user (both per-user accuracies, same users), summarised like `summarise`."""
    shared: Sequence[str] = [u for u in a if u in b and not math.isnan(a[u]) and not math.isnan(b[u])]
    return summarise({u: a[u] - b[u] for u in shared})
