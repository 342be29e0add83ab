"""Commands of device_runtime."""
from __future__ import annotations

from autlearn.cli import CommandTree


def register(tree: CommandTree) -> None:
    """Registered by the device_runtime work."""
