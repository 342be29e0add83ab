"""Loading a real compiled bundle, inference, and the guarded update step."""
import json
import shutil

import numpy as np
import pytest
from conftest import write_manifest_json

from device_runtime.bundle import (CPU_FEATURE_FLAGS, cpu_flags, device_triple, load_bundle, missing_cpu_features,
                                   triple_runs_here, verify_bundle)
from device_runtime.learner import Learner
from device_runtime.model import DeviceModel


@pytest.fixture(scope="module")
def bundle(tiny_nwp_bundle):
    return load_bundle(tiny_nwp_bundle)


@pytest.fixture
def copy(tiny_nwp_bundle, tmp_path):
    return shutil.copytree(tiny_nwp_bundle, tmp_path / "bundle")


def edit_manifest(root, **changes):
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    write_manifest_json(root, {**data, **changes})


def read_target(root):
    return json.loads((root / "manifest.json").read_text())["target"]


def test_bundle_loads_with_tvm_tensors(bundle):
    manifest = bundle.manifest
    assert manifest.model == "NextWordLSTM" and len(bundle.labels) == manifest.num_classes
    assert manifest.input == {"name": "x", "dtype": "int64", "shape": [None, None], "token_range": 40}
    assert manifest.labels_file == "vocab.txt" and manifest.next_token and manifest.token_range == 40
    assert bundle.labels == bundle.tokenizer.vocab and bundle.labels[:2] == ["<pad>", "<unk>"]
    assert manifest.tokenizer["vocab_sha256"] == manifest.files["vocab.txt"]  # the sha256 of vocab.txt itself
    assert manifest.target["features"] and not missing_cpu_features(manifest.target["features"], cpu_flags())
    assert [tuple(t.shape) for t in bundle.trainable] == [(40, 16), (40,)]
    assert type(bundle.trainable[0]).__module__.startswith("tvm")


def test_changed_file_is_refused(copy):
    data = bytearray((copy / "trainable.npz").read_bytes())
    data[-100] ^= 0xFF
    (copy / "trainable.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 mismatch.*trainable.npz"):
        load_bundle(copy)


