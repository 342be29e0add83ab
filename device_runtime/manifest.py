"""The bundle's `manifest.json`: what the compiler promises and the device checks.

Shared by both sides of the contract (ARCHITECTURE.md, "The artifact bundle"): the compiler
writes it, `device_runtime/bundle.py` reads it. No torch, so the device can use it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from device_runtime.files import read_json_object

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TASKS = ("nwp", "image")
OPTIMIZERS = ("sgd", "momentum", "adam")
TARGET_NAMES = ("host", "android-arm64", "linux-arm64")
MODULE_KEYS = ("forward", "loss", "update")


@dataclasses.dataclass
class Manifest:
    """The fields of `manifest.json`, one attribute each, in the order they are written."""

    task: str
    target: dict[str, str]
    tvm_version: str
    cut_layer: str
    input: dict[str, Any]
    cut: dict[str, Any]
    num_classes: int
    train_batch: int
    optimizer: dict[str, Any]
    forward_functions: list[dict[str, Any]]
    params: dict[str, list[str]]
    modules: dict[str, str]
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    vocab_file: str | None = None
    labels_file: str | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_fields(self)

    def to_json(self) -> dict[str, Any]:
        """The JSON object, without the label-file key that does not apply to the task."""
        data = dataclasses.asdict(self)
        for key in ("vocab_file", "labels_file"):
            if data[key] is None:
                del data[key]
        return {"format_version": data.pop("format_version"), **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"manifest has unknown keys: {', '.join(unknown)}")
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in data and f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
        if missing:
            raise ValueError(f"manifest lacks keys: {', '.join(missing)}")
        return cls(**data)

    @property
    def label_file(self) -> str:
        """`vocab.txt` (nwp) or `labels.txt` (image)."""
        return self.vocab_file if self.task == "nwp" else self.labels_file  # type: ignore[return-value]


def check_fields(m: Manifest) -> None:
    """Raises ValueError naming the first field whose value breaks the contract."""
    if m.format_version != FORMAT_VERSION:
        raise ValueError(f"manifest format_version is {m.format_version!r}; this runtime reads {FORMAT_VERSION}")
    if m.task not in TASKS:
        raise ValueError(f"manifest task {m.task!r} is not one of {TASKS}")
    if m.target.get("name") not in TARGET_NAMES or not m.target.get("triple"):
        raise ValueError(f"manifest target {m.target!r} needs a name in {TARGET_NAMES} and a triple")
    if m.optimizer.get("name") not in OPTIMIZERS:
        raise ValueError(f"manifest optimizer {m.optimizer!r} needs a name in {OPTIMIZERS}")
    if sorted(m.modules) != sorted(MODULE_KEYS):
        raise ValueError(f"manifest modules {sorted(m.modules)} must be exactly {list(MODULE_KEYS)}")
    if sorted(m.params) != ["frozen", "optimizer_state", "trainable"]:
        raise ValueError(f"manifest params keys {sorted(m.params)} must be frozen, trainable, optimizer_state")
    label_key = "vocab_file" if m.task == "nwp" else "labels_file"
    if getattr(m, label_key) is None:
        raise ValueError(f"manifest of task {m.task!r} needs {label_key}")
    if not m.forward_functions:
        raise ValueError("manifest lists no forward_functions")
    if m.train_batch < 1 or m.num_classes < 1:
        raise ValueError(f"manifest train_batch {m.train_batch} and num_classes {m.num_classes} must be >= 1")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (bundles hold large .so and .npz files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_files(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` but the manifest, keyed by POSIX relative path."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).as_posix() != MANIFEST_NAME}


def mismatched_files(root: Path, manifest: Manifest) -> list[str]:
    """Files that are missing, extra, or whose sha256 differs from the manifest (empty: intact)."""
    actual = hash_files(root)
    names = sorted(set(actual) | set(manifest.files))
    return [n for n in names if actual.get(n) != manifest.files.get(n)]


def write_manifest(root: Path, manifest: Manifest) -> Path:
    """Hashes every file under `root` into `manifest.files` and writes `root/manifest.json`."""
    root = Path(root)
    manifest.files = hash_files(root)
    path = root / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return path


def read_manifest(root: Path) -> Manifest:
    """Parses `root/manifest.json`; FileNotFoundError or ValueError name what is wrong."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in bundle directory {root}")
    return Manifest.from_json(read_json_object(path, "bundle manifest"))
