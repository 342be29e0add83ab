"""LEAF JSON (Shakespeare, Sent140, FEMNIST) for those who have the real files.

A LEAF file is `{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}`.
A path is one such file, a directory of them, or a directory with `train/` and `test/` ones
(LEAF's own split); without that split each user's samples are split in order. The users come
back in the containers the built-in data uses, so everything downstream takes either:
- Shakespeare (`x`: 80-character windows, `y`: the next character) -> `TextUser`, the text
  rebuilt from consecutive windows;
- Sent140 (`x`: `[id, date, query, user, text]`) -> `TextUser`, one line per tweet;
- FEMNIST (`x`: 784 floats, 1.0 for paper, 0.0 for ink) -> `ImageUser`, uint8 ink bright.
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from cloud_pretrain.data.paths import require_path
from cloud_pretrain.data.users import TEST_FRACTION, ImageUser, TextUser, User, split_in_order

KINDS = {"nwp": ("shakespeare", "sent140"), "image": ("femnist",)}
SHAKESPEARE_WINDOW = 80
_PIXELS = 28 * 28

Samples = dict[str, tuple[list, list]]  # user -> (x, y)


def read_leaf_json(path: str | os.PathLike) -> Samples:
    """One LEAF file's samples per user, checked against its `users` and `num_samples`."""
    path = require_path(path, "LEAF JSON file", "give a LEAF data file or directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
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
    for user, count in zip(data["users"], data["num_samples"]):
        record = data["user_data"].get(user)
        if not isinstance(record, dict) or not {"x", "y"} <= record.keys():
            raise ValueError(f"{path}: user {user!r} has no user_data with x and y")
        if not len(record["x"]) == len(record["y"]) == count:
            raise ValueError(f"{path}: user {user!r} has {len(record['x'])} x, {len(record['y'])} y, "
                             f"num_samples {count}")
        samples[str(user)] = (list(record["x"]), list(record["y"]))
    return samples


def read_leaf_files(paths: Sequence[pathlib.Path]) -> Samples:
    """Samples of several LEAF files, merged per user in file order."""
    merged: Samples = {}
    for path in paths:
        for user, (x, y) in read_leaf_json(path).items():
            xs, ys = merged.setdefault(user, ([], []))
            xs.extend(x)
            ys.extend(y)
    return merged


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
    """The text behind LEAF's sliding windows: consecutive windows extend one stretch of text."""
    stretches: list[str] = []
    for window, following in zip(x, y):
        if stretches and stretches[-1][-len(window):] == window:
            stretches[-1] += following
        else:
            stretches.append(window + following)
    return stretches


def text_lines(kind: str, x: list, y: list) -> list[str]:
    """A text user's lines: Shakespeare's rebuilt stretches, or Sent140's tweets."""
    return shakespeare_text(x, y) if kind == "shakespeare" else [sample[4] for sample in x]


def femnist_images(x: list, where: str) -> np.ndarray:
    """LEAF FEMNIST floats (1.0 paper) as uint8 [n, 28, 28] with bright ink, like the rendered writers."""
    try:
        pixels = np.asarray(x, dtype=np.float64).reshape(-1, 28, 28)
    except ValueError:
        raise ValueError(f"{where}: every FEMNIST sample must be 784 numbers") from None
    if pixels.size and (pixels.min() < 0 or pixels.max() > 1):
        raise ValueError(f"{where}: FEMNIST pixels must lie in [0, 1]")
    return np.rint((1.0 - pixels) * 255).astype(np.uint8)


def femnist_labels(y: list, where: str) -> np.ndarray:
    """FEMNIST class ids, checked to be among the 62 classes."""
    labels = np.asarray(y, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 61):
        raise ValueError(f"{where}: FEMNIST labels must be 0..61")
    return labels


def leaf_splits(path: pathlib.Path) -> tuple[Samples, Samples | None]:
    """(train, test) samples of a LEAF path; test is None when the path has no `test/` split."""
    path = require_path(path, "LEAF data", "give a LEAF JSON file or a directory of them")
    if path.is_file():
        return read_leaf_json(path), None
    if (path / "train").is_dir() and (path / "test").is_dir():
        return tuple(read_leaf_files(_json_files(path / part)) for part in ("train", "test"))
    return read_leaf_files(_json_files(path)), None


def _json_files(directory: pathlib.Path) -> list[pathlib.Path]:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no LEAF .json files in {directory}")
    return files


def leaf_users(path: str | os.PathLike, task: str, test_fraction: float = TEST_FRACTION) -> list[User]:
    """The users of LEAF data at `path` as `TextUser` (task `nwp`) or `ImageUser` (task `image`)."""
    if task not in KINDS:
        raise ValueError(f"task must be one of {sorted(KINDS)}, got {task!r}")
    path = pathlib.Path(path)
    train, test = leaf_splits(path)
    users = []
    names = list(train) + [user for user in test or {} if user not in train]
    for user in names:
        x, y = train.get(user, ([], []))
        test_x, test_y = test.get(user, ([], [])) if test is not None else ([], [])
        if not x and not test_x:
            continue
        where = f"{path} user {user!r}"
        kind = sample_kind((x or test_x)[0], where)
        if kind not in KINDS[task]:
            raise ValueError(f"{path} holds {kind} data, which is not for task {task!r} "
                             f"(that takes {' or '.join(KINDS[task])})")
        if kind == "femnist":
            images, labels = femnist_images(x + test_x, where), femnist_labels(y + test_y, where)
            if test is None:
                train_part, test_part = split_in_order(np.arange(len(labels)), test_fraction)
            else:
                train_part, test_part = np.arange(len(x)), np.arange(len(x), len(labels))
            users.append(ImageUser(user, images[train_part], labels[train_part], images[test_part],
                                   labels[test_part]))
        else:
            lines = text_lines(kind, x, y)
            test_lines = text_lines(kind, test_x, test_y) if test is not None else []
            if test is None:
                lines, test_lines = split_in_order(lines, test_fraction)
            users.append(TextUser(user, tuple(lines), tuple(test_lines)))
    if not users:
        raise ValueError(f"{path}: no LEAF user has any sample")
    return users


def write_leaf_json(users: Sequence[User], path: str | os.PathLike, part: str = "train") -> pathlib.Path:
    """The `train` or `test` part of `users` as one LEAF file: FEMNIST for `ImageUser`s,
    Shakespeare (80-character windows; shorter lines give none) for `TextUser`s."""
    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    user_data = {}
    for user in users:
        if isinstance(user, ImageUser):
            images, labels = (user.train_x, user.train_y) if part == "train" else (user.test_x, user.test_y)
            x = (1.0 - images.reshape(len(images), -1) / 255.0).tolist()
            y = labels.tolist()
        else:
            x, y = [], []
            for line in getattr(user, part):
                for end in range(SHAKESPEARE_WINDOW, len(line)):
                    x.append(line[end - SHAKESPEARE_WINDOW:end])
                    y.append(line[end])
        user_data[user.id] = {"x": x, "y": y}
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"users": list(user_data), "num_samples": [len(d["y"]) for d in user_data.values()],
                                "user_data": user_data}), encoding="utf-8")
    return path
