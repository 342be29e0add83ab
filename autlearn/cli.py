"""The `autlearn` command: the application layer above the libraries.

The libraries keep their one-way dependencies; the commands that glue them (compile a
checkpoint, build end to end) live here, one `cmd_*` module per area. Handlers import their
library lazily, so `autlearn device ...` never imports torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Each has a `register(tree: CommandTree)`.
COMMAND_MODULES = (
    "autlearn.cmd_data",
    "autlearn.cmd_cloud",
    "autlearn.cmd_compile",
    "autlearn.cmd_device",
    "autlearn.cmd_bench",
    "autlearn.cmd_harness",
)


class CommandTree:
    """Top-level commands and command groups (`data`, `device`, `bench`) shared by packages."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def command(self, name: str, help: str) -> argparse.ArgumentParser:
        return self._sub.add_parser(name, help=help, description=help)

    def group(self, name: str, help: str) -> argparse._SubParsersAction:
        if name not in self._groups:
            parser = self._sub.add_parser(name, help=help, description=help)
            self._groups[name] = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
        return self._groups[name]

    def subcommand(self, group: str, name: str, help: str, group_help: str = "") -> argparse.ArgumentParser:
        return self.group(group, group_help or group).add_parser(name, help=help, description=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autlearn", description="On-device autonomous learning toolkit")
    tree = CommandTree(parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(tree)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError) as err:  # user-facing errors: one clear line
        print(f"autlearn: error: {err}", file=sys.stderr)
        return 2
