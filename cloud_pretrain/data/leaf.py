"""LEAF JSON (Shakespeare, Sent140, FEMNIST) for those who have the real files.

A LEAF file is `{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}`
(Shakespeare's also have `hierarchies`, the plays). A path is one such file, a directory of them,
or a directory with `train/` and `test/` ones (LEAF's own split); without that split each user's
samples are split in order. Files are read one at a time and each user's samples made compact
before the next: full FEMNIST is some 800,000 images, 600 MB as uint8 but tens of GB as the
Python floats of its JSON. A user's samples in several files are joined in file order. The users
come back in the containers the built-in data uses, so everything downstream takes either:
- Shakespeare (`x`: 80-character windows, `y`: the next character; LEAF puts 80 spaces before
  each line and keeps its newline) -> `TextUser`, the lines rebuilt from consecutive windows,
  split on next-word examples without LEAF's split;
- Sent140 (`x`: `[id, date, query, user, text]`) -> `TextUser`, one line per tweet;
- FEMNIST (`x`: 784 floats, LEAF's grey level / 255 of the scan: 1.0 white paper, 0.0 black
  ink) -> `ImageUser`, uint8 with the ink bright (255 - grey level) like the rendered writers.
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from cloud_pretrain.data.paths import require_path
from cloud_pretrain.data.users import (TEST_FRACTION, ImageUser, TextUser, User, split_in_order,
                                       split_on_samples)

KINDS = {"nwp": ("shakespeare", "sent140"), "image": ("femnist",)}
SHAKESPEARE_WINDOW = 80
_PIXELS = 28 * 28

Samples = dict[str, tuple[list, list]]  # user -> (x, y)
Images = tuple[np.ndarray, np.ndarray]  # uint8 [n, 28, 28], int64 [n]
Compact = dict[str, tuple[str, list]]  # user -> (kind, its lines or its Images, one per file)


def read_leaf_json(path: str | os.PathLike) -> Samples:
    """One LEAF file's samples per user, checked against its `users`.

    `num_samples` is not checked against the samples: LEAF's own Shakespeare test files count
    the 79 windows its split leaves out between train and test.
    """
    path = require_path(path, "LEAF JSON file", "give a LEAF data file or directory")
    try:
        with path.open(encoding="utf-8") as file:
            data = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not {"users", "num_samples", "user_data"} <= data.keys():
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: a LEAF file needs the keys users, num_samples, user_data; found {found}")
    if not (isinstance(data["users"], list) and isinstance(data["num_samples"], list)
            and isinstance(data["user_data"], dict)):
        raise ValueError(f"{path}: users and num_samples must be lists and user_data an object")
    if len(data["users"]) != len(data["num_samples"]):
        raise ValueError(f"{path}: {len(data['users'])} users but {len(data['num_samples'])} num_samples")
    samples = {}
    for user in data["users"]:
        record = data["user_data"].get(user)
        if not isinstance(record, dict) or not {"x", "y"} <= record.keys():
            raise ValueError(f"{path}: user {user!r} has no user_data with x and y")
        if len(record["x"]) != len(record["y"]):
            raise ValueError(f"{path}: user {user!r} has {len(record['x'])} x but {len(record['y'])} y")
        samples[str(user)] = (record["x"], record["y"])
    return samples


def sample_kind(x: object, where: str) -> str:
    """`shakespeare`, `sent140` or `femnist`, from the form of one `x`."""
    if isinstance(x, str):
        return "shakespeare"
    if isinstance(x, list) and len(x) == 5 and isinstance(x[4], str):
        return "sent140"
    if isinstance(x, list) and len(x) == _PIXELS and all(isinstance(v, (int, float)) for v in x):
        return "femnist"
    raise ValueError(f"{where}: a sample x that is none of Shakespeare (str), Sent140 ([id, date, query, "
                     f"user, text]) or FEMNIST (784 numbers): {str(x)[:60]}")


def shakespeare_text(x: Sequence[str], y: Sequence[str]) -> list[str]:
    """The lines behind LEAF's sliding windows: consecutive windows extend one stretch of text, and
    a line's padding and newline are stripped. LEAF splits Shakespeare in order (train the first
    windows, test the last), so each part is consecutive windows."""
    stretches: list[str] = []
    for window, following in zip(x, y):
        if stretches and stretches[-1][-len(window):] == window:
            stretches[-1] += following
        else:
            stretches.append(window + following)
    return [line for stretch in stretches if (line := stretch.strip())]


def text_lines(kind: str, x: list, y: list) -> list[str]:
    """A text user's lines: Shakespeare's rebuilt stretches, or Sent140's tweets."""
    return shakespeare_text(x, y) if kind == "shakespeare" else [sample[4] for sample in x]


