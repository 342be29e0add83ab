"""Pushing a bundle to a device and checking, on the far side, that every byte arrived.

The manifest lists every file with its sha256 (ARCHITECTURE.md); the local copy is checked
before anything is sent, and the device's copy afterwards through the transport (`sha256sum`
in the device's shell, or the RPC server's copy hashed here).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from android_harness.transports import Transport
from device_runtime.manifest import MANIFEST_NAME, Manifest, mismatched_files, read_manifest, sha256_file


def read_intact_manifest(bundle: Path) -> Manifest:
    """The bundle's manifest, after checking every local file against it (ValueError names the bad ones)."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise FileNotFoundError(f"bundle directory {bundle} does not exist")
    manifest = read_manifest(bundle)
    bad = mismatched_files(bundle, manifest)
    if bad:
        raise ValueError(f"bundle {bundle} is damaged here already (missing, extra or changed): {', '.join(bad)}")
    return manifest


def remote_path(dest: str, name: str) -> str:
    """Where a bundle file lands on the device: dest/name in POSIX form ('' dest: just name)."""
    return str(PurePosixPath(dest) / name) if dest else name


def push_bundle(bundle: Path, transport: Transport, dest: str, *, names: Sequence[str] | None = None,
                verify: bool = True) -> dict[str, str]:
    """Pushes manifest.json and every file it lists (or only `names`) of an intact bundle to dest.

    Returns {remote path: sha256}; with verify, each was recomputed on the device and matched.
    """
    bundle = Path(bundle)
    manifest = read_intact_manifest(bundle)
    expected = {MANIFEST_NAME: sha256_file(bundle / MANIFEST_NAME), **manifest.files}
    names = list(expected) if names is None else list(names)
    unknown = [n for n in names if n not in expected]
    if unknown:
        raise ValueError(f"bundle {bundle} has no file(s) {', '.join(unknown)}")
    pushed = {remote_path(dest, n): expected[n] for n in names}
    for name in tqdm(names, desc=f"push {transport.name}", unit="file", disable=None):
        transport.push(bundle / name, remote_path(dest, name))
    if verify:
        actual = transport.sha256(list(pushed))
        wrong = [p for p, digest in pushed.items() if actual.get(p) != digest]
        if wrong:
            raise RuntimeError(f"sha256 mismatch on the device ({transport.name}) for {', '.join(wrong)}: "
                               "the copy is damaged, push again")
    return pushed
