"""Loading a compiled bundle on the device, after checking it was built for this device.

A bundle is refused (ValueError naming the reason) when any file's sha256 differs from the
manifest, the format version is not this runtime's, the target triple is not this device's
architecture and OS, or its code uses CPU features this CPU lacks (refused here, not by SIGILL
mid-inference). Parameters are turned into TVM tensors once, here, and stay on the device.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from device_runtime.files import read_npz
from device_runtime.manifest import Manifest, mismatched_files, read_manifest
from device_runtime.tokenizer import Tokenizer, vocab_sha256

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}
CPUINFO = Path("/proc/cpuinfo")
# LLVM feature -> the Linux /proc/cpuinfo flag of the same instructions: the features a bundle
# records (manifest target "features") and the device checks. x86 first, then arm64.
CPU_FEATURE_FLAGS = {
    "cmov": "cmov", "cx16": "cx16", "sse": "sse", "sse2": "sse2", "sse3": "pni", "ssse3": "ssse3",
    "sse4.1": "sse4_1", "sse4.2": "sse4_2", "sse4a": "sse4a", "popcnt": "popcnt", "lzcnt": "abm",
    "bmi": "bmi1", "bmi2": "bmi2", "adx": "adx", "movbe": "movbe", "f16c": "f16c", "fma": "fma",
    "fma4": "fma4", "xop": "xop", "avx": "avx", "avx2": "avx2", "avxvnni": "avx_vnni",
    "avx512f": "avx512f", "avx512cd": "avx512cd", "avx512bw": "avx512bw", "avx512dq": "avx512dq",
    "avx512vl": "avx512vl", "avx512ifma": "avx512ifma", "avx512vbmi": "avx512vbmi",
    "avx512vbmi2": "avx512_vbmi2", "avx512vnni": "avx512_vnni", "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
    "aes": "aes", "pclmul": "pclmulqdq", "sha": "sha_ni", "gfni": "gfni", "vaes": "vaes",
    "vpclmulqdq": "vpclmulqdq", "amx-tile": "amx_tile", "amx-int8": "amx_int8", "amx-bf16": "amx_bf16",
    "fp-armv8": "fp", "neon": "asimd", "crc": "crc32", "lse": "atomics", "rdm": "asimdrdm",
    "fullfp16": "fphp", "fp16fml": "asimdfhm", "dotprod": "asimddp", "rcpc": "lrcpc", "jsconv": "jscvt",
    "complxnum": "fcma", "sha2": "sha2", "sha3": "sha3", "sm4": "sm4", "i8mm": "i8mm", "bf16": "bf16",
    "sve": "sve", "sve2": "sve2",
}


def _normalise_arch(arch: str) -> str:
    arch = arch.lower()
    return _ARCH_ALIASES.get(arch, arch)


def is_android() -> bool:
    """True on an Android device (its userland has /system/build.prop and sets ANDROID_ROOT)."""
    return "ANDROID_ROOT" in os.environ or Path("/system/build.prop").is_file()


def device_triple() -> str:
    """This device's target triple as `arch-os` (e.g. `aarch64-linux-android`, `x86_64-linux-gnu`)."""
    return f"{_normalise_arch(platform.machine())}-linux-{'android' if is_android() else 'gnu'}"


def triple_runs_here(triple: str) -> bool:
    """Whether code built for `triple` runs on this device: same architecture, Android or not."""
    parts = triple.lower().split("-")
    return _normalise_arch(parts[0]) == _normalise_arch(platform.machine()) and ("android" in parts) == is_android()


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str] | None:
    """This CPU's feature flags as Linux names them (`flags` on x86, `Features` on arm64), common
    to every core (big.LITTLE cores may differ); None when the kernel does not say."""
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        return None
    cores = [set(value.split()) for key, _, value in (line.partition(":") for line in lines)
             if key.strip() in ("flags", "Features")]
    return set.intersection(*cores) if cores else None


def missing_cpu_features(features: list[str], flags: set[str] | None) -> list[str]:
    """The bundle's CPU features (LLVM names) that `flags` lacks; none when the flags are unknown
    or a feature has no known flag (nothing can be said, so nothing is refused)."""
    if flags is None:
        return []
    return [f for f in features if f in CPU_FEATURE_FLAGS and CPU_FEATURE_FLAGS[f] not in flags]