def femnist_images(x: list, where: str) -> np.ndarray:
    """LEAF FEMNIST floats (1.0 paper) as uint8 [n, 28, 28] with bright ink, like the rendered writers."""
    try:
        pixels = np.asarray(x, dtype=np.float32).reshape(-1, 28, 28)
    except ValueError:
        raise ValueError(f"{where}: every FEMNIST sample must be 784 numbers") from None
    if pixels.size and (pixels.min() < 0 or pixels.max() > 1):
        raise ValueError(f"{where}: FEMNIST pixels must lie in [0, 1]")
    return (255 - np.rint(pixels * 255)).astype(np.uint8)


def femnist_labels(y: list, where: str) -> np.ndarray:
    """FEMNIST class ids, checked to be among the 62 classes."""
    labels = np.asarray(y, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 61):
        raise ValueError(f"{where}: FEMNIST labels must be 0..61")
    return labels


def leaf_files(path: pathlib.Path) -> tuple[list[pathlib.Path], list[pathlib.Path] | None]:
    """(train, test) files of a LEAF path; test is None when the path has no `test/` split."""
    path = require_path(path, "LEAF data", "give a LEAF JSON file or a directory of them")
    if path.is_file():
        return [path], None
    if (path / "train").is_dir() and (path / "test").is_dir():
        return _json_files(path / "train"), _json_files(path / "test")
    return _json_files(path), None


def _json_files(directory: pathlib.Path) -> list[pathlib.Path]:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no LEAF .json files in {directory}")
    return files


def read_compact(files: Sequence[pathlib.Path], task: str) -> Compact:
    """Each user's kind and samples in `files`, made compact file by file (one file's JSON in memory)."""
    users: Compact = {}
    for path in files:
        for user, (x, y) in read_leaf_json(path).items():
            if not x:
                continue
            where = f"{path} user {user!r}"
            kind = sample_kind(x[0], where)
            if kind not in KINDS[task]:
                raise ValueError(f"{path} holds {kind} data, which is not for task {task!r} "
                                 f"(that takes {' or '.join(KINDS[task])})")
            compact = ((femnist_images(x, where), femnist_labels(y, where)) if kind == "femnist"
                       else text_lines(kind, x, y))
            users.setdefault(user, (kind, []))[1].append(compact)
    return users


def _joined(parts: list[Images]) -> Images:
    if not parts:
        return np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64)
    return np.concatenate([images for images, _ in parts]), np.concatenate([labels for _, labels in parts])


def leaf_users(path: str | os.PathLike, task: str, test_fraction: float = TEST_FRACTION) -> list[User]:
    """The users of LEAF data at `path` as `TextUser` (task `nwp`) or `ImageUser` (task `image`)."""
    if task not in KINDS:
        raise ValueError(f"task must be one of {sorted(KINDS)}, got {task!r}")
    train_files, test_files = leaf_files(pathlib.Path(path))
    train = read_compact(train_files, task)
    test = read_compact(test_files, task) if test_files is not None else {}
    users: list[User] = []
    for user in list(train) + [user for user in test if user not in train]:
        kind = (train.get(user) or test[user])[0]
        train_parts, test_parts = train.get(user, (kind, []))[1], test.get(user, (kind, []))[1]
        if kind == "femnist":
            (images, labels), (test_images, test_labels) = _joined(train_parts), _joined(test_parts)
            if test_files is None:
                train_part, test_part = split_in_order(np.arange(len(labels)), test_fraction)
                images, labels, test_images, test_labels = (images[train_part], labels[train_part],
                                                             images[test_part], labels[test_part])
            users.append(ImageUser(user, images, labels, test_images, test_labels))
            continue
        lines = [line for part in train_parts for line in part]
        test_lines = [line for part in test_parts for line in part]
        if test_files is None:
            split = split_on_samples if kind == "shakespeare" else split_in_order
            lines, test_lines = split(lines, test_fraction)
        users.append(TextUser(user, tuple(lines), tuple(test_lines)))
    if not users:
        raise ValueError(f"{path}: no LEAF user has any sample")
    return users


def write_leaf_json(users: Sequence[User], path: str | os.PathLike, part: str = "train") -> pathlib.Path:
    """The `train` or `test` part of `users` as one LEAF file, as LEAF writes it: FEMNIST for
    `ImageUser`s, Shakespeare (80-character windows over each line behind 80 spaces, its newline
    the last target) for `TextUser`s."""
    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    user_data = {}
    for user in users:
        if isinstance(user, ImageUser):
            images, labels = (user.train_x, user.train_y) if part == "train" else (user.test_x, user.test_y)
            x = ((255 - images.reshape(len(images), -1).astype(np.float64)) / 255).tolist()
            y = labels.tolist()
        else:
            x, y = [], []
            for line in getattr(user, part):
                padded = " " * SHAKESPEARE_WINDOW + line + "\n"
                for end in range(SHAKESPEARE_WINDOW, len(padded)):
                    x.append(padded[end - SHAKESPEARE_WINDOW:end])
                    y.append(padded[end])
        user_data[user.id] = {"x": x, "y": y}
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as file:
        json.dump({"users": list(user_data), "num_samples": [len(d["y"]) for d in user_data.values()],
                   "user_data": user_data}, file)
    return path
