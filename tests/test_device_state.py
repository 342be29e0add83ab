"""One learned state per state directory: every mode continues from the newest generation, a bundle
of the same layout continues it, anything else is refused in one line, never a silent start over."""
import re

import numpy as np
import pytest

from conftest import TINY_TRAIN_BATCH, TINY_WORDS, tiny_nwp_inputs, tiny_nwp_model
from device_runtime.bundle import load_bundle
from device_runtime.checkpoint import load_checkpoint, save_checkpoint
from device_runtime.inference import infer_file
from device_runtime.learner import Learner
from device_runtime.model import DeviceModel
from device_runtime.offline import OfflineConfig, OfflineRun
from device_runtime.online import run_online
from device_runtime.policy import AlwaysProvider, TrainingPolicy
from device_runtime.state import load_learned
from test_device_data import write_nwp_user
from test_device_online import assert_same, learned

ALWAYS = TrainingPolicy(AlwaysProvider())


@pytest.fixture(scope="module")
def user(tiny_nwp_bundle, tmp_path_factory):
    return write_nwp_user(tiny_nwp_bundle, tmp_path_factory.mktemp("user") / "user.npz", n=32, n_test=8)


@pytest.fixture(scope="module")
def recompiled(tmp_path_factory):
    """The tiny model compiled again under another name: another bundle (fingerprint), the same layout."""
    from compiler import compile_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny-nwp-again"
    return compile_bundle(tiny_nwp_model(), out=out, **tiny_nwp_inputs(), train_batch=TINY_TRAIN_BATCH,
                          name="TinyLSTM-rebuilt")


@pytest.fixture(scope="module")
def other_lr(tmp_path_factory):
    """The tiny model compiled with another learning rate: its momentum or Adam state would not fit."""
    from compiler import compile_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny-nwp-lr"
    return compile_bundle(tiny_nwp_model(), out=out, **tiny_nwp_inputs(), train_batch=TINY_TRAIN_BATCH, lr=0.1)


@pytest.fixture(scope="module")
def wider_head(tmp_path_factory):
    """A next-word model with two more words: its head fc.weight is [42, 16], not [40, 16]."""
    import torch

    from cloud_pretrain.models import NextWordLSTM
    from compiler import compile_bundle
    from device_runtime.tokenizer import Tokenizer

    words = TINY_WORDS + ["w38", "w39"]
    torch.manual_seed(0)
    model = NextWordLSTM(len(words), embed_dim=8, hidden_size=16).eval()
    out = tmp_path_factory.mktemp("bundles") / "tiny-nwp-42"
    return compile_bundle(model, out=out, example_input=torch.randint(2, len(words), (2, 6)), labels=words,
                          lengths=(6,), tokenizer=Tokenizer(words), train_batch=TINY_TRAIN_BATCH)


def assert_differ(a, b):
    assert any(not np.array_equal(a[name], b[name]) for name in a)


def test_online_then_offline_then_infer_use_the_newest_params(tiny_nwp_bundle, user, tmp_path):
    state = tmp_path / "s"
    online = run_online(tiny_nwp_bundle, user, state, batch=8, checkpoint_every=1)
    assert online["generation"] == 32 // 8  # one save per update of 8 labels, none more at the end
    after_online, _ = learned(state)
    run = OfflineRun(tiny_nwp_bundle, user, state, OfflineConfig(augment_ratio=0), ALWAYS)
    assert run.status()["started_from"] == "generation 4 (online)"
    assert_same(run.learner.state_arrays(), after_online)  # not the bundle's params
    status = run.run()
    assert status["generation"] == 5 and status["finished"]
    after_offline, meta = learned(state)
    assert meta["mode"] == "offline" and meta["sections"]["online"]["generation"] == 4  # online's kept
    assert_same(run.learner.state_arrays(), after_offline)
    assert_differ(after_offline, after_online)
    shown = infer_file(tiny_nwp_bundle, user, state_dir=state, top=3)
    assert shown["params"] == "generation 5 (offline)"
    with np.load(user) as data:
        logits = run.model.forward(data["x"])[0].astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose([[p["p"] for p in row] for row in shown["predictions"]],
                               -np.sort(-probs, axis=1)[:, :3], atol=1e-6)


def test_offline_online_offline_continues_and_never_reverts(tiny_nwp_bundle, user, tmp_path):
    state = tmp_path / "s"
    first = OfflineRun(tiny_nwp_bundle, user, state, OfflineConfig(epochs=1, augment_ratio=0), ALWAYS).run()
    assert first["generation"] == 1 and first["step"] == 8
    online = run_online(tiny_nwp_bundle, user, state, batch=8)
    assert online["started_from"] == "generation 1 (offline)" and online["generation"] == 2
    after_online, _ = learned(state)
    again = OfflineRun(tiny_nwp_bundle, user, state, OfflineConfig(epochs=2, augment_ratio=0), ALWAYS)
    assert again.status()["started_from"] == "generation 2 (online), newer than offline's own generation 1"
    assert again.progress.epoch == 1 and again.progress.step == 8  # its own progress, online's params
    assert_same(again.learner.state_arrays(), after_online)
    status = again.run()
    assert status["finished"] and status["step"] == 16 and status["generation"] == 3
    assert_differ(learned(state)[0], after_online)
    # finished: a rerun learns nothing and writes nothing
    before = (state / "checkpoint.npz").read_bytes()
    done = OfflineRun(tiny_nwp_bundle, user, state, OfflineConfig(epochs=2, augment_ratio=0), ALWAYS).run()
    assert done["generation"] == 3 and (state / "checkpoint.npz").read_bytes() == before


