"""compile_bundle end to end: bundles that match PyTorch, every kind of cut, refusals.

Every compile here also runs the compiler's own verification against PyTorch; the tests add
independent checks on the files written.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from conftest import (TINY_CLASSES, TINY_TRAIN_BATCH, TINY_VOCAB, TINY_WORDS, tiny_image_model, tiny_nwp_inputs,
                      tiny_nwp_model)
from tvm import relax

from compiler import compile_bundle
from compiler.importer import import_module
from compiler.split import export_graph, split_graph
from compiler.targets import NDK_ENV, resolve_target
from compiler.training import build_training_modules, optimizer_config
from compiler.verify import VerificationError, verify_training
from device_runtime.manifest import mismatched_files, read_manifest

VOCAB = TINY_WORDS


def load_vm(bundle, key):
    return relax.VirtualMachine(tvm.runtime.load_module(str(bundle / f"{key}.so")), tvm.cpu())


def load_npz(bundle, name, names):
    with np.load(bundle / name) as npz:
        return [npz[n] for n in names]


def tensors(arrays):
    return [tvm.runtime.tensor(a) for a in arrays]


def test_tiny_nwp_bundle_matches_torch(tiny_nwp_bundle):
    manifest = read_manifest(tiny_nwp_bundle)
    assert mismatched_files(tiny_nwp_bundle, manifest) == []
    assert manifest.cut_layer == "fc" and manifest.params["trainable"] == ["fc.weight", "fc.bias"]
    assert [f["name"] for f in manifest.forward_functions] == ["forward_b1_l6", "forward_b4_l6"]
    assert manifest.cut == {"dtype": "float32", "shape": [None, 16]}
    assert (tiny_nwp_bundle / "vocab.txt").read_text().split("\n")[:-1] == VOCAB
    frozen = load_npz(tiny_nwp_bundle, "frozen.npz", manifest.params["frozen"])
    trainable = load_npz(tiny_nwp_bundle, "trainable.npz", manifest.params["trainable"])
    state = load_npz(tiny_nwp_bundle, "optimizer.npz", manifest.params["optimizer_state"])

    model = tiny_nwp_model()
    tokens = np.random.default_rng(1).integers(0, TINY_VOCAB, (TINY_TRAIN_BATCH, 6))
    logits, cut = load_vm(tiny_nwp_bundle, "forward")["forward_b4_l6"](*tensors([tokens, *frozen, *trainable]))
    with torch.no_grad():
        np.testing.assert_allclose(logits.numpy(), model(torch.from_numpy(tokens)).numpy(), rtol=1e-4, atol=1e-5)

    labels = np.arange(TINY_TRAIN_BATCH, dtype="int64")
    loss, weight, bias, steps = load_vm(tiny_nwp_bundle, "update")["update"](
        *tensors([cut.numpy(), labels, *trainable, *state]))
    want = torch.nn.functional.cross_entropy(model.fc(torch.from_numpy(cut.numpy())), torch.from_numpy(labels))
    want.backward()
    assert float(loss.numpy()) == pytest.approx(want.item(), rel=1e-5)
    np.testing.assert_allclose(weight.numpy(), (model.fc.weight - 0.05 * model.fc.weight.grad).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), (model.fc.bias - 0.05 * model.fc.bias.grad).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    assert int(steps.numpy()) == 1


def test_nwp_all_layers_train_with_adam(tmp_path):
    """Cut at the embedding: both LSTM layers and the embedding table train."""
    cut, optimizer = "embed", "adam"
    model = tiny_nwp_model()
    bundle = compile_bundle(model, out=tmp_path / "b", **tiny_nwp_inputs(), cut=cut, optimizer=optimizer,
                            train_batch=TINY_TRAIN_BATCH)
    manifest = read_manifest(bundle)
    names = manifest.params["trainable"]
    assert manifest.cut_layer == cut and names == [n for n, _ in model.named_parameters()]
    assert manifest.cut == {"dtype": "int64", "shape": [None, 6]}  # the cut activation is the tokens
    assert len(manifest.params["optimizer_state"]) == 3 + 2 * len(names)  # steps, beta products, m, v

    # a few update steps on one batch lower its loss
    forward, update = load_vm(bundle, "forward"), load_vm(bundle, "update")
    frozen = load_npz(bundle, "frozen.npz", manifest.params["frozen"])
    params = tensors(load_npz(bundle, "trainable.npz", names))
    state = tensors(load_npz(bundle, "optimizer.npz", manifest.params["optimizer_state"]))
    tokens = np.random.default_rng(2).integers(0, TINY_VOCAB, (TINY_TRAIN_BATCH, 6))
    _, cut_act = forward["forward_b4_l6"](*tensors([tokens, *frozen]), *params)
    labels = tvm.runtime.tensor(np.array([3, 1, 4, 1], dtype="int64"))
    losses = []
    for _ in range(4):
        loss, *rest = update["update"](cut_act, labels, *params, *state)
        params, state = rest[: len(names)], rest[len(names):]
        losses.append(float(loss.numpy()))
    assert losses[-1] < losses[0]


def test_mobilenet_all_layers_gradients_match_torch():
    """Every parameter trains: every conv, depthwise conv, batch norm and ReLU6 differentiated."""
    model = tiny_image_model()
    names = [n for n, _ in model.named_parameters()]
    config = optimizer_config("sgd", 0.05)
    x = np.random.default_rng(3).random((2, 1, 8, 8), dtype=np.float32)  # a tiny input keeps it fast
    split = split_graph(export_graph(model, torch.from_numpy(x)), names)
    head = import_module(split.trainable, torch.from_numpy(x), differentiable=True).reorder_params(names)
    training = build_training_modules(head, TINY_CLASSES, config)
    target = resolve_target("host").tvm_target()
    state = model.state_dict()
    verify_training(tvm.compile(training.loss, target=target), tvm.compile(training.update, target=target),
                    x, np.array([1, 7], dtype="int64"), names, [state[n].numpy() for n in names],
                    training.state_values, split.trainable, config)


def test_a_mismatch_fails_the_compile_names_the_tensor_and_writes_nothing(tmp_path, monkeypatch):
    import compiler.verify as verify

    real = verify.torch_optimizer
    monkeypatch.setattr(verify, "torch_optimizer", lambda params, config: real(params, {**config, "lr": 0.1}))
    with pytest.raises(VerificationError, match="update: fc.weight diverges from PyTorch"):
        compile_bundle(tiny_nwp_model(), out=tmp_path / "b", **tiny_nwp_inputs(), train_batch=2)
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_refused_before_compiling(tmp_path, monkeypatch):
    model = tiny_nwp_model()
    inputs = tiny_nwp_inputs()
    out = tmp_path / "b"
    with pytest.raises(ValueError, match="unknown cut module 'lstm3'.*embed, fc, last, lstm1, lstm1.lstm, lstm2, lstm2.lstm"):
        compile_bundle(model, out=out, **inputs, cut="lstm3")
    with pytest.raises(ValueError, match="unknown trainable parameter 'fc.kernel'.*embed.weight"):
        compile_bundle(model, out=out, **inputs, trainable=["fc.kernel"])
    with pytest.raises(ValueError, match="not both"):
        compile_bundle(model, out=out, **inputs, trainable=["fc.bias"], cut="fc")
    with pytest.raises(ValueError, match="rmsprop"):
        compile_bundle(model, out=out, **inputs, optimizer="rmsprop")
    with pytest.raises(ValueError, match="one input"):
        compile_bundle(model, out=out, **{**inputs, "example_input": (inputs["example_input"],) * 2})
    with pytest.raises(ValueError, match="no linear layer"):
        compile_bundle(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Softmax(1)), out=out,
                       example_input=torch.rand(2, 3), labels=["a", "b", "c"])
    monkeypatch.delenv(NDK_ENV, raising=False)
    with pytest.raises(RuntimeError, match=NDK_ENV):
        compile_bundle(model, out=out, **inputs, target="android-arm64")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a bundle directory"):
        compile_bundle(model, out=tmp_path / "notes", **inputs)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="labels list 39"):
        compile_bundle(model, out=out, **{**inputs, "labels": VOCAB[:-1], "tokenizer": None}, verify=False)
    assert not out.exists()


def test_cli_compiles_a_checkpoint_cut_inside_the_lstm_stack_for_linux_arm64(tmp_path):
    """Cross-compiled: verified on a host build of the same modules, then linked for arm64."""
    from autlearn.cli import main
    from cloud_pretrain.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "checkpoint.pt", tiny_nwp_model(), "nwp", vocab=VOCAB)
    out = tmp_path / "arm"
    assert main(["compile", "--checkpoint", str(ckpt), "--target", "linux-arm64",
                 "--cut", "lstm2", "--optimizer", "momentum", "--lengths", "6", "--train-batch", "4", "--out", str(out)]) == 0
    manifest = read_manifest(out)
    assert manifest.target["triple"] == "aarch64-linux-gnu" and manifest.optimizer["name"] == "momentum"
    assert manifest.cut_layer == "lstm2" and manifest.cut == {"dtype": "float32", "shape": [None, 6, 16]}
    assert manifest.params["trainable"][0] == "lstm2.lstm.weight_ih_l0"
    assert manifest.params["optimizer_state"][1:] == [f"velocity:{n}" for n in manifest.params["trainable"]]
    for module in manifest.modules.values():
        header = (out / module).read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    assert main(["compile", "--checkpoint", str(ckpt), "--labels", str(ckpt), "--out", str(tmp_path / "x")]) == 2
    assert main(["compile", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")]) == 2
    assert main(["compile", "--checkpoint", str(ckpt), "--trainable", "fc.kernel", "--out", str(tmp_path / "x")]) == 2
