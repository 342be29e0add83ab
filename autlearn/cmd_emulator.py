"""`autlearn emulator setup|info`: the emulated arm64 device (android_harness.emulator)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from autlearn.cli import CommandTree

GROUP_HELP = "the emulated arm64 Linux device (qemu-user): its root file system"


def _setup(args: argparse.Namespace) -> int:
    from android_harness.emulator import setup_root

    record = setup_root(args.root, progress=not args.quiet)
    device = record["device"]
    print(f"ready: {device['machine']} python {device['python']}, numpy {device['numpy']}, TVM {device['tvm']} "
          f"under {record['qemu']}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from android_harness.emulator import EmulatorRoot

    root = EmulatorRoot(args.root)
    root.check_ready()
    print(json.dumps({"root": str(root.root), **root.setup_record()}, indent=2))
    return 0


def register(tree: CommandTree) -> None:
    """Adds `emulator setup` and `emulator info`."""
    p = tree.subcommand("emulator", "setup", "build the arm64 root (Debian arm64 packages, aarch64 wheels, the "
                        "device packages) that the qemu transport runs; idempotent, downloads only what is "
                        "missing", GROUP_HELP)
    p.add_argument("--root", type=Path, help="root directory (default: $AUTLEARN_EMULATOR_ROOT, else "
                                             "<cache>/emulator/arm64 with cache $AUTLEARN_CACHE or ~/.cache/autlearn)")
    p.set_defaults(func=_setup)
    p = tree.subcommand("emulator", "info", "what the emulator root holds (versions, the device's own report)",
                        GROUP_HELP)
    p.add_argument("--root", type=Path, help="root directory (default: as for setup)")
    p.set_defaults(func=_info)
