"""`autlearn` commands: bench."""
from __future__ import annotations

from autlearn.cli import CommandTree


def register(tree: CommandTree) -> None:
    """Adds the bench commands (none yet)."""
