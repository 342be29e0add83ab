"""`autlearn` commands: cloud."""
from __future__ import annotations

from autlearn.cli import CommandTree


def register(tree: CommandTree) -> None:
    """Adds the cloud commands (none yet)."""
