"""Bundle integrity: every way a bundle can be damaged or be the wrong one is refused by the device's
own check (`verify_bundle`, which `load_bundle` runs first) with one clear line.

Damage: one byte inverted at random offsets of every file (the manifest included), each file
truncated, removed, or joined by an extra one. The wrong bundle, with a consistent manifest (its
fingerprint recomputed, so the check under test is the one that refuses it): another
architecture or OS, another format version, CPU features this CPU lacks, and file names that
escape the bundle.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from device_runtime.bundle import CPU_FEATURE_FLAGS, cpu_flags, triple_runs_here, verify_bundle
from device_runtime.manifest import MANIFEST_NAME, manifest_fingerprint

Damage = Callable[[Path], None]


def _flip(name: str, offset: int) -> Damage:
    def damage(root: Path) -> None:
        data = bytearray((root / name).read_bytes())
        data[offset % len(data)] ^= 0xFF
        (root / name).write_bytes(bytes(data))
    return damage


def _truncate(name: str) -> Damage:
    return lambda root: (root / name).write_bytes((root / name).read_bytes()[:(root / name).stat().st_size // 2])


def _manifest_edit(change: Callable[[dict[str, Any]], None]) -> Damage:
    """A manifest changed as a compiler would write it (fingerprint recomputed)."""
    def damage(root: Path) -> None:
        data = json.loads((root / MANIFEST_NAME).read_text())
        change(data)
        data["fingerprint"] = manifest_fingerprint(data)
        (root / MANIFEST_NAME).write_text(json.dumps(data))
    return damage


def _cases(root: Path, flips_per_file: int, rng: np.random.Generator) -> Iterator[tuple[str, Damage]]:
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    for name in files:
        size = (root / name).stat().st_size
        for offset in rng.integers(0, max(size, 1), size=flips_per_file):
            yield f"{name}: byte {int(offset)} inverted", _flip(name, int(offset))
        yield f"{name}: truncated", _truncate(name)
        yield f"{name}: removed", lambda r, n=name: (r / n).unlink()
    yield "an extra file", lambda r: (r / "extra.bin").write_bytes(b"\0")
    triples = ("aarch64-linux-android", "aarch64-linux-gnu", "riscv64-linux-gnu", "x86_64-linux-android",
               "x86_64-linux-gnu")
    for triple in [t for t in triples if not triple_runs_here(t)]:
        yield f"target {triple}", _manifest_edit(lambda d, t=triple: d["target"].update(triple=t))
    for version in (1, 2, 4):
        yield f"format_version {version}", _manifest_edit(lambda d, v=version: d.update(format_version=v))
    flags = cpu_flags() or set()
    lacking = [f for f, flag in CPU_FEATURE_FLAGS.items() if flag not in flags][:3]
    for feature in lacking:
        yield f"needs CPU feature {feature}", _manifest_edit(lambda d, f=feature: d["target"]["features"].append(f))
    for outside in ("/etc/passwd", "../outside.so", "sub/../../outside.so"):
        yield f"a module at {outside}", _manifest_edit(lambda d, o=outside: d["modules"].update(forward=o))
        yield f"labels at {outside}", _manifest_edit(lambda d, o=outside: d.update(labels_file=o))
        yield f"a hashed file at {outside}", _manifest_edit(lambda d, o=outside: d["files"].update({o: "0" * 64}))


def corruptions(bundle: Path, work: Path, *, flips_per_file: int = 3, seed: int = 0) -> dict[str, Any]:
    """Figures: cases tried, refused (a ValueError or FileNotFoundError of one line), and those not."""
    copy = Path(work) / "bundle"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(bundle, copy)
    verify_bundle(copy)  # the control: an intact copy passes, so a refusal below is the damage's
    tried, refused, missed = 0, 0, []
    for label, damage in _cases(copy, flips_per_file, np.random.default_rng(seed)):
        backup = Path(work) / "backup"
        shutil.rmtree(backup, ignore_errors=True)
        shutil.copytree(copy, backup)
        damage(copy)
        tried += 1
        try:
            verify_bundle(copy)
            missed.append(f"{label}: accepted")
        except (ValueError, FileNotFoundError) as err:
            one_line = "\n" not in str(err) and str(err)
            refused += bool(one_line)
            if not one_line:
                missed.append(f"{label}: refused without a one-line reason")
        shutil.rmtree(copy)
        backup.rename(copy)
    return {"corruptions_tried": tried, "corruptions_refused": refused, "corruptions_missed": missed}
