"""compiler/targets.py: target specs, the NDK requirement, the ELF machine check."""
from __future__ import annotations

import platform

import pytest
from tvm.target import codegen

from compiler.targets import (ELF_MACHINE_AARCH64, NDK_ENV, TargetSpec, check_elf_machine, linker_for,
                              resolve_target)
from device_runtime.bundle import CPU_FEATURE_FLAGS, cpu_flags, missing_cpu_features


def test_host_target_uses_the_detected_cpu():
    spec = resolve_target("host")
    assert spec.mcpu != "generic" and codegen.llvm_is_valid_cpu(spec.mcpu, spec.triple)
    assert spec.tvm_target().attrs["mcpu"] == spec.mcpu
    assert spec.manifest_entry() == {"name": "host", "triple": spec.triple, "mcpu": spec.mcpu,
                                     "features": spec.cpu_features()}


def test_host_target_records_the_cpu_features_its_code_may_use():
    """LLVM's features of the host mcpu, only those the device can check, all present on this CPU."""
    features = resolve_target("host").cpu_features()
    assert features == sorted(features) and set(features) <= set(CPU_FEATURE_FLAGS)
    assert set(features) <= set(codegen.llvm_get_cpu_features(resolve_target("host").tvm_target()))
    if platform.machine() == "x86_64":
        assert {"sse", "sse2"} <= set(features)
    assert missing_cpu_features(features, cpu_flags()) == []
    generic = TargetSpec("host", resolve_target("host").triple, "generic")
    assert set(generic.cpu_features()) < set(features)  # a generic CPU promises less than this one


def test_arm64_targets():
    assert resolve_target("linux-arm64").triple == "aarch64-linux-gnu"
    assert resolve_target("android-arm64").tvm_target().attrs["mtriple"] == "aarch64-linux-android"
    assert resolve_target("linux-arm64").elf_machine() == ELF_MACHINE_AARCH64
    for name in ("linux-arm64", "android-arm64"):  # generic +neon: what every arm64 Linux kernel reports
        assert resolve_target(name).manifest_entry()["features"] == ["fp-armv8", "neon"]


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


def test_android_bundle_links_through_the_ndk_compiler_and_the_host_refuses_it(tmp_path, monkeypatch):
    """No NDK can be installed here, so TVM_NDK_CC names a FAKE NDK: a script that logs its
    call and links with Debian's arm64 gcc. What is real: TVM's NDK path, the arm64 objects,
    the manifest's Android triple, and the device's refusal of a bundle for another target."""
    import shutil

    from compiler import compile_bundle
    from conftest import TINY_TRAIN_BATCH, tiny_nwp_inputs, tiny_nwp_model
    from device_runtime.bundle import verify_bundle
    from device_runtime.manifest import read_manifest

    calls = tmp_path / "fake-ndk-calls.log"
    fake_ndk = tmp_path / "fake-ndk-aarch64-linux-android24-clang"
    fake_ndk.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {shutil.which("aarch64-linux-gnu-gcc")} "$@"\n')
    fake_ndk.chmod(0o755)
    monkeypatch.setenv(NDK_ENV, str(fake_ndk))
    out = compile_bundle(tiny_nwp_model(), out=tmp_path / "android", **tiny_nwp_inputs((4,)),
                         target="android-arm64", train_batch=TINY_TRAIN_BATCH)
    manifest = read_manifest(out)
    assert manifest.target["triple"] == "aarch64-linux-android" and manifest.target["features"] == ["fp-armv8", "neon"]
    assert len(calls.read_text().splitlines()) == len(manifest.modules)  # every module linked by the NDK
    for module in manifest.modules.values():
        check_elf_machine(out / module, ELF_MACHINE_AARCH64)
    with pytest.raises(ValueError, match="aarch64-linux-android"):
        verify_bundle(out)
