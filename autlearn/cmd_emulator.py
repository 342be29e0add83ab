"""`autlearn emulator setup|info|run`: the emulated arm64 device (android_harness.emulator)."""
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


def _run(args: argparse.Namespace) -> int:
    from android_harness.qemu import QemuTransport

    command = args.autlearn_args[1:] if args.autlearn_args[:1] == ["--"] else args.autlearn_args
    if not command:
        raise ValueError("give the autlearn command to run on the device, e.g. `autlearn emulator run -- device "
                         "offline --bundle B --data D --state S`")
    with QemuTransport(args.root) as device:
        print(device.autlearn(command, cwd=Path.cwd()), end="")  # relative paths mean what they do here
    return 0


def register(tree: CommandTree) -> None:
    """Adds `emulator setup`, `emulator info` and `emulator run`."""
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
    p = tree.subcommand("emulator", "run", "run an autlearn command (device offline|online|infer|status) on the "
                        "emulated arm64 device; paths mean the same there", GROUP_HELP)
    p.add_argument("--root", type=Path, help="root directory (default: as for setup)")
    p.add_argument("autlearn_args", nargs=argparse.REMAINDER, metavar="-- ARGS",
                   help="the autlearn arguments, after --")
    p.set_defaults(func=_run)
