"""Per-user data, one container per task, and the paper's selection of users.

A user's data is split in order into train and test, as on a device whose history grows:
the test part is what comes after what the model learns from, never a shuffle of it.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from cloud_pretrain.data.text import count_next_word_examples, tokenize

T = TypeVar("T")
TEST_FRACTION = 0.2
TOP_FRACTION = 0.1
MIN_TEXT_CHARS = 1_000  # the paper's text users: at least this much text
ALL_CLASSES = 62


def split_in_order(items: Sequence[T], test_fraction: float = TEST_FRACTION) -> tuple[Sequence[T], Sequence[T]]:
    """The first items for training, the last `test_fraction` (rounded down) for testing."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    cut = len(items) - math.floor(len(items) * test_fraction)
    return items[:cut], items[cut:]


def split_on_samples(lines: Sequence[str],
                     test_fraction: float = TEST_FRACTION) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Text lines split in order so the test part holds the last `test_fraction` of the next-word
    examples, at least one of two or more (as LEAF splits by sample): a speaker of a line or two
    still has test data, which a split on lines would leave without.

    The line the cut falls in is cut between words: the word there is the last target of the
    train half and the first context of the test half, so no example is lost or in both (unless
    the cut falls in a piece of several words without a space, like `me--O`: those words count
    on both sides).
    """
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    examples = [count_next_word_examples([tokenize(line)]) for line in lines]
    total = sum(examples)
    want = max(1, math.floor(total * test_fraction)) if total >= 2 and test_fraction > 0 else 0
    cut = len(lines)
    while want and examples[cut - 1] <= want:  # whole lines from the end
        cut -= 1
        want -= examples[cut]
    if not want:
        return tuple(lines[:cut]), tuple(lines[cut:])
    head, tail = _cut_line(lines[cut - 1], examples[cut - 1] + 1 - want)
    return (*lines[:cut - 1], head), (tail, *lines[cut:])


def _cut_line(line: str, keep: int) -> tuple[str, str]:
    """`line` up to its `keep`-th word, and from that word on (cut where it has spaces)."""
    pieces = line.split()
    words = list(itertools.accumulate(len(tokenize(piece)) for piece in pieces))
    at = bisect.bisect_left(words, keep)
    return " ".join(pieces[:at + 1]), " ".join(pieces[at:])


@dataclasses.dataclass(frozen=True)
class TextUser:
    """One user's text (lines in the order written) for next-word prediction."""

    id: str
    train: tuple[str, ...]
    test: tuple[str, ...]

    @functools.cached_property
    def _sentences(self) -> dict[str, list[list[str]]]:
        return {part: [tokens for line in getattr(self, part) if (tokens := tokenize(line))]
                for part in ("train", "test")}

    def sentences(self, part: str) -> list[list[str]]:
        """Token lists of the `train` or `test` lines."""
        if part not in self._sentences:
            raise ValueError(f"part must be 'train' or 'test', got {part!r}")
        return self._sentences[part]

    @property
    def chars(self) -> int:
        return sum(len(line) for line in self.train + self.test)

    @property
    def num_samples(self) -> int:
        """Next-word examples in train and test."""
        return count_next_word_examples(self.sentences("train") + self.sentences("test"))

    def labels(self) -> set[str]:
        """The words this user's examples predict."""
        return {word for sentence in self.sentences("train") + self.sentences("test") for word in sentence[1:]}

    def sizes(self) -> dict[str, int]:
        return {"chars": self.chars, "lines": len(self.train) + len(self.test), "examples": self.num_samples,
                "train_lines": len(self.train), "test_lines": len(self.test)}


@dataclasses.dataclass(frozen=True, eq=False)
class ImageUser:
    """One writer's character images, uint8 [n, 28, 28] (ink bright on black) and class ids."""

    id: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def num_samples(self) -> int:
        return len(self.train_y) + len(self.test_y)

    def labels(self) -> set[int]:
        return set(np.unique(np.concatenate([self.train_y, self.test_y])).tolist())

    def sizes(self) -> dict[str, int]:
        return {"images": self.num_samples, "train": len(self.train_y), "test": len(self.test_y),
                "classes": len(self.labels())}


User = TextUser | ImageUser


def top_users(users: Sequence[User], fraction: float = TOP_FRACTION) -> list[User]:
    """The paper's selection: the `fraction` of users with the most samples (at least one user).

    Ties keep the users' order, so the selection is deterministic.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"the fraction of users must be in (0, 1], got {fraction}")
    if not users:
        raise ValueError("no users to select from")
    ranked = sorted(users, key=lambda user: -user.num_samples)
    return ranked[:max(1, math.ceil(len(users) * fraction))]


def find_user(users: Sequence[User], user_id: str) -> User:
    """The user named `user_id`, or an error listing a few valid ids."""
    for user in users:
        if user.id == user_id:
            return user
    examples = ", ".join(repr(user.id) for user in users[:5])
    raise ValueError(f"no user {user_id!r} among {len(users)} users (e.g. {examples})")


def summary(users: Sequence[User]) -> dict:
    """Users, samples, classes (distinct labels over all users) and each user's sizes.

    Also how many users are big enough for the paper's experiments: text users with at least
    1,000 characters, image users with all 62 classes.
    """
    if not users:
        raise ValueError("no users to summarise")
    labels = set().union(*(user.labels() for user in users))
    sizes = {user.id: user.sizes() for user in users}
    report = {"users": len(users), "samples": sum(user.num_samples for user in users), "classes": len(labels),
              "top_10_percent": [user.id for user in top_users(users, TOP_FRACTION)], "per_user": sizes}
    if isinstance(users[0], TextUser):
        report["users_with_1000_chars"] = sum(size["chars"] >= MIN_TEXT_CHARS for size in sizes.values())
    else:
        report["users_with_all_classes"] = sum(size["classes"] == ALL_CLASSES for size in sizes.values())
    return report
