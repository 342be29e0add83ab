"""An emulated arm64 Linux device: a Debian arm64 root run through `qemu-aarch64-static`.

There is no phone here, but qemu-user runs arm64 binaries on this CPU, so the device side
(python3.11 for arm64, numpy, the TVM runtime, device_runtime) runs as it would on an arm64
board, and the bundle's shipped aarch64 .so files execute for real (emulated: times rank
candidates, they are not phone times). `setup_root` builds the root with no network inside:
Debian's arm64 .debs downloaded on the host (`apt-get download PKG:arm64`) and unpacked with
`dpkg-deb -x`, the aarch64 wheels fetched on the host with `pip download --platform`, and this
project's device packages copied in without torch. binfmt_misc is not mounted here, so every
arm64 program is started as `qemu-aarch64-static -L ROOT PROGRAM`; the device's `python3` and
`sh` are small host scripts doing that, so a device process that starts another one (TVM's
RPC server forks and spawns workers) re-enters the emulator instead of failing with ENOEXEC.

Layout of a root directory: debs/ and wheels/ (download caches), sysroot/ (the arm64 file
system, qemu's -L), bin/ (the launchers), site/ (PYTHONPATH: the wheels and the project's packages), storage/ (the
device's storage, what the qemu transport pushes into), setup.json (what is installed).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from device_runtime.files import atomic_write_bytes, cache_dir

QEMU = "qemu-aarch64-static"
ROOT_ENV = "AUTLEARN_EMULATOR_ROOT"
PYTHON = "/usr/bin/python3.11"  # the arm64 interpreter, as the device sees it
# The arm64 userland: python3.11 and the libraries it, numpy and the TVM runtime link, plus a
# static busybox for the device's shell (sh, sha256sum, cat, ls ...).
ARM64_DEBS = (
    "libc6", "libgcc-s1", "libstdc++6", "libgomp1", "zlib1g", "libexpat1", "libffi8", "libssl3",
    "libbz2-1.0", "liblzma5", "libuuid1", "libncursesw6", "libtinfo6", "libsqlite3-0",
    "libcrypt1", "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11-minimal", "busybox-static",
)
# What the device side imports: numpy, the TVM runtime (apache-tvm with TVM_USE_RUNTIME_LIB=1),
# tvm_ffi and what it imports, tqdm (the device commands' progress), and cloudpickle and psutil
# (TVM's RPC server sends its serving function to a worker process with them).
PINNED_DISTRIBUTIONS = ("apache-tvm", "apache-tvm-ffi", "numpy", "typing_extensions", "tqdm", "cloudpickle",
                        "psutil")
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
PROJECT_PACKAGES = ("device_runtime", "augment", "autlearn")  # copied as sources; no torch needed
PROJECT_DIR = Path(__file__).resolve().parents[1]
SETUP_FILE = "setup.json"
SETUP_VERSION = 1


def default_root() -> Path:
    """`$AUTLEARN_EMULATOR_ROOT`, else `<cache>/emulator/arm64` (cache: $AUTLEARN_CACHE or ~/.cache/autlearn)."""
    return Path(os.environ.get(ROOT_ENV) or cache_dir() / "emulator" / "arm64")


def _run(command: Sequence[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """Runs a host command; RuntimeError with its stderr when it fails."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, **kwargs)
    except FileNotFoundError as err:
        raise RuntimeError(f"{what}: {command[0]} is not installed ({err})") from err
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {shlex.join(command)}: {' '.join(tail)}")
    return done


def _privileged(command: list[str]) -> list[str]:
    """`command` as root: as is when we are root, else through sudo."""
    if os.geteuid() == 0:
        return command
    if shutil.which("sudo") is None:
        raise RuntimeError(f"{shlex.join(command)} needs root and sudo is not installed: run it as root once")
    return ["sudo", *command]


def pinned_versions() -> dict[str, str]:
    """The wheel pins: this host's installed versions, so both sides run the same numpy and TVM."""
    versions = {}
    for name in PINNED_DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError as err:
            raise RuntimeError(f"{name} is not installed on the host; install the project first (make setup)") from err
    return versions


