"""`autlearn` commands: device."""
from __future__ import annotations

from autlearn.cli import CommandTree


def register(tree: CommandTree) -> None:
    """Adds the device commands (none yet)."""
