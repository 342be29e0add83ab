"""The bundle's `manifest.json`: what the compiler promises and the device checks.

Shared by both sides of the contract (ARCHITECTURE.md, "The artifact bundle"): the compiler
writes it, `device_runtime/bundle.py` reads it. No torch, so the device can use it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from device_runtime.files import read_json_object

FORMAT_VERSION = 3  # 3: the manifest carries its fingerprint
MANIFEST_NAME = "manifest.json"
AUGMENTATIONS = ("images", "text")
OPTIMIZERS = ("sgd", "momentum", "adam")
TARGET_NAMES = ("host", "android-arm64", "linux-arm64")
MODULE_KEYS = ("forward", "loss", "update")


@dataclasses.dataclass
class Manifest:
    """The fields of `manifest.json`, one attribute each, in the order they are written."""

    model: str  # a name for people (the model class or recipe); nothing branches on it
    target: dict[str, Any]  # name, triple, mcpu, features (LLVM names the code may use; absent: unknown)
    tvm_version: str
    cut_layer: str
    input: dict[str, Any]  # name, dtype, shape ([null, ...]: null is free), token_range for ids
    cut: dict[str, Any]
    num_classes: int
    train_batch: int
    optimizer: dict[str, Any]
    forward_functions: list[dict[str, Any]]
    params: dict[str, list[str]]
    modules: dict[str, str]
    labels_file: str
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    tokenizer: dict[str, Any] | None = None  # vocab_file, vocab_sha256, pattern, lowercase, pad, unk
    augmentation: str | None = None  # "images", "text" or None
    synonyms_file: str | None = None  # the text augmentation's synonym table
    seed: int = 0  # of the verification inputs
    verified_on: str | None = None  # where the shipped modules were checked against the reference; None: nowhere
    fingerprint: str = ""  # sha256 of everything else in the manifest, files' sha256 included: the bundle's identity
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_fields(self)

    def to_json(self) -> dict[str, Any]:
        """The JSON object, format version first."""
        data = dataclasses.asdict(self)
        return {"format_version": data.pop("format_version"), **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"manifest format_version is {version!r}; this runtime reads {FORMAT_VERSION}")
        if data.get("fingerprint") != manifest_fingerprint(data):
            raise ValueError("manifest fingerprint does not match its content: the manifest was changed after "
                             "the compiler wrote it")
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

    def referenced_files(self) -> list[str]:
        """Every file the manifest points at (modules, labels, tokenizer, synonyms)."""
        names = [*self.modules.values(), self.labels_file]
        names += [self.tokenizer["vocab_file"]] if self.tokenizer else []
        return names + ([self.synonyms_file] if self.synonyms_file else [])

    @property
    def token_range(self) -> int | None:
        """Token ids lie in [0, token_range); None for inputs that are not ids."""
        return self.input.get("token_range")

    @property
    def next_token(self) -> bool:
        """Whether the classes are the tokenizer's vocabulary (a next-word model)."""
        return self.tokenizer is not None and self.tokenizer["vocab_file"] == self.labels_file


# The JSON type of every field (None: null allowed): checked before any value is used, so a
# manifest of the wrong shape is one clear error, not a TypeError deep in the runtime.
FIELD_TYPES: dict[str, tuple[type | None, ...]] = {
    "model": (str,), "target": (dict,), "tvm_version": (str,), "cut_layer": (str,), "input": (dict,),
    "cut": (dict,), "num_classes": (int,), "train_batch": (int,), "optimizer": (dict,),
    "forward_functions": (list,), "params": (dict,), "modules": (dict,), "labels_file": (str,), "files": (dict,),
    "tokenizer": (dict, None), "augmentation": (str, None), "synonyms_file": (str, None), "seed": (int,),
    "verified_on": (str, None),
    "fingerprint": (str,), "format_version": (int,),
}


def _is(value: Any, types: tuple[type | None, ...]) -> bool:
    if value is None:
        return None in types
    if isinstance(value, bool):  # JSON true is no number
        return bool in types
    return isinstance(value, tuple(t for t in types if t is not None))


def _check_types(m: Manifest) -> None:
    """ValueError naming the first field (or entry) whose JSON type is wrong."""
    for name, types in FIELD_TYPES.items():
        value = getattr(m, name)
        if not _is(value, types):
            allowed = " or ".join("null" if t is None else t.__name__ for t in types)
            raise ValueError(f"manifest {name} must be {allowed}, got {json.dumps(value)[:60]}")
    entries = [("modules", m.modules.values(), (str,)), ("files", [*m.files, *m.files.values()], (str,)),
               ("params", m.params.values(), (list,)), ("forward_functions", m.forward_functions, (dict,)),
               ("input shape", m.input.get("shape", []) or [], (int, None)),
               ("cut shape", m.cut.get("shape", []) or [], (int, None))]
    entries += [(f"params {k}", v, (str,)) for k, v in m.params.items() if isinstance(v, list)]
    for f in m.forward_functions:
        entries += [("forward_functions entry", [f.get("name")], (str,)),
                    ("forward_functions batch", [f.get("batch")], (int,)),
                    ("forward_functions input_shape", [f.get("input_shape")], (list,)),
                    ("forward_functions input_shape", f.get("input_shape") or [], (int,))] if isinstance(f, dict) else []
    entries += [("target name and triple", [m.target.get("name"), m.target.get("triple")], (str,)),
                ("input name and dtype", [m.input.get("name"), m.input.get("dtype")], (str,)),
                ("input shape", [m.input.get("shape")], (list,)), ("cut shape", [m.cut.get("shape")], (list,)),
                ("cut dtype", [m.cut.get("dtype")], (str,)), ("optimizer lr", [m.optimizer.get("lr")], (int, float))]
    for where, values, types in entries:
        for value in values:
            if not _is(value, types):
                raise ValueError(f"manifest {where} has an entry of the wrong type: {json.dumps(value)[:60]}")


