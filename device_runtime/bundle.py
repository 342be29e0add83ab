"""Loading a compiled bundle on the device, after checking it was built for this device.

A bundle is refused (ValueError naming the reason) when any file's sha256 differs from the
manifest, the format version is not this runtime's, or the target triple is not this device's
architecture and OS. Parameters are turned into TVM tensors once, here, and stay on the device.
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
from device_runtime.tokenizer import Tokenizer

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}


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
