"""The `qemu` transport: the emulated arm64 Linux device (android_harness.emulator) as a device.

Its storage is a directory (by default the root's storage/); qemu-user shows the host's files
to the device at the same paths, so push and pull are copies, as adb's are on a phone. The
shell is the device's arm64 busybox `sh`, its exit code reported; modules run in a TVM RPC
server started inside the emulator (`python -m tvm.exec.rpc_server`, the runtime library only)
that listens on 127.0.0.1 and is stopped with the transport. That server is the only socket
the device side opens.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from android_harness.emulator import EmulatorRoot
from android_harness.transports import RPCTransport, VMFunctionTimer, copy_file, read_files_via_shell, sha256_via_shell

RPC_START_TIMEOUT_S = 180.0  # the server imports TVM under emulation, then its worker does too
SHELL_TIMEOUT_S = 600.0


@dataclasses.dataclass(frozen=True)
class ShellResult:
    """What a device shell command gave: its exit code and output."""

    exit_code: int
    stdout: str
    stderr: str


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux prctl)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, for the device's RPC server."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class QemuTransport:
    """The emulated arm64 device: storage, shell, python and a TVM RPC server, all inside qemu-user.

    Remote paths are relative to the storage directory, or absolute paths inside it. Use it as a
    context manager (or call `close`) so the RPC server stops.
    """

    name = "qemu"

    def __init__(self, root: str | Path | None = None, storage: str | Path | None = None) -> None:
        self.emulator = EmulatorRoot(root)
        self.emulator.check_ready()
        self.storage = Path(storage).resolve() if storage is not None else self.emulator.storage
        self.storage.mkdir(parents=True, exist_ok=True)
        self._server: subprocess.Popen | None = None
        self._port = 0
        self._rpc: RPCTransport | None = None

    @property
    def description(self) -> str:
        """Where code runs here, for reports and the manifest's `verified_on`."""
        record = self.emulator.setup_record()
        device = record.get("device", {})
        return (f"emulated arm64 Linux (aarch64-linux-gnu) under {record.get('qemu', 'qemu-aarch64')}, "
                f"python {device.get('python')}, TVM runtime {device.get('tvm')}")

    def __enter__(self) -> "QemuTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path(self, remote: str) -> Path:
        """The file a remote path names (the device sees it at this same path)."""
        path = (self.storage / remote).resolve()
        if path != self.storage and self.storage not in path.parents:
            raise ValueError(f"remote path {remote!r} is outside the device storage {self.storage}")
        return path

    def push(self, local: Path, remote: str) -> None:
        copy_file(local, self.path(remote))

    def pull(self, remote: str, local: Path) -> Path:
        """Copies a device file here; the local path."""
        source = self.path(remote)
        if not source.is_file():
            raise FileNotFoundError(f"cannot pull {remote}: no such file on the device ({source})")
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, local)
        return Path(local)

    def run(self, command: str, timeout: float = SHELL_TIMEOUT_S) -> ShellResult:
        """Runs `command` in the device's sh (working directory: the storage); never raises on exit codes."""
        try:
            done = subprocess.run(self.emulator.shell_command(command), cwd=self.storage,
                                  env=self.emulator.environment(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"qemu shell command timed out after {timeout} s: {command}") from err
        return ShellResult(done.returncode, done.stdout, done.stderr)

    def shell(self, command: str) -> str:
        result = self.run(command)
        if result.exit_code != 0:
            raise RuntimeError(f"qemu shell command failed (exit {result.exit_code}): {command}: "
                               f"{result.stderr.strip()}")
        return result.stdout

    def python(self, args: Sequence[str], timeout: float | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Runs the device's arm64 python with `args` in `cwd` (default: the storage directory)."""
        return self.emulator.run_python(list(args), cwd=cwd or self.storage, timeout=timeout,
                                        env={"TMPDIR": str(self._tmp())})

    def autlearn(self, args: Sequence[str], timeout: float | None = None, cwd: Path | None = None) -> str:
        """Runs `autlearn ARGS` on the device (e.g. `device offline`) in `cwd`; its stdout. RuntimeError
        names the device's error line. Host paths mean the same there (qemu-user shares the file system)."""
        done = self.python(["-m", "autlearn", *args], timeout=timeout, cwd=cwd)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            raise RuntimeError(f"`autlearn {' '.join(args[:2])}` failed on the {self.name} device "
                               f"(exit {done.returncode}): {lines[-1] if lines else 'no error output'}")
        return done.stdout

    def sha256(self, remote: Sequence[str]) -> dict[str, str]:
        return sha256_via_shell(self, remote)

    def read_files(self, remote: Sequence[str]) -> list[str]:
        return read_files_via_shell(self, remote)

    def _tmp(self) -> Path:
        tmp = self.storage / ".tmp"
        tmp.mkdir(exist_ok=True)
        return tmp

    def start_rpc_server(self) -> tuple[str, int]:
        """Starts the TVM RPC server inside the emulator (once) on a free 127.0.0.1 port; (host, port)
        once it listens. It serves one session at a time: the tuner's RPC runner connects here itself."""
        if self._server is not None and self._server.poll() is None:
            return "127.0.0.1", self._port
        self._port = free_port()
        log = self.storage / ".rpc_server.log"
        command = self.emulator.python_command(["-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                                "--port", str(self._port), "--port-end", str(self._port + 1)])
        with open(log, "w") as out:
            # its own process group, so that close() stops the server, its worker and their forks
            # together; and it dies with this process, so a killed harness leaves no server behind
            self._server = subprocess.Popen(command, cwd=self.storage, stdout=out, stderr=subprocess.STDOUT,
                                            env=self.emulator.environment({"TMPDIR": str(self._tmp())}),
                                            start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + RPC_START_TIMEOUT_S
        while "bind to" not in log.read_text():
            if self._server.poll() is not None:
                raise RuntimeError(f"the TVM RPC server in the emulator exited ({self._server.returncode}): "
                                   f"{' '.join(log.read_text().strip().splitlines()[-2:])}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the TVM RPC server in the emulator did not listen within "
                                   f"{RPC_START_TIMEOUT_S:.0f} s (log: {log})")
            time.sleep(0.2)
        return "127.0.0.1", self._port

    def rpc(self) -> RPCTransport:
        """A session with the device's TVM RPC server (started on first use); kept until close()."""
        if self._rpc is None:
            host, port = self.start_rpc_server()
            self._rpc = RPCTransport(host, port)
            self._rpc.name = self.name
        return self._rpc

    def prepare(self, module: str, function: str, args: Sequence[np.ndarray]) -> VMFunctionTimer:
        path = self.path(module)
        if not path.is_file():
            raise FileNotFoundError(f"module {module} is not on the device ({path}): push the bundle first")
        return self.rpc().prepare(str(path), function, args)

    def run_module(self, module: str, function: str, args: Sequence[np.ndarray], *,
                   number: int, repeat: int) -> list[float]:
        return self.prepare(module, function, args).time(number=number, repeat=repeat)

    def close(self) -> None:
        """Stops the device's RPC server (and every process it started)."""
        self._rpc = None
        if self._server is not None and self._server.poll() is None:
            os.killpg(self._server.pid, signal.SIGTERM)
            try:
                self._server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._server.pid, signal.SIGKILL)
                self._server.wait()
        self._server = None
