"""Commands of compiler."""
from __future__ import annotations

from autlearn.cli import CommandTree


def register(tree: CommandTree) -> None:
    """Registered by the compiler work."""
