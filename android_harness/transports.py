"""Ways to reach a device: its storage, a shell, and timed runs of compiled modules.

- LocalTransport: a directory on this machine stands for the phone's storage; modules run in
  this process.
- AdbTransport: a phone over `adb -s SERIAL`; modules run in a TVM RPC server on the phone
  (TVM's Android RPC app or `tvm_rpc`), reached through `adb forward`.
- RPCTransport: a TVM RPC server (`tvm.rpc`); files go to the server's workspace.
- QemuTransport (android_harness.qemu): the emulated arm64 Linux device.

Modules are timed with the relax VM's stateful API (`set_input` + `invoke_stateful`), which
also works over RPC for functions that return tuples (the bundle's forward functions do).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

ADB_TIMEOUT_S = 600


class Transport(Protocol):
    """What the harness needs from a device."""

    name: str

    def push(self, local: Path, remote: str) -> None:
        """Copies a local file to `remote` on the device (parent directories created)."""

    def shell(self, command: str) -> str:
        """Runs a shell command on the device; its stdout. RuntimeError when it fails."""

    def sha256(self, remote: Sequence[str]) -> dict[str, str]:
        """sha256 hex of each remote file, computed on the far side."""

    def read_files(self, remote: Sequence[str]) -> list[str]:
        """The text of each remote file (small ones: battery counters), in one round trip where possible."""

    def prepare(self, module: str, function: str, args: Sequence[np.ndarray]) -> "VMFunctionTimer":
        """`function` of the relax VM module at `module`, loaded there with its arguments copied over."""

    def run_module(self, module: str, function: str, args: Sequence[np.ndarray], *,
                   number: int, repeat: int) -> list[float]:
        """Seconds per call of `function` of the relax VM module at `remote`, one per repeat."""


class VMFunctionTimer:
    """One function of a loaded relax VM module with its arguments already on `device` (local or
    remote): loading and copying happen once, so a benchmark can time (and meter) only the calls."""

    def __init__(self, module: Any, device: Any, function: str, args: Sequence[np.ndarray]) -> None:
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self.device, self.function = device, function
        self.vm = VirtualMachine(module, device)
        self.vm.set_input(function, *[tvm.runtime.tensor(np.asarray(a, order="C"), device) for a in args])

    def time(self, *, number: int, repeat: int) -> list[float]:
        """Seconds per call, one per repeat; each repeat's first call is a discarded warm-up
        (time_evaluator's convention)."""
        if number < 1 or repeat < 1:
            raise ValueError(f"number and repeat must be >= 1, got number={number}, repeat={repeat}")
        timer = self.vm.time_evaluator("invoke_stateful", self.device, number=number, repeat=repeat)
        return [float(t) for t in timer(self.function).results]


def time_vm_function(module: Any, device: Any, function: str, args: Sequence[np.ndarray], *,
                     number: int, repeat: int) -> list[float]:
    """Times one function of a loaded relax VM module on `device` (local or remote)."""
    return VMFunctionTimer(module, device, function, args).time(number=number, repeat=repeat)


READ_SEPARATOR = "--autlearn-end-of-file--"


def read_files_via_shell(transport: Transport, remote: Sequence[str]) -> list[str]:
    """Each remote file's text through one `cat` per file in a single shell command."""
    command = " && ".join(f"cat {shlex.quote(p)} && echo {READ_SEPARATOR}" for p in remote)
    parts = transport.shell(command).split(READ_SEPARATOR + "\n")
    if len(parts) <= len(remote) - 1 or not remote:
        raise RuntimeError(f"{transport.name}: reading {', '.join(remote)} printed {len(parts) - 1} files")
    return parts[: len(remote)]


def sha256_via_shell(transport: Transport, remote: Sequence[str]) -> dict[str, str]:
    """sha256 of remote files through the device's `sha256sum` (toybox on Android 8+, coreutils)."""
    if not remote:
        return {}
    out = transport.shell("sha256sum " + " ".join(shlex.quote(p) for p in remote))
    digests = {}
    for line in out.splitlines():
        match = re.fullmatch(r"([0-9a-f]{64}) [ *]?(.+)", line.strip())
        if match:
            digests[match.group(2)] = match.group(1)
    missing = [p for p in remote if p not in digests]
    if missing:
        raise RuntimeError(f"{transport.name}: sha256sum printed no digest for {', '.join(missing)} (output: {out!r})")
    return digests


def copy_file(local: Path, target: Path) -> None:
    """A push onto a device whose storage is a directory here (local, or an emulator's). The copy
    lands under a temporary name and is renamed over the target: a shared object loaded from the
    old file keeps its pages (copying over it in place crashes the process using it), and a killed
    push leaves no half-written file under the target's name (the next push overwrites the partial)."""
    local = Path(local)
    if not local.is_file():
        raise FileNotFoundError(f"cannot push {local}: no such file")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(local, partial)
    os.replace(partial, target)


class LocalTransport:
    """A directory on this machine standing for the phone's storage; runs modules in-process.

    Relative remote paths are under `root`; the shell runs `sh -c` with `root` as working
    directory, so relative paths mean the same in `push` and `shell`.
    """

    name = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, remote: str) -> Path:
        """The local file that a remote path names."""
        return self.root / remote

    def push(self, local: Path, remote: str) -> None:
        copy_file(local, self.path(remote))

    def shell(self, command: str) -> str:
        done = subprocess.run(["sh", "-c", command], cwd=self.root, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"local shell command failed (exit {done.returncode}): {command}: {done.stderr.strip()}")
        return done.stdout

    def sha256(self, remote: Sequence[str]) -> dict[str, str]:
        return sha256_via_shell(self, remote)

    def read_files(self, remote: Sequence[str]) -> list[str]:
        return read_files_via_shell(self, remote)

    def prepare(self, module: str, function: str, args: Sequence[np.ndarray]) -> VMFunctionTimer:
        import tvm

        path = self.path(module)
        if not path.is_file():
            raise FileNotFoundError(f"module {path} is not on the device: push the bundle first")
        return VMFunctionTimer(tvm.runtime.load_module(str(path)), tvm.cpu(), function, args)

    def run_module(self, module: str, function: str, args: Sequence[np.ndarray], *,
                   number: int, repeat: int) -> list[float]:
        return self.prepare(module, function, args).time(number=number, repeat=repeat)