def check_fields(m: Manifest) -> None:
    """Raises ValueError naming the first field whose value breaks the contract."""
    _check_types(m)
    if m.format_version != FORMAT_VERSION:
        raise ValueError(f"manifest format_version is {m.format_version!r}; this runtime reads {FORMAT_VERSION}")
    if m.target.get("name") not in TARGET_NAMES or not m.target.get("triple"):
        raise ValueError(f"manifest target {m.target!r} needs a name in {TARGET_NAMES} and a triple")
    features = m.target.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ValueError(f"manifest target features {features!r} must be a list of feature names")
    if m.optimizer.get("name") not in OPTIMIZERS:
        raise ValueError(f"manifest optimizer {m.optimizer!r} needs a name in {OPTIMIZERS}")
    if sorted(m.modules) != sorted(MODULE_KEYS):
        raise ValueError(f"manifest modules {sorted(m.modules)} must be exactly {list(MODULE_KEYS)}")
    if sorted(m.params) != ["frozen", "optimizer_state", "trainable"]:
        raise ValueError(f"manifest params keys {sorted(m.params)} must be frozen, trainable, optimizer_state")
    spec = m.input
    if not isinstance(spec.get("name"), str) or not isinstance(spec.get("shape"), list) or not spec["shape"]:
        raise ValueError(f"manifest input {spec!r} needs a name and a shape [batch, ...]")
    if spec.get("dtype") not in ("float32", "int64", "int32"):
        raise ValueError(f"manifest input dtype {spec.get('dtype')!r} is not float32, int64 or int32")
    is_ids = spec["dtype"].startswith("int")
    if is_ids != isinstance(spec.get("token_range"), int) or (is_ids and spec["token_range"] < 1):
        raise ValueError(f"manifest input {spec['name']!r}: integer ids need a positive token_range, floats none")
    if m.augmentation is not None and m.augmentation not in AUGMENTATIONS:
        raise ValueError(f"manifest augmentation {m.augmentation!r} is not one of {AUGMENTATIONS} or null")
    if m.augmentation == "text" and m.tokenizer is None:
        raise ValueError("manifest augmentation 'text' needs a tokenizer")
    if m.tokenizer is not None and not isinstance(m.tokenizer.get("vocab_file"), str):
        raise ValueError(f"manifest tokenizer {m.tokenizer!r} needs a vocab_file")
    if m.tokenizer is not None and "vocab_sha256" in m.tokenizer and not is_sha256(m.tokenizer["vocab_sha256"]):
        raise ValueError(f"manifest tokenizer vocab_sha256 {m.tokenizer['vocab_sha256']!r} is not a sha256 hex digest")
    if not m.forward_functions:
        raise ValueError("manifest lists no forward_functions")
    if m.train_batch < 1 or m.num_classes < 1:
        raise ValueError(f"manifest train_batch {m.train_batch} and num_classes {m.num_classes} must be >= 1")
    for name in [*m.referenced_files(), *m.files]:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"manifest names file {name!r} outside the bundle")


def is_sha256(value: Any) -> bool:
    """Whether `value` is a sha256 hex digest as this package writes them (64 lower-case hex)."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def sample_input(spec: dict[str, Any], shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A valid input for the manifest's input spec: ids in its token range, or floats in [0, 1)."""
    if spec.get("token_range") is not None:
        return rng.integers(0, spec["token_range"], size=tuple(shape)).astype(spec["dtype"])
    return rng.random(tuple(shape), dtype=np.float32).astype(spec["dtype"], copy=False)


def manifest_fingerprint(data: dict[str, Any]) -> str:
    """sha256 of a manifest's JSON object without its `fingerprint`, keys sorted: it covers every
    field and, through `files`, every byte of the bundle, so one changed byte anywhere is seen."""
    body = {k: v for k, v in data.items() if k != "fingerprint"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
    """Hashes every file under `root` into `manifest.files`, fingerprints the manifest and writes
    `root/manifest.json`."""
    root = Path(root)
    manifest.files = hash_files(root)
    manifest.fingerprint = manifest_fingerprint(manifest.to_json())
    path = root / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return path


def read_manifest(root: Path) -> Manifest:
    """Parses `root/manifest.json`; FileNotFoundError or ValueError name what is wrong."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in bundle directory {root}")
    return Manifest.from_json(read_json_object(path, "bundle manifest"))
