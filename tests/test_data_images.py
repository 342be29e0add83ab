"""Per-writer characters rendered from fonts."""
from __future__ import annotations

import numpy as np
import pytest

from cloud_pretrain.data.fonts import FEMNIST_CLASSES, handwriting_fonts, missing_characters, package_font_files
from cloud_pretrain.data.images import WritingSettings, device_fonts, handwriting_users, render_writer
from cloud_pretrain.data.users import ImageUser, summary
from cloud_pretrain.data.writers import PUBLIC_FAMILIES, draw_style, font_family, split_fonts

# about 93 images a writer, two writers per device font: fast, all 62 classes
SMALL = WritingSettings(seed=3, samples_per_class=1.5, writers_per_font=2)


def font_of(writer_id: str):
    return device_fonts()[writer_id.rsplit("-", 1)[0]]


@pytest.fixture(scope="session")
def writer_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("autlearn-cache")


@pytest.fixture(scope="session")
def writers(writer_cache) -> list[ImageUser]:
    return handwriting_users(SMALL, cache=writer_cache)


def test_at_least_15_writers_have_all_62_classes(writers):
    assert len(writers) == 2 * len(device_fonts()) >= 15
    report = summary(writers)
    assert report["users_with_all_classes"] >= 15 and report["classes"] == 62
    for writer in writers:
        assert writer.train_x.dtype == np.uint8 and writer.train_x.shape[1:] == (28, 28)
        assert len(writer.train_x) == len(writer.train_y) and len(writer.test_x) == len(writer.test_y)
        assert len(writer.test_y) == writer.num_samples // 5
        assert writer.train_x.reshape(len(writer.train_x), -1).max(axis=1).min() > 100  # ink on every image


def test_fonts_qualify_only_with_all_62_characters():
    fonts = handwriting_fonts()
    assert all(missing_characters(font) == "" for font in fonts.values())
    assert len(FEMNIST_CLASSES) == 62 and FEMNIST_CLASSES[:11] == "0123456789A"
    dejavu = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    assert dejavu not in {str(font) for font in fonts.values()}  # installed, but not handwriting


def test_writers_are_non_iid_in_labels_and_style(writers):
    histograms = np.stack([np.bincount(np.concatenate([w.train_y, w.test_y]), minlength=62) for w in writers])
    distributions = histograms / histograms.sum(axis=1, keepdims=True)
    distances = 0.5 * np.abs(distributions[:, None] - distributions[None]).sum(axis=-1)
    assert distances[np.triu_indices(len(writers), 1)].min() > 0.05
    every = [(np.concatenate([w.train_x, w.test_x]), np.concatenate([w.train_y, w.test_y])) for w in writers[:4]]
    mean_zero = [x[y == 0].mean(axis=0) for x, y in every]  # each writer's "0"
    assert min(np.abs(a - b).mean() for i, a in enumerate(mean_zero) for b in mean_zero[i + 1:]) > 5


def test_rendering_is_deterministic_for_a_seed_and_cached(writers, writer_cache):
    font = font_of(writers[0].id)
    images, labels = render_writer(writers[0].id, font, SMALL)
    assert np.array_equal(np.concatenate([writers[0].train_x, writers[0].test_x]), images)
    other_images, _ = render_writer(writers[0].id, font, WritingSettings(seed=4, samples_per_class=1.5))
    assert not np.array_equal(images[:10], other_images[:10])
    cached = sorted((writer_cache / "handwriting").glob("*.npz"))
    assert len(cached) == len(writers)
    stamps = [path.stat().st_mtime_ns for path in cached]
    again = handwriting_users(SMALL, cache=writer_cache)
    assert [path.stat().st_mtime_ns for path in cached] == stamps  # read back, not rendered again
    assert all(np.array_equal(a.train_x, b.train_x) for a, b in zip(writers, again))


def test_a_missing_font_package_is_named():
    with pytest.raises(FileNotFoundError, match="Debian package fonts-autlearn-missing is not installed"):
        package_font_files("fonts-autlearn-missing")
    with pytest.raises(FileNotFoundError, match="no installed handwriting font"):
        handwriting_users(SMALL, fonts={})


def test_a_damaged_cache_file_is_rendered_again(tmp_path, writers):
    stem = writers[0].id.rsplit("-", 1)[0]
    one = {stem: font_of(writers[0].id)}
    (tmp_path / "handwriting").mkdir()
    cache_file = tmp_path / "handwriting" / f"{writers[0].id}-{SMALL.key(one[stem])}.npz"
    cache_file.write_bytes(b"not a zip archive")
    again, _ = handwriting_users(SMALL, fonts=one, cache=tmp_path)
    assert np.array_equal(again.train_x, writers[0].train_x)
    with np.load(cache_file) as repaired:
        assert len(repaired["y"]) == writers[0].num_samples


def test_public_and_device_writers_never_share_a_hand():
    public, device = split_fonts(handwriting_fonts())
    assert public and device and not set(public) & set(device)
    assert {font_family(f) for f in public.values()} <= set(PUBLIC_FAMILIES)
    assert not {font_family(f) for f in device.values()} & set(PUBLIC_FAMILIES)
    assert font_family(device_fonts()["breipfont"]) == font_family(device_fonts()["Breip"]) == "breip"
    assert len(device) * WritingSettings().writers_per_font >= 300  # the default device users


def test_writers_of_one_font_write_in_hands_of_their_own(writers):
    """The two writers of a font differ in style (slant, size, warp), not only in jitter."""
    first, second = writers[0], writers[1]
    assert first.id.rsplit("-", 1)[0] == second.id.rsplit("-", 1)[0]
    assert draw_style(first.id, SMALL.seed) != draw_style(second.id, SMALL.seed)
    every = [(np.concatenate([w.train_x, w.test_x]), np.concatenate([w.train_y, w.test_y])) for w in (first, second)]
    mean = [x[y == 10].astype(float).mean(axis=0) for x, y in every]  # each one's "A"
    again = render_writer(first.id, font_of(first.id), WritingSettings(seed=9, samples_per_class=1.5))[0]
    assert np.abs(mean[0] - mean[1]).mean() > 5
    assert draw_style(first.id, 9) != draw_style(first.id, SMALL.seed) and len(again)


def test_the_image_task_pretrains_on_public_writers_only(monkeypatch, tmp_path):
    """The loader the pretraining calls (with the one signature of every task's loader)."""
    import cloud_pretrain.data.images as images
    from cloud_pretrain.tasks import get_preset, load_data

    seen = []
    real = images.cached_writer
    monkeypatch.setattr(images, "cached_writer", lambda writer, font, *a: seen.append(font) or real(writer, font, *a))
    monkeypatch.setenv("AUTLEARN_CACHE", str(tmp_path))
    data = load_data("image", get_preset("image", "tiny"), seed=0)
    x, y = data.train[0]
    assert x.shape[1:] == (1, 28, 28) and len(y) == 600 and data.num_classes == 62
    assert seen and {font_family(f) for f in seen} <= set(PUBLIC_FAMILIES)
    with pytest.raises(ValueError, match="no vocabulary"):
        load_data("image", get_preset("image", "tiny"), seed=0, vocab=["<pad>", "<unk>"])
