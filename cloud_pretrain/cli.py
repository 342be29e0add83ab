"""Commands of cloud_pretrain."""
from __future__ import annotations

from autlearn.cli import CommandTree


def register(tree: CommandTree) -> None:
    """Registered by the cloud_pretrain work."""