class RPCTransport:
    """A TVM RPC server: push uploads into its workspace, run_module loads and times there.

    Remote paths are file names in the server's flat workspace (it cannot make directories),
    or absolute paths on the server's machine. TVM RPC has no shell; sha256 downloads the far
    side's copy and hashes it here.
    """

    name = "rpc"

    def __init__(self, host: str, port: int, key: str = "") -> None:
        from tvm import rpc

        try:
            self.session = rpc.connect(host, int(port), key=key)
        except Exception as err:  # tvm raises its own error types for refused connections
            raise RuntimeError(f"cannot connect to a TVM RPC server at {host}:{port}: {err}") from err
        self.address = f"{host}:{port}"

    def push(self, local: Path, remote: str) -> None:
        local = Path(local)
        if not local.is_file():
            raise FileNotFoundError(f"cannot push {local}: no such file")
        if len(PurePosixPath(remote).parts) != 1:
            raise ValueError(f"the TVM RPC workspace is flat: push to a file name, not {remote!r}")
        self.session.upload(str(local), target=remote)

    def shell(self, command: str) -> str:
        raise RuntimeError(f"the TVM RPC server at {self.address} offers no shell (cannot run {command!r}); "
                           "use the adb or local transport")

    def sha256(self, remote: Sequence[str]) -> dict[str, str]:
        return {p: hashlib.sha256(bytes(self.session.download(p))).hexdigest() for p in remote}

    def read_files(self, remote: Sequence[str]) -> list[str]:
        """Through the server's download (absolute paths read the device's files, e.g. sysfs)."""
        try:
            return [bytes(self.session.download(p)).decode(errors="replace") for p in remote]
        except Exception as err:  # tvm raises its own error types for a file it cannot read
            raise RuntimeError(f"the TVM RPC server at {self.address} cannot read {', '.join(remote)}: "
                               f"{str(err).strip().splitlines()[-1:]}") from err

    def prepare(self, module: str, function: str, args: Sequence[np.ndarray]) -> VMFunctionTimer:
        return VMFunctionTimer(self.session.load_module(module), self.session.cpu(), function, args)

    def run_module(self, module: str, function: str, args: Sequence[np.ndarray], *,
                   number: int, repeat: int) -> list[float]:
        return self.prepare(module, function, args).time(number=number, repeat=repeat)


