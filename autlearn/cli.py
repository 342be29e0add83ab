"""The `autlearn` command: the application layer above the libraries.

The libraries keep their one-way dependencies; the commands that glue them (compile a
checkpoint, build end to end) live here, one `cmd_*` module per area. Handlers import their
library lazily, so `autlearn device ...` never imports torch.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import importlib.metadata
import logging
import os
import sys
import traceback
from pathlib import Path

from autlearn.logs import default_log_file, library_output_to

# Each has a `register(tree: CommandTree)`.
COMMAND_MODULES = (
    "autlearn.cmd_data",
    "autlearn.cmd_cloud",
    "autlearn.cmd_compile",
    "autlearn.cmd_device",
    "autlearn.cmd_bench",
    "autlearn.cmd_harness",
    "autlearn.cmd_eval",
    "autlearn.cmd_emulator",
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends each option's default to its help, so no help string repeats it by hand; options
    that are required or default to None or False have nothing worth showing."""

    def _shows_default(self, action: argparse.Action) -> bool:
        return not (action.required or any(action.default is v for v in (None, False, argparse.SUPPRESS)))

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return super()._get_help_string(action) if self._shows_default(action) else action.help

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.option_strings and self._shows_default(action):
            action = copy.copy(action)  # an option without help still shows its default
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


class CommandTree:
    """Top-level commands and command groups (`data`, `device`, `bench`) shared by packages."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def command(self, name: str, help: str) -> argparse.ArgumentParser:
        return self._sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)

    def group(self, name: str, help: str) -> argparse._SubParsersAction:
        if name not in self._groups:
            parser = self._sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
            self._groups[name] = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
        return self._groups[name]

    def subcommand(self, group: str, name: str, help: str, group_help: str = "") -> argparse.ArgumentParser:
        return self.group(group, group_help or group).add_parser(name, help=help, description=help,
                                                                 formatter_class=HelpFormatter)


def version() -> str:
    """The installed distribution's version; "unknown" when running from a tree that is not installed."""
    try:
        return importlib.metadata.version("autlearn")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autlearn", description="On-device autonomous learning toolkit",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"autlearn {version()}")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars; the command's results still print")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    parser.add_argument("--log-file", type=Path, default=default_log_file(), metavar="PATH",
                        help="where library warnings and logs go (TVM, PyTorch, onnxruntime), "
                             "instead of the screen")
    tree = CommandTree(parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(tree)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command; errors are one line on stderr (2: a user-facing error, 1: a bug), and
    their traceback goes to the log, or to the screen with --debug."""
    args = build_parser().parse_args(argv)
    with library_output_to(args.log_file, quiet=args.quiet):
        logging.getLogger("autlearn").info("autlearn %s", " ".join(sys.argv[1:] if argv is None else argv))
        try:
            return int(args.func(args) or 0)
        except BrokenPipeError:  # whoever read our output stopped (`| head`): nothing left to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except KeyboardInterrupt:
            print("autlearn: interrupted", file=sys.stderr)
            return 130
        except Exception as err:
            logging.getLogger("autlearn").exception("the command failed")
            if args.debug:
                traceback.print_exc()
            if isinstance(err, (FileNotFoundError, ValueError, RuntimeError)):  # user-facing: one clear line
                print(f"autlearn: error: {err}", file=sys.stderr)
                return 2
            hint = "" if args.debug else " (run with --debug for the traceback)"
            print(f"autlearn: error: {type(err).__name__}: {err}{hint}", file=sys.stderr)
            return 1
