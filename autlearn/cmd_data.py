"""`autlearn` commands: data."""
from __future__ import annotations

from autlearn.cli import CommandTree


def register(tree: CommandTree) -> None:
    """Adds the data commands (none yet)."""
