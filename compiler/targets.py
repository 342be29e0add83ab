"""Compilation targets: the TVM target, the triple written in the manifest, and the linker.

Three targets (ARCHITECTURE.md): `host` (llvm with the detected CPU), `android-arm64` (the NDK
compiler named by TVM_NDK_CC) and `linux-arm64` (Debian's aarch64-linux-gnu-gcc). TVM 0.27 takes
targets as JSON dicts only (TVM_NOTES.md).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import tvm
from tvm.target import codegen

from device_runtime.bundle import CPU_FEATURE_FLAGS

ARM64_LINUX_CC = "aarch64-linux-gnu-gcc"
NDK_ENV = "TVM_NDK_CC"
ELF_MACHINE_AARCH64 = 183
ELF_MACHINE_X86_64 = 62


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """One build target: its manifest name, LLVM triple and CPU, and how .so files are linked."""

    name: str
    triple: str
    mcpu: str
    mattr: tuple[str, ...] = ()

    @property
    def is_host(self) -> bool:
        return self.name == "host"

    def tvm_target(self) -> tvm.target.Target:
        config: dict[str, Any] = {"kind": "llvm", "mtriple": self.triple, "mcpu": self.mcpu}
        if self.mattr:
            config["mattr"] = list(self.mattr)
        if self.is_host:
            config["num-cores"] = os.cpu_count() or 1
        return tvm.target.Target(config)

    def manifest_entry(self) -> dict[str, Any]:
        return {"name": self.name, "triple": self.triple, "mcpu": self.mcpu, "features": self.cpu_features()}

    def cpu_features(self) -> list[str]:
        """The instruction-set features LLVM may emit for this mcpu and mattr that the device can
        check (device_runtime.bundle.CPU_FEATURE_FLAGS): a CPU without one is refused, not SIGILLed."""
        return sorted(f for f in codegen.llvm_get_cpu_features(self.tvm_target()) if f in CPU_FEATURE_FLAGS)

    def elf_machine(self) -> int:
        """The ELF e_machine every shared object of this target must carry."""
        return ELF_MACHINE_AARCH64 if self.triple.startswith("aarch64") else ELF_MACHINE_X86_64

    def export(self, executable: tvm.runtime.Module, path: Path) -> Path:
        """Writes a compiled relax executable as a shared object linked for this target."""
        fcompile = linker_for(self.name)
        if fcompile is None:
            executable.export_library(str(path))
        else:
            executable.export_library(str(path), fcompile=fcompile)
        check_elf_machine(path, self.elf_machine())
        return path


def host_mcpu() -> str:
    """LLVM's name for this machine's CPU (what `-mcpu` should say for native code)."""
    cpu = codegen.llvm_get_system_cpu()
    if not cpu or cpu == "generic" or not codegen.llvm_is_valid_cpu(cpu, host_triple()):
        return "generic"
    return cpu


def host_triple() -> str:
    """The host's LLVM triple, as TVM's LLVM reports it."""
    return codegen.llvm_get_system_triple()


def resolve_target(name: str) -> TargetSpec:
    """The TargetSpec for a manifest target name; ValueError names the valid ones."""
    if name == "host":
        return TargetSpec("host", host_triple(), host_mcpu())
    if name == "android-arm64":
        return TargetSpec("android-arm64", "aarch64-linux-android", "generic", ("+neon",))
    if name == "linux-arm64":
        return TargetSpec("linux-arm64", "aarch64-linux-gnu", "generic", ("+neon",))
    raise ValueError(f"unknown target {name!r}; choose one of host, android-arm64, linux-arm64")


def linker_for(name: str) -> Callable | None:
    """The export_library compile function for a target (None: the host's default cc)."""
    if name == "host":
        return None
    if name == "linux-arm64":
        if shutil.which(ARM64_LINUX_CC) is None:
            raise RuntimeError(f"{ARM64_LINUX_CC} not found: install Debian's gcc-aarch64-linux-gnu")
        return tvm.support.cc.cross_compiler(ARM64_LINUX_CC)
    if name == "android-arm64":
        ndk_cc = os.environ.get(NDK_ENV)
        if not ndk_cc:
            raise RuntimeError(f"android-arm64 needs the Android NDK: set {NDK_ENV} to its aarch64 clang "
                               "(e.g. .../toolchains/llvm/prebuilt/linux-x86_64/bin/aarch64-linux-android24-clang)")
        if shutil.which(ndk_cc) is None:
            raise RuntimeError(f"{NDK_ENV}={ndk_cc} is not an executable compiler")
        from tvm.support import ndk
        return ndk.create_shared
    raise ValueError(f"unknown target {name!r}")


def check_elf_machine(path: Path, machine: int) -> None:
    """Raises RuntimeError unless `path` is an ELF shared object for `machine` (e.g. arm64)."""
    header = Path(path).read_bytes()[:20]
    if header[:4] != b"\x7fELF":
        raise RuntimeError(f"{path} is not an ELF file")
    found = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    if found != machine:
        raise RuntimeError(f"{path} is ELF machine {found}, expected {machine}")