def read_labels(path: Path) -> list[str]:
    """The vocabulary or class names, one a line (line i is id i)."""
    if not path.is_file():
        raise FileNotFoundError(f"bundle label file {path} is missing")
    text = path.read_text(encoding="utf-8")
    return text.removesuffix("\n").split("\n") if text else []


def verify_bundle(root: Path) -> Manifest:
    """The manifest of an intact bundle built for this device; ValueError names what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"bundle directory {root} does not exist")
    manifest = read_manifest(root)  # checks format_version and the fields
    bad = mismatched_files(root, manifest)
    if bad:
        raise ValueError(f"bundle {root}: sha256 mismatch (missing, extra or changed file): {', '.join(bad)}")
    triple = manifest.target["triple"]
    if not triple_runs_here(triple):
        raise ValueError(f"bundle {root} targets {triple} ({manifest.target['name']}); this device is {device_triple()}")
    missing = missing_cpu_features(manifest.target.get("features", []), cpu_flags())
    if missing:
        raise ValueError(f"bundle {root} ({manifest.target.get('mcpu')}): bundle code needs {', '.join(missing)}, "
                         f"this CPU lacks {'it' if len(missing) == 1 else 'them'}")
    return manifest


def load_param_arrays(path: Path, names: list[str]) -> list[np.ndarray]:
    """The arrays `names` of a bundle's .npz, in that order; an error names any that is missing."""
    arrays = read_npz(path, "bundle parameter file")
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ValueError(f"{Path(path).name} lacks the manifest's arrays: {', '.join(missing)}")
    return [np.require(arrays[n], requirements="C") for n in names]  # keeps 0-d arrays 0-d


@dataclasses.dataclass
class Bundle:
    """A verified bundle: manifest, its modules (loaded when first called), initial parameters as TVM tensors."""

    root: Path
    manifest: Manifest
    frozen: list[Any]
    trainable: list[Any]
    optimizer_state: list[Any]
    labels: list[str]
    _vms: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def vm(self, key: str) -> Any:
        """The VM of module `key` ("forward", "update", ...), loaded on first use: a device that
        only infers never maps update.so, and loss.so (verification's) is never loaded."""
        if key not in self._vms:
            import tvm
            from tvm.runtime.vm import VirtualMachine

            self._vms[key] = VirtualMachine(tvm.runtime.load_module(str(self.root / self.manifest.modules[key])),
                                            tvm.cpu())
        return self._vms[key]

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        """The bundle's tokenizer; ValueError for a model whose input is not text."""
        entry = self.manifest.tokenizer
        if entry is None:
            raise ValueError(f"bundle {self.root} carries no tokenizer: its model does not read text")
        vocab = read_labels(self.root / entry["vocab_file"])
        if len(vocab) != self.manifest.token_range:
            raise ValueError(f"{entry['vocab_file']} has {len(vocab)} tokens; the model reads ids below "
                             f"{self.manifest.token_range}")
        digest = vocab_sha256(vocab)
        if entry.get("vocab_sha256", digest) != digest:
            raise ValueError(f"{entry['vocab_file']} has sha256 {digest}; the manifest's tokenizer says "
                             f"{entry['vocab_sha256']}")
        return Tokenizer.from_manifest(entry, vocab)

    @functools.cached_property
    def synonyms(self) -> dict[str, list[str]] | None:
        """The text augmentation's synonym table, when the bundle carries one."""
        if self.manifest.synonyms_file is None:
            return None
        from augment.synonyms import load_synonym_table

        return load_synonym_table(self.root / self.manifest.synonyms_file)


def load_bundle(root: str | Path) -> Bundle:
    """Verifies and loads a bundle directory (see ARCHITECTURE.md, "The artifact bundle")."""
    import tvm

    root = Path(root)
    manifest = verify_bundle(root)
    device = tvm.cpu()
    params = manifest.params

    def tensors(file: str, names: list[str]) -> list[Any]:
        return [tvm.runtime.tensor(a, device) for a in load_param_arrays(root / file, names)]

    labels = read_labels(root / manifest.labels_file)
    if len(labels) != manifest.num_classes:
        raise ValueError(f"{manifest.labels_file} has {len(labels)} entries; the manifest says num_classes={manifest.num_classes}")
    return Bundle(root, manifest, tensors("frozen.npz", params["frozen"]),
                  tensors("trainable.npz", params["trainable"]),
                  tensors("optimizer.npz", params["optimizer_state"]), labels)