def test_a_recompiled_bundle_continues_the_learned_state(tiny_nwp_bundle, recompiled, user, tmp_path):
    state = tmp_path / "s"
    OfflineRun(tiny_nwp_bundle, user, state, OfflineConfig(epochs=2, augment_ratio=0, window_steps=5,
                                                            max_windows=1), ALWAYS).run()
    before, meta = learned(state)
    first = load_bundle(tiny_nwp_bundle).manifest.fingerprint
    assert meta["bundle"] == first != load_bundle(recompiled).manifest.fingerprint
    resumed = OfflineRun(recompiled, user, state, OfflineConfig(epochs=2, augment_ratio=0), ALWAYS)
    assert resumed.progress.step == 5
    assert resumed.status()["started_from"] == f"generation 1 (offline), by another build (bundle {first[:12]})"
    assert_same(resumed.learner.state_arrays(), before)
    assert resumed.run()["step"] == 16
    status = run_online(recompiled, user, state, batch=8)
    assert status["started_from"] == f"generation {status['generation'] - 1} (offline)"


def test_a_bundle_with_another_learning_rate_is_refused(tiny_nwp_bundle, other_lr, user, tmp_path):
    state = tmp_path / "s"
    run_online(tiny_nwp_bundle, user, state, batch=8)
    before = (state / "checkpoint.npz").read_bytes()
    message = ('learned state has optimizer {"lr": 0.05, "name": "sgd"}; this bundle\'s is '
               '{"lr": 0.1, "name": "sgd"}: use a new --state directory')
    with pytest.raises(ValueError, match=re.escape(message) + "$"):
        run_online(other_lr, user, state, batch=8)
    assert (state / "checkpoint.npz").read_bytes() == before


def test_a_bundle_with_another_head_is_refused_in_one_line(tiny_nwp_bundle, wider_head, user, tmp_path):
    state = tmp_path / "s"
    run_online(tiny_nwp_bundle, user, state, batch=8)
    before = (state / "checkpoint.npz").read_bytes()
    message = (r"checkpoint.npz: learned state has fc.weight \[40, 16\] float32; this bundle's is \[42, 16\] "
               r"float32: use a new --state directory$")
    with pytest.raises(ValueError, match=message) as refused:
        run_online(wider_head, user, state, batch=8)
    assert "\n" not in str(refused.value)
    with pytest.raises(ValueError, match=message):
        infer_file(wider_head, user, state_dir=state)
    assert (state / "checkpoint.npz").read_bytes() == before  # nothing started over


def test_restoring_checks_dtypes_and_the_layout(tiny_nwp_bundle, user, tmp_path):
    state = tmp_path / "s"
    run_online(tiny_nwp_bundle, user, state, batch=8)
    arrays, meta = load_checkpoint(state / "checkpoint.npz")
    learner = Learner(DeviceModel(load_bundle(tiny_nwp_bundle)))
    save_checkpoint(state / "checkpoint.npz", {**arrays, "fc.bias": arrays["fc.bias"].astype(np.float64)}, meta)
    with pytest.raises(ValueError, match=r"learned state has fc.bias \[40\] float64; this bundle's is \[40\] float32"):
        load_learned(state, learner)
    adam = {"name": "adam", "lr": 0.05}
    save_checkpoint(state / "checkpoint.npz", arrays, {**meta, "layout": {**meta["layout"], "optimizer": adam}})
    with pytest.raises(ValueError, match='learned state has optimizer {"lr": 0.05, "name": "adam"}; this bundle'):
        load_learned(state, learner)
    save_checkpoint(state / "checkpoint.npz", arrays, meta)
    assert load_learned(state, learner).generation == meta["generation"]


def test_a_corrupt_learned_state_is_an_error_naming_the_file(tiny_nwp_bundle, user, tmp_path):
    state = tmp_path / "s"
    run_online(tiny_nwp_bundle, user, state, batch=8)
    path = state / "checkpoint.npz"
    path.write_bytes(path.read_bytes()[:200])
    for attempt in (lambda: infer_file(tiny_nwp_bundle, user, state_dir=state),
                    lambda: run_online(tiny_nwp_bundle, user, state, batch=8),
                    lambda: OfflineRun(tiny_nwp_bundle, user, state, OfflineConfig(augment_ratio=0), ALWAYS)):
        with pytest.raises(ValueError, match=re.escape(f"checkpoint {path} is corrupt")):
            attempt()
    save_checkpoint(path, {"fc.weight": np.zeros((40, 16), np.float32)}, {"identity": {}, "progress": {}})
    with pytest.raises(ValueError, match="holds no learned state"):
        infer_file(tiny_nwp_bundle, user, state_dir=state)