def project_digest() -> str:
    """sha256 over the project packages' sources that the root holds a copy of."""
    digest = hashlib.sha256()
    for package in PROJECT_PACKAGES:
        for path in sorted((PROJECT_DIR / package).rglob("*.py")):
            digest.update(path.relative_to(PROJECT_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class EmulatorRoot:
    """The directories of one emulator root and how to run its arm64 python."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.root = self.root.expanduser().resolve()
        self.debs, self.wheels = self.root / "debs", self.root / "wheels"
        self.sysroot, self.site, self.storage = self.root / "sysroot", self.root / "site", self.root / "storage"
        self.bin = self.root / "bin"  # the launchers (install_launchers): the device's whole PATH

    def setup_record(self) -> dict:
        """setup.json: versions, project digest and the device's own report; {} when not set up."""
        path = self.root / SETUP_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def is_ready(self) -> bool:
        """Whether setup finished here (the test marker `arm64` skips without it)."""
        return self.setup_record().get("version") == SETUP_VERSION and (self.sysroot / PYTHON[1:]).is_file()

    def check_ready(self) -> None:
        """Raises unless set up; recopies the project's device packages when this tree changed them
        (a local copy, no download), so the device never runs stale code."""
        if not self.is_ready():
            raise FileNotFoundError(f"no arm64 emulator root at {self.root}: run `autlearn emulator setup"
                                    f"{'' if self.root == default_root().resolve() else ' --root ' + str(self.root)}`")
        record = self.setup_record()
        if record.get("project_sha256") != project_digest():
            record["project_sha256"] = install_project(self)
            atomic_write_bytes(self.root / SETUP_FILE, (json.dumps(record, indent=2) + "\n").encode())

    def qemu(self) -> str:
        path = shutil.which(QEMU)
        if path is None:
            raise RuntimeError(f"{QEMU} not found: install Debian's qemu-user-static")
        return path

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The device process's whole environment: nothing of the host's (no venv, no proxies, no PYTHONPATH)."""
        env = {"PATH": str(self.bin), "HOME": str(self.storage), "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
               "PYTHONPATH": str(self.site), "PYTHONDONTWRITEBYTECODE": "1",
               "AUTLEARN_CACHE": str(self.storage / ".cache"),
               # the runtime library only, as on a phone (device_runtime.isolation does the same)
               "TVM_USE_RUNTIME_LIB": "1", "TVM_FFI_DISABLE_TORCH_C_DLPACK": "1",
               "TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS", str(os.cpu_count() or 1))}
        return {**env, **(extra or {})}

    def python_command(self, args: Sequence[str]) -> list[str]:
        """argv that runs the arm64 python3.11 with `args` under qemu-user."""
        return [self.qemu(), "-L", str(self.sysroot), "-0", str(self.bin / "python3"),
                str(self.sysroot / PYTHON[1:]), *args]

    def shell_command(self, command: str) -> list[str]:
        """argv that runs `command` in the device's arm64 busybox sh under qemu-user."""
        return [self.qemu(), "-L", str(self.sysroot), str(self.sysroot / "bin/busybox"), "sh", "-c", command]

    def run_python(self, args: Sequence[str], *, cwd: Path | None = None, timeout: float | None = None,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Runs the device's python with `args` (cwd: the device storage); its CompletedProcess."""
        self.storage.mkdir(parents=True, exist_ok=True)
        return subprocess.run(self.python_command(args), cwd=cwd or self.storage, env=self.environment(env),
                              capture_output=True, text=True, timeout=timeout)


# --- setup ---------------------------------------------------------------------------------

def ensure_arm64_architecture(say: Callable[[str], None]) -> None:
    """dpkg knows arm64 and apt has its package lists (adds the architecture and updates once)."""
    foreign = _run(["dpkg", "--print-foreign-architectures"], "listing dpkg architectures").stdout.split()
    updated = False
    if "arm64" not in foreign:
        say("dpkg: adding the arm64 architecture (dpkg --add-architecture arm64), then apt-get update")
        _run(_privileged(["dpkg", "--add-architecture", "arm64"]), "adding the arm64 architecture")
        _run(_privileged(["apt-get", "update", "-qq"]), "apt-get update")
        updated = True
    policy = _run(["apt-cache", "policy", "python3.11-minimal:arm64"], "asking apt about arm64 packages").stdout
    if "Candidate: (none)" in policy or "Candidate:" not in policy:
        if updated:
            raise RuntimeError("apt has no arm64 python3.11-minimal even after apt-get update: "
                               "is a Debian arm64 mirror configured in /etc/apt/sources.list?")
        say("apt: no arm64 package lists yet, running apt-get update")
        _run(_privileged(["apt-get", "update", "-qq"]), "apt-get update")


def _downloaded_deb(debs: Path, package: str) -> Path | None:
    found = sorted(debs.glob(f"{package}_*_arm64.deb"))
    return found[-1] if found else None


def download_debs(root: EmulatorRoot, say: Callable[[str], None], progress: bool) -> list[Path]:
    """The arm64 .debs in root.debs, downloaded with `apt-get download PKG:arm64` when missing."""
    root.debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in ARM64_DEBS if _downloaded_deb(root.debs, p) is None]
    if missing:
        ensure_arm64_architecture(say)
        for package in tqdm(missing, desc="arm64 .debs", unit="deb", disable=None if progress else True):
            _run(["apt-get", "download", "-qq", f"{package}:arm64"], f"downloading {package}:arm64", cwd=root.debs)
    debs = [_downloaded_deb(root.debs, p) for p in ARM64_DEBS]
    return [d for d in debs if d is not None]


def unpack_debs(root: EmulatorRoot, debs: Sequence[Path], progress: bool) -> None:
    """`dpkg-deb -x` each .deb into the sysroot once (a marker per .deb records it)."""
    marks = root.sysroot / ".unpacked"
    marks.mkdir(parents=True, exist_ok=True)
    todo = [d for d in debs if not (marks / d.name).exists()]
    for deb in tqdm(todo, desc="unpack into the arm64 root", unit="deb", disable=None if progress else True):
        _run(["dpkg-deb", "-x", str(deb), str(root.sysroot)], f"unpacking {deb.name}")
        (marks / deb.name).touch()


def download_wheels(root: EmulatorRoot, versions: dict[str, str], say: Callable[[str], None]) -> list[Path]:
    """The aarch64 wheels of the pinned distributions, fetched on the host (`pip download --platform`)."""
    root.wheels.mkdir(parents=True, exist_ok=True)

    def wheel(name: str) -> Path | None:
        stem = name.replace("-", "_").lower()
        found = [w for w in root.wheels.glob("*.whl")
                 if w.name.lower().startswith(f"{stem}-{versions[name]}-")]
        return found[0] if found else None

    missing = [n for n in versions if wheel(n) is None]
    if missing:
        say(f"pip: downloading the {WHEEL_PLATFORM} wheels of {', '.join(missing)}")
        _run([sys.executable, "-m", "pip", "download", "-q", "--dest", str(root.wheels), "--no-deps",
              "--only-binary=:all:", "--platform", WHEEL_PLATFORM, "--python-version", "3.11",
              "--implementation", "cp", *(f"{n}=={versions[n]}" for n in missing)], "pip download of aarch64 wheels")
    found = {n: wheel(n) for n in versions}
    absent = [n for n, w in found.items() if w is None]
    if absent:
        raise RuntimeError(f"pip downloaded no aarch64 wheel of {', '.join(absent)} into {root.wheels}")
    return [w for w in found.values() if w is not None]


def install_wheels(root: EmulatorRoot, wheels: Sequence[Path], progress: bool) -> None:
    """Unzips each wheel into site/ once (pure unpacking: no pip, no network inside the root)."""
    marks = root.site / ".installed"
    marks.mkdir(parents=True, exist_ok=True)
    todo = [w for w in wheels if not (marks / w.name).exists()]
    for wheel in tqdm(todo, desc="install aarch64 wheels", unit="wheel", disable=None if progress else True):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(root.site)
        (marks / wheel.name).touch()


def install_project(root: EmulatorRoot) -> str:
    """Copies the device packages' sources into site/ (replacing an older copy); their digest."""
    for package in PROJECT_PACKAGES:
        target = root.site / package
        fresh = root.site / f".{package}.new"
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.copytree(PROJECT_DIR / package, fresh, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.rmtree(target, ignore_errors=True)
        fresh.rename(target)
    return project_digest()


def install_launchers(root: EmulatorRoot) -> None:
    """Host scripts in ROOT/bin that start an arm64 program under qemu: python3 (and python3.11,
    python) and one per busybox applet (sh, cat, sha256sum, ...).

    The kernel cannot run an arm64 binary that a device process starts (no binfmt_misc), and
    qemu-user passes execve's path to it untranslated, but it runs these scripts: the device's
    PATH is ROOT/bin and its python's sys.executable is ROOT/bin/python3, so a device process
    starting python (TVM's RPC server spawns its worker) or a shell command lands here and
    re-enters qemu. Nothing of the host is on the device's PATH.
    """
    qemu, busybox = root.qemu(), str(root.sysroot / "bin/busybox")
    applets = _run([qemu, "-L", str(root.sysroot), busybox, "--list"], "listing busybox applets").stdout.split()
    python = [qemu, "-L", str(root.sysroot), "-0", str(root.bin / "python3"), str(root.sysroot / PYTHON[1:])]
    launchers = {name: [qemu, "-L", str(root.sysroot), busybox, name] for name in applets}
    launchers.update({name: python for name in ("python3", "python3.11", "python")})
    if root.bin.exists():
        shutil.rmtree(root.bin)
    root.bin.mkdir(parents=True)
    for name, argv in launchers.items():
        path = root.bin / name
        path.write_text(f"#!/bin/sh\nexec {shlex.join(argv)} \"$@\"\n")
        path.chmod(0o755)


# Linux's arm64 HWCAP and HWCAP2 bits, in order (arch/arm64/include/uapi/asm/hwcap.h): the names
# /proc/cpuinfo's Features line uses.
HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc "
               "dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm "
                "svebf16 i8mm bf16 dgh rng bti mte").split()
AUXV_REPORT = (
    "import struct\n"
    "data = open('/proc/self/auxv', 'rb').read()\n"
    "pairs = dict(struct.iter_unpack('<QQ', data))\n"
    "print(pairs.get(16, 0), pairs.get(26, 0))\n"
)


def write_cpuinfo(root: EmulatorRoot) -> list[str]:
    """sysroot/proc/cpuinfo from the emulated CPU's own HWCAP bits; its Features.

    qemu-user fakes /proc/cpuinfo for some guests but not arm64: the device would read the
    host's x86 flags and refuse every arm64 bundle (device_runtime.bundle checks them). With -L,
    the device opens this file instead, so the check sees the CPU that really runs the code.
    """
    done = root.run_python(["-c", AUXV_REPORT], timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"cannot read the emulated CPU's HWCAP: {done.stderr.strip().splitlines()[-1:]}")
    hwcap, hwcap2 = (int(v) for v in done.stdout.split())
    features = [n for i, n in enumerate(HWCAP_NAMES) if hwcap >> i & 1]
    features += [n for i, n in enumerate(HWCAP2_NAMES) if hwcap2 >> i & 1]
    cores = "".join(f"processor\t: {i}\nFeatures\t: {' '.join(features)}\nCPU architecture: 8\n\n"
                    for i in range(os.cpu_count() or 1))
    (root.sysroot / "proc").mkdir(exist_ok=True)
    (root.sysroot / "proc/cpuinfo").write_text(cores)
    return features


DEVICE_REPORT = (
    "import json, platform, sys, numpy, tvm\n"
    "from tvm.runtime.vm import VirtualMachine\n"
    "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(),"
    " 'numpy': numpy.__version__, 'tvm': tvm.__version__}))\n"
)


def device_report(root: EmulatorRoot, timeout: float = 300) -> dict:
    """What the device says about itself: machine (aarch64), python, numpy and TVM versions."""
    done = root.run_python(["-c", DEVICE_REPORT], timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the arm64 python in {root.root} cannot import numpy and the TVM runtime: "
                           f"{done.stderr.strip().splitlines()[-1:] or done.returncode}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["machine"] != "aarch64":
        raise RuntimeError(f"the emulated python reports machine {report['machine']!r}, not aarch64")
    return report


def setup_root(root: str | Path | None = None, *, progress: bool = True,
               say: Callable[[str], None] = print) -> dict:
    """Builds (or completes) the arm64 emulator root; every step skips what is already there.

    Returns setup.json's content. Downloads happen here only: apt's arm64 .debs and PyPI's
    aarch64 wheels, both on the host.
    """
    emulator = EmulatorRoot(root)
    emulator.qemu()
    for tool in ("dpkg-deb", "apt-get"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: the emulator root is built from Debian packages")
    emulator.root.mkdir(parents=True, exist_ok=True)
    say(f"arm64 emulator root: {emulator.root}")
    versions = pinned_versions()
    record = emulator.setup_record()
    debs = download_debs(emulator, say, progress)
    unpack_debs(emulator, debs, progress)
    install_wheels(emulator, download_wheels(emulator, versions, say), progress)
    install_launchers(emulator)
    digest = install_project(emulator)
    if not (emulator.sysroot / "proc/cpuinfo").is_file() or "cpu_features" not in record:
        record["cpu_features"] = write_cpuinfo(emulator)
    if record.get("version") != SETUP_VERSION or record.get("wheels") != versions or "device" not in record:
        say("checking the device: importing numpy and TVM under qemu-aarch64 (about 15 s)")
        record = {"version": SETUP_VERSION, "wheels": versions, "debs": [d.name for d in debs],
                  "qemu": _run([emulator.qemu(), "--version"], "qemu version").stdout.splitlines()[0],
                  "device": device_report(emulator), "cpu_features": record["cpu_features"]}
    record["project_sha256"] = digest
    atomic_write_bytes(emulator.root / SETUP_FILE, (json.dumps(record, indent=2) + "\n").encode())
    return record
