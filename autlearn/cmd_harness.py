"""`autlearn` commands: push a bundle to a device, `bench latency`, `bench energy` (android_harness).

Transports: local, adb, rpc (a TVM RPC server) and qemu (the emulated arm64 device).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from autlearn.cli import CommandTree

if TYPE_CHECKING:
    from android_harness.transports import Transport

BENCH_HELP = "benchmarks"
PHONE_DIR = "/data/local/tmp/autlearn"  # adb's default: world-writable on every Android phone
EMULATED_NOTE = "qemu-user emulates an arm64 CPU: these times rank builds against each other, they are not phone times"


@contextlib.contextmanager
def _open_transport(args: argparse.Namespace) -> Iterator[tuple[Transport, str]]:
    """(transport, destination of the bundle's files on it) for the command's flags."""
    from android_harness import transports

    if args.transport == "local":
        if args.dest:
            yield transports.LocalTransport(args.dest), ""
        else:
            with tempfile.TemporaryDirectory(prefix="autlearn-device-") as root:
                yield transports.LocalTransport(root), ""
    elif args.transport == "adb":
        adb = transports.AdbTransport(args.serial, rpc_port=getattr(args, "rpc_port", None))
        yield adb, args.dest or f"{PHONE_DIR}/{Path(args.bundle).resolve().name}"
    elif args.transport == "qemu":
        from android_harness.qemu import QemuTransport

        with QemuTransport(args.emulator_root) as device:
            yield device, args.dest or Path(args.bundle).resolve().name
    elif getattr(args, "host", None):
        yield transports.RPCTransport(args.host, args.port), ""
    else:
        with transports.local_rpc_server() as (host, port):
            yield transports.RPCTransport(host, port), ""


def _write_json(data: dict, path: str | None) -> None:
    text = json.dumps(data, indent=2)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


def _push(args: argparse.Namespace) -> int:
    from android_harness.push import push_bundle

    if args.transport == "local" and not args.dest:
        raise ValueError("--transport local needs --dest: the directory that stands for the device's storage")
    with _open_transport(args) as (transport, dest):
        pushed = push_bundle(Path(args.bundle), transport, dest, verify=not args.no_verify)
    _write_json({"transport": args.transport, "dest": args.dest or dest, "verified": not args.no_verify,
                 "files": pushed}, None)
    return 0


def _latency(args: argparse.Namespace) -> int:
    from android_harness.latency import bench_latency, plot_latency

    with _open_transport(args) as (transport, dest):
        results = bench_latency(Path(args.bundle), transport, dest, number=args.number, repeat=args.repeat)
    if args.plot:
        plot_latency(results, Path(args.plot), title=f"{Path(args.bundle).name} over {args.transport}")
    note = {"note": EMULATED_NOTE} if args.transport == "qemu" else {}
    _write_json({"bundle": str(args.bundle), "transport": args.transport, **note,
                 "functions": [r.to_json() for r in results]}, args.json)
    return 0


def _energy(args: argparse.Namespace) -> int:
    from android_harness.energy import bench_energy

    battery = {"battery_dir": args.battery} if args.battery else {}
    with _open_transport(args) as (transport, dest):
        result = bench_energy(Path(args.bundle), transport, dest, function=args.function, seconds=args.seconds,
                              idle_seconds=args.idle_seconds, interval_s=args.interval,
                              allow_charging=args.allow_charging, **battery)
    _write_json({"bundle": str(args.bundle), "transport": args.transport, **result.to_json()}, args.json)
    return 0


def _device_flags(p: argparse.ArgumentParser, transports: tuple[str, ...]) -> None:
    p.add_argument("--bundle", required=True, help="compiled bundle directory")
    p.add_argument("--transport", choices=transports, required=True,
                   help="local: a directory stands for the device; adb: a phone; rpc: a TVM RPC server; "
                        "qemu: the emulated arm64 device (autlearn emulator setup)")
    p.add_argument("--serial", help="adb device serial (default: the only attached device)")
    p.add_argument("--dest", help=f"where the bundle goes: a directory here (local), a path on the phone "
                                  f"(adb; default: {PHONE_DIR}/<bundle name>), a directory in the emulator's "
                                  "storage (qemu; default: <bundle name>)")
    if "rpc" in transports:
        p.add_argument("--host", help="TVM RPC server host (rpc; default: start one on 127.0.0.1)")
        p.add_argument("--port", type=int, default=9090, help="TVM RPC server port (rpc)")
    if "adb" in transports:
        p.add_argument("--rpc-port", type=int, help="port of the TVM RPC server on the phone (adb)")
    if "qemu" in transports:
        p.add_argument("--emulator-root", type=Path, help="emulator root (qemu; default: as `autlearn emulator "
                                                          "setup` makes it)")


def register(tree: CommandTree) -> None:
    """Adds `push`, `bench latency` and `bench energy`."""
    p = tree.command("push", "push a bundle to a device and verify every file's sha256 there")
    _device_flags(p, ("local", "adb", "rpc", "qemu"))
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check on the device")
    p.set_defaults(func=_push)

    p = tree.subcommand("bench", "latency", "latency of a bundle's forward functions and update on a device",
                        BENCH_HELP)
    _device_flags(p, ("local", "rpc", "adb", "qemu"))
    p.add_argument("--number", type=int, default=10, help="calls averaged into one measurement")
    p.add_argument("--repeat", type=int, default=10, help="measurements per function (the median is reported)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--plot", help="write a bar chart of the medians to this PNG file")
    p.set_defaults(func=_latency)

    p = tree.subcommand("bench", "energy", "energy per call from the battery counters while a function runs",
                        BENCH_HELP)
    _device_flags(p, ("local", "adb", "rpc"))
    p.add_argument("--function", default="update", help="update or a forward function name")
    p.add_argument("--seconds", type=float, default=10.0, help="how long the function runs")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="idle measurement before, subtracted")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between battery readings")
    p.add_argument("--battery", help="directory with current_now (uA) and voltage_now (uV) "
                                     "(default: /sys/class/power_supply/battery)")
    p.add_argument("--allow-charging", action="store_true",
                   help="measure even while the battery charges (the charger then distorts the counters)")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(func=_energy)
