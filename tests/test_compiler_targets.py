"""compiler/targets.py: target specs, the NDK requirement, the ELF machine check."""
from __future__ import annotations

import pytest
from tvm.target import codegen

from compiler.targets import ELF_MACHINE_AARCH64, NDK_ENV, check_elf_machine, linker_for, resolve_target


def test_host_target_uses_the_detected_cpu():
    spec = resolve_target("host")
    assert spec.mcpu != "generic" and codegen.llvm_is_valid_cpu(spec.mcpu, spec.triple)
    assert spec.tvm_target().attrs["mcpu"] == spec.mcpu
    assert spec.manifest_entry() == {"name": "host", "triple": spec.triple, "mcpu": spec.mcpu}


def test_arm64_targets():
    assert resolve_target("linux-arm64").triple == "aarch64-linux-gnu"
    assert resolve_target("android-arm64").tvm_target().attrs["mtriple"] == "aarch64-linux-android"
    assert resolve_target("linux-arm64").elf_machine() == ELF_MACHINE_AARCH64


def test_unknown_target_and_missing_ndk_are_named(monkeypatch):
    with pytest.raises(ValueError, match="ios"):
        resolve_target("ios")
    monkeypatch.delenv(NDK_ENV, raising=False)
    with pytest.raises(RuntimeError, match=NDK_ENV):
        linker_for("android-arm64")
    monkeypatch.setenv(NDK_ENV, "/nonexistent/clang")
    with pytest.raises(RuntimeError, match="not an executable"):
        linker_for("android-arm64")


def test_elf_machine_check(tmp_path):
    host_so = next(p for p in __import__("pathlib").Path(codegen.__file__).parents[1].rglob("libtvm*.so"))
    with pytest.raises(RuntimeError, match="expected 183"):
        check_elf_machine(host_so, ELF_MACHINE_AARCH64)
    (tmp_path / "x.so").write_text("not elf")
    with pytest.raises(RuntimeError, match="not an ELF"):
        check_elf_machine(tmp_path / "x.so", ELF_MACHINE_AARCH64)
