"""Commands of the Android harness (push, latency and energy benchmarks)."""
from __future__ import annotations

from autlearn.cli import CommandTree


def register(tree: CommandTree) -> None:
    """No harness commands yet."""
