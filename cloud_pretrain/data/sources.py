"""The per-user data of a task: built in (Shakespeare speakers, font writers) or LEAF files."""
from __future__ import annotations

import os
import pathlib

from cloud_pretrain.data.users import User

TASKS = ("nwp", "image")


def task_users(task: str, leaf: str | os.PathLike | None = None) -> list[User]:
    """Every user of `task` (`nwp` or `image`), from the LEAF data at `leaf` when given."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if leaf is not None:
        from cloud_pretrain.data.leaf import leaf_users

        return leaf_users(leaf, task)
    if task == "nwp":
        from cloud_pretrain.data.shakespeare import shakespeare_users

        return shakespeare_users()
    from cloud_pretrain.data.images import handwriting_users

    return handwriting_users()


def installed_sources() -> dict[str, pathlib.Path]:
    """Where each offline source lives; an error names the first one missing and its package."""
    import shutil

    from cloud_pretrain.data.paths import debian_data, require_path
    from cloud_pretrain.data.shakespeare import plays_dir
    from cloud_pretrain.data.text import FORTUNES_DIR, WORDNET_DIR

    return {"WordNet": debian_data(WORDNET_DIR, "wordnet-base", "WordNet data"),
            "fortunes": debian_data(FORTUNES_DIR, "fortunes", "fortune files"),
            "King James Bible": require_path(shutil.which("bible") or "/usr/bin/bible", "the King James Bible reader",
                                             "install the Debian package bible-kjv (make system-deps)"),
            "Shakespeare plays": plays_dir()}