@contextlib.contextmanager
def local_rpc_server(port: int = 9090, port_end: int = 9199) -> Iterator[tuple[str, int]]:
    """A real TVM RPC server in a child process on 127.0.0.1 (first free port in range); (host, port)."""
    from tvm import rpc

    server = rpc.Server(host="127.0.0.1", port=port, port_end=port_end, silent=True)
    try:
        yield server.host, server.port
    finally:
        server.terminate()


class AdbTransport:
    """An Android phone over adb. Modules run in a TVM RPC server on the phone, which must
    listen on `rpc_port` (TVM's Android RPC app or a pushed `tvm_rpc`); `adb forward` reaches it."""

    name = "adb"

    def __init__(self, serial: str | None = None, *, adb: str = "adb", rpc_port: int | None = None) -> None:
        self.adb = shutil.which(adb)
        if self.adb is None:
            raise RuntimeError(f"{adb!r} is not installed or not on PATH (Debian: apt-get install adb)")
        attached = self.devices()
        if serial is None:
            if len(attached) != 1:
                raise RuntimeError(f"pass --serial: adb sees {len(attached)} attached devices "
                                   f"({', '.join(attached) or 'none'})")
            serial = attached[0]
        elif serial not in attached:
            raise RuntimeError(f"no device {serial!r} attached (adb devices lists: {', '.join(attached) or 'none'})")
        self.serial = serial
        self.rpc_port = rpc_port
        self._rpc: RPCTransport | None = None

    def _adb(self, *args: str, serial: bool = True) -> str:
        command = [self.adb, *(("-s", self.serial) if serial else ()), *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=ADB_TIMEOUT_S)
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"{shlex.join(command)} timed out after {ADB_TIMEOUT_S} s") from err
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} failed (exit {done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()}")
        return done.stdout

    def devices(self) -> list[str]:
        """Serials of the attached devices that are ready (state `device`)."""
        lines = self._adb("devices", serial=False).splitlines()
        return [parts[0] for parts in (line.split() for line in lines[1:]) if parts[1:2] == ["device"]]

    def push(self, local: Path, remote: str) -> None:
        local = Path(local)
        if not local.is_file():
            raise FileNotFoundError(f"cannot push {local}: no such file")
        self._adb("push", str(local), remote)  # adb creates missing parent directories

    def shell(self, command: str) -> str:
        return self._adb("shell", command)

    def sha256(self, remote: Sequence[str]) -> dict[str, str]:
        return sha256_via_shell(self, remote)

    def read_files(self, remote: Sequence[str]) -> list[str]:
        return read_files_via_shell(self, remote)

    def rpc(self) -> RPCTransport:
        """The phone's TVM RPC server, through `adb forward tcp:PORT tcp:PORT`."""
        if self.rpc_port is None:
            raise RuntimeError("running modules over adb needs a TVM RPC server on the phone "
                               "(TVM's Android RPC app or tvm_rpc) and its port: pass --rpc-port")
        if self._rpc is None:
            self._adb("forward", f"tcp:{self.rpc_port}", f"tcp:{self.rpc_port}")
            self._rpc = RPCTransport("127.0.0.1", self.rpc_port)
        return self._rpc

    def prepare(self, module: str, function: str, args: Sequence[np.ndarray]) -> VMFunctionTimer:
        if not PurePosixPath(module).is_absolute():
            raise ValueError(f"module path on the phone must be absolute for the RPC server, got {module!r}")
        return self.rpc().prepare(module, function, args)

    def run_module(self, module: str, function: str, args: Sequence[np.ndarray], *,
                   number: int, repeat: int) -> list[float]:
        return self.prepare(module, function, args).time(number=number, repeat=repeat)
