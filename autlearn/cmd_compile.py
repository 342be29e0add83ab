"""`autlearn` commands: compile."""
from __future__ import annotations

from autlearn.cli import CommandTree


def register(tree: CommandTree) -> None:
    """Adds the compile commands (none yet)."""