def test_missing_and_extra_files_are_refused(copy):
    (copy / "update.so").unlink()
    (copy / "extra.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="sha256 mismatch.*extra.bin.*update.so"):
        load_bundle(copy)


def test_format_version_and_target_are_checked(copy):
    for version in (2, 4):  # format 2 (without a fingerprint) and a future one
        edit_manifest(copy, format_version=version)
        with pytest.raises(ValueError, match=f"format_version is {version}"):
            load_bundle(copy)
    edit_manifest(copy, format_version=3,
                  target={"name": "android-arm64", "triple": "aarch64-linux-android", "mcpu": "generic"})
    with pytest.raises(ValueError, match=f"targets aarch64-linux-android .* this device is {device_triple()}"):
        load_bundle(copy)


def test_a_bundle_needing_cpu_features_this_cpu_lacks_is_refused(copy):
    """Refused with the missing features named, where running it would die of SIGILL."""
    flags = cpu_flags()
    assert flags, "this CPU's /proc/cpuinfo lists no flags"
    lacking = next(f for f, flag in CPU_FEATURE_FLAGS.items() if flag not in flags)
    target = read_target(copy)
    edit_manifest(copy, target={**target, "features": [*target["features"], lacking]})
    with pytest.raises(ValueError, match=f"bundle code needs {lacking}, this CPU lacks it$"):
        verify_bundle(copy)
    edit_manifest(copy, target={k: v for k, v in target.items() if k != "features"})  # nothing known: not refused
    assert load_bundle(copy).manifest.target == {k: v for k, v in target.items() if k != "features"}


def test_cpu_flags_are_read_as_linux_names_them(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse sse2 avx2\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd aes crc32 atomics asimddp\n")
    assert cpu_flags(x86) == {"fpu", "sse", "sse2", "avx2"}  # common to every core
    assert cpu_flags(arm) == {"fp", "asimd", "aes", "crc32", "atomics", "asimddp"}
    (tmp_path / "none").write_text("processor\t: 0\n")
    assert cpu_flags(tmp_path / "none") is None and cpu_flags(tmp_path / "missing") is None
    assert missing_cpu_features(["sse2", "avx2", "fma", "avx512f"], cpu_flags(x86)) == ["fma", "avx512f"]
    assert missing_cpu_features(["neon", "dotprod", "sve", "i8mm"], cpu_flags(arm)) == ["sve", "i8mm"]
    assert missing_cpu_features(["avx512f", "some-future-isa"], None) == []  # unknown CPU: nothing to say
    assert missing_cpu_features(["some-future-isa"], set()) == []  # no flag known for it


def test_a_manifest_vocab_sha256_other_than_its_vocab_file_is_refused(copy):
    tokenizer = json.loads((copy / "manifest.json").read_text())["tokenizer"]
    edit_manifest(copy, tokenizer={**tokenizer, "vocab_sha256": "0" * 64})
    with pytest.raises(ValueError, match="vocab.txt has sha256 [0-9a-f]{64}; the manifest's tokenizer says 0{64}"):
        load_bundle(copy).tokenizer


def test_no_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_bundle(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_bundle(tmp_path)


def test_triples():
    assert triple_runs_here(device_triple())
    assert not triple_runs_here("aarch64-linux-android" if "x86_64" in device_triple() else "x86_64-linux-gnu")


def test_forward_batches_and_singles_agree(bundle):
    model = DeviceModel(bundle)
    x = np.random.default_rng(0).integers(0, 40, size=(7, 6)).astype(np.int64)  # one batch of 4 + 3 singles
    logits, cut = model.forward(x)
    assert logits.shape == (7, 40) and cut.shape == (7, 16)
    single = np.concatenate([model.forward(x[i:i + 1])[0] for i in range(7)])
    np.testing.assert_allclose(logits, single, rtol=1e-5, atol=1e-6)


def test_out_of_range_token_is_refused_before_tvm(bundle):
    model = DeviceModel(bundle)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 39\], found 0..40"):
        model.forward(np.array([[0, 1, 2, 3, 4, 40]], dtype=np.int64))


def test_update_learns_and_non_finite_update_is_rolled_back(bundle):
    model = DeviceModel(bundle)
    learner = Learner(model)
    rng = np.random.default_rng(1)
    cut = rng.normal(size=(4, 16)).astype(np.float32)
    labels = np.array([1, 2, 3, 4])
    losses = [learner.step(cut, labels).loss for _ in range(5)]
    assert losses[-1] < losses[0]
    before = [t.numpy().copy() for t in model.trainable + model.optimizer_state]
    result = learner.step(np.full((4, 16), 3e38, np.float32), labels)  # finite input, overflowing loss
    assert result.rolled_back and learner.rollbacks == 1
    after = [t.numpy() for t in model.trainable + model.optimizer_state]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert not learner.step(cut, labels).rolled_back  # the model is still usable


def test_update_input_checks(bundle):
    learner = Learner(DeviceModel(bundle))
    with pytest.raises(ValueError, match=r"cut batch has shape \[3, 16\]"):
        learner.step(np.zeros((3, 16), np.float32), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 39\]"):
        learner.step(np.zeros((4, 16), np.float32), np.array([0, 1, 2, 40]))


def test_state_arrays_round_trip(bundle):
    a, b = Learner(DeviceModel(bundle)), Learner(DeviceModel(bundle))
    a.step(np.ones((4, 16), np.float32), np.array([0, 1, 2, 3]))
    b.load_state_arrays(a.state_arrays())
    assert all(np.array_equal(x, y) for x, y in zip(a.state_arrays().values(), b.state_arrays().values()))
    with pytest.raises(ValueError, match="lacks parameters: fc.bias"):
        b.load_state_arrays({"fc.weight": np.zeros((40, 16), np.float32)})


def test_the_device_loads_only_the_modules_it_calls(tiny_nwp_bundle):
    """Inference maps forward.so alone; update.so comes with the first update; loss.so never."""
    model = DeviceModel(load_bundle(tiny_nwp_bundle))
    learner = Learner(model)
    model.forward(np.zeros((1, 6), np.int64))
    assert set(model.bundle._vms) == {"forward"}
    cut = model.forward(np.ones((model.train_batch, 6), np.int64))[1]
    learner.step(cut, np.zeros(model.train_batch, np.int64))
    assert set(model.bundle._vms) == {"forward", "update"}
