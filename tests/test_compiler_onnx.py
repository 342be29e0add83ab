"""ONNX input for the training compiler: the project's own tiny models exported to ONNX.

The compiler verifies against ONNX Runtime; these tests check the bundle independently against
the PyTorch model the ONNX file was exported from, on the device runtime.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import tvm
from conftest import (TINY_CLASSES, TINY_LABELS, TINY_TRAIN_BATCH, TINY_VOCAB, TINY_WORDS, tiny_image_model,
                      tiny_nwp_model)

from autlearn.cli import main
from compiler import compile_bundle
from compiler.onnx_import import (import_trainable, load_onnx, onnx_input_spec, ort_forward_reference,
                                  ort_training_reference)
from compiler.targets import resolve_target
from compiler.training import build_training_modules, optimizer_config
from compiler.verify import VerificationError, check_training
from device_runtime.bundle import load_bundle
from device_runtime.learner import Learner
from device_runtime.manifest import read_manifest
from device_runtime.model import DeviceModel
from device_runtime.tokenizer import Tokenizer

LABELS = TINY_LABELS
LR = 0.05


@pytest.fixture(scope="module")
def image_model():
    """The tiny MobileNetV2Image with a non-zero classifier bias (a zero one is folded out of the ONNX)."""
    model = tiny_image_model()
    with torch.no_grad():
        model.classifier[1].bias.copy_(torch.linspace(-0.5, 0.5, TINY_CLASSES))
    return model


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """torch's TorchScript ONNX exporter, batch dynamic: 1 s, where `autlearn export`'s dynamo
    exporter takes 30 s for the tiny MobileNetV2 on 2 cores; for it both write the same compute
    operators (Conv with batch norm folded in, Clip, Add, ReduceMean, Gemm)."""
    torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def image_onnx(image_model, tmp_path_factory):
    return export_onnx(image_model, torch.rand(2, 1, 28, 28), tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def image_bundle(image_onnx, tmp_path_factory):
    """Compiled through the CLI: default cut (the classifier's input), SGD, batch 4; the input's
    name, dtype and shape come from the graph (no example input)."""
    root = tmp_path_factory.mktemp("bundle")
    (root / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    assert main(["compile", "--onnx", str(image_onnx), "--labels", str(root / "labels.txt"),
                 "--train-batch", str(TINY_TRAIN_BATCH), "--lr", str(LR), "--out", str(root / "b")]) == 0
    return root / "b"


def test_onnx_bundle_runs_on_the_device_and_one_update_matches_torch(image_bundle, image_model, image_onnx):
    manifest = read_manifest(image_bundle)
    linear = image_model.classifier[1]
    assert manifest.model == image_onnx.stem and manifest.labels_file == "labels.txt"
    assert manifest.input == {"name": "x", "dtype": "float32", "shape": [None, 1, 28, 28]}
    assert manifest.tokenizer is None and manifest.augmentation == "images" and manifest.token_range is None
    assert [f["name"] for f in manifest.forward_functions] == ["forward_b1", f"forward_b{TINY_TRAIN_BATCH}"]
    assert manifest.params["trainable"] == ["classifier.1.weight", "classifier.1.bias"]
    graph = onnx.load(str(image_onnx)).graph
    frozen = manifest.params["frozen"]
    assert frozen and set(frozen) <= {init.name for init in graph.initializer} - set(manifest.params["trainable"])
    assert manifest.cut == {"dtype": "float32", "shape": [None, linear.in_features]}
    (gemm,) = [node for node in graph.node if node.op_type == "Gemm"]
    assert manifest.cut_layer == gemm.input[0]

    model = DeviceModel(load_bundle(image_bundle))
    assert model.bundle.labels == LABELS
    images = np.random.default_rng(5).random((TINY_TRAIN_BATCH + 1, 1, 28, 28), dtype=np.float32)
    logits, cut = model.forward(images)  # one train-batch chunk, then a single
    with torch.no_grad():
        want_cut = image_model.pool(image_model.features(torch.from_numpy(images)))
        want_logits = image_model(torch.from_numpy(images))
    np.testing.assert_allclose(cut, want_cut.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, want_logits.numpy(), rtol=1e-4, atol=1e-5)

    labels = np.array([3, 1, 4, 1], dtype="int64")
    result = Learner(model).step(cut[:TINY_TRAIN_BATCH], labels)
    want = torch.nn.functional.cross_entropy(linear(want_cut[:TINY_TRAIN_BATCH]), torch.from_numpy(labels))
    want.backward()
    assert not result.rolled_back and result.loss == pytest.approx(want.item(), rel=1e-5)
    new_weight, new_bias = (t.numpy() for t in model.trainable)
    np.testing.assert_allclose(new_weight, (linear.weight - LR * linear.weight.grad).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_bias, (linear.bias - LR * linear.bias.grad).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_deeper_cut_trains_with_adam_and_a_wrong_reference_is_named(image_onnx):
    """Cut after the last ReLU6: global pooling and the classifier train; Adam's step checked from
    ONNX Runtime's gradients; a reference at another learning rate names the first diverging tensor."""
    onnx_model = load_onnx(image_onnx)
    last_clip = [n for n in onnx_model.model.graph.node if n.op_type == "Clip"][-1]
    cut = last_clip.output[0]
    images = np.random.default_rng(6).random((2, 1, 28, 28), dtype=np.float32)
    _, cut_sample = ort_forward_reference(onnx_model, cut)(images)
    assert cut_sample.ndim == 4  # [batch, channels, h, w]: before the pooling
    names = onnx_model.trainable_names(cut)
    assert names == ["classifier.1.weight", "classifier.1.bias"]
    config = optimizer_config("adam", 0.01)
    training = build_training_modules(import_trainable(onnx_model, cut, list(cut_sample.shape), "float32"),
                                      TINY_CLASSES, config)
    target = resolve_target("host").tvm_target()
    loss_exe, update_exe = tvm.compile(training.loss, target=target), tvm.compile(training.update, target=target)
    labels = np.array([2, 7], dtype="int64")
    values = onnx_model.param_values(names)
    check_training(loss_exe, update_exe, cut_sample, labels, names, values, training.state_values,
                   ort_training_reference(onnx_model, cut, cut_sample, labels, config))
    wrong = ort_training_reference(onnx_model, cut, cut_sample, labels, {**config, "lr": 0.02})
    with pytest.raises(VerificationError, match="update: classifier.1.weight diverges from ONNX Runtime"):
        check_training(loss_exe, update_exe, cut_sample, labels, names, values, training.state_values, wrong)


def test_bad_onnx_requests_are_refused_and_write_nothing(image_onnx, tmp_path):
    out = tmp_path / "b"
    with pytest.raises(ValueError, match="unknown cut tensor 'nope'"):
        compile_bundle(image_onnx, None, out, labels=LABELS, cut="nope")
    last_conv = [n for n in load_onnx(image_onnx).model.graph.node if n.op_type == "Conv"][-1]
    with pytest.raises(ValueError, match="cannot be differentiated: cut later"):  # ReLU6 is lowered to TIR
        compile_bundle(image_onnx, None, out, labels=LABELS, cut=last_conv.output[0], train_batch=2)
    with pytest.raises(ValueError, match="outputs 10 classes, labels list 9"):
        compile_bundle(image_onnx, None, out, labels=LABELS[:-1], train_batch=2)
    with pytest.raises(ValueError, match="cut at a tensor: name it as the cut, not trainable parameters"):
        compile_bundle(image_onnx, None, out, labels=LABELS, trainable=["classifier.1.weight"])
    with pytest.raises(ValueError, match=r"example input of shape \[2, 1, 32, 32\] does not fit the ONNX input 'x'"):
        compile_bundle(image_onnx, np.zeros((2, 1, 32, 32), np.float32), out, labels=LABELS)
    free = tmp_path / "free.onnx"  # height and width left free in the graph: the example must give them
    torch.onnx.export(tiny_image_model(), (torch.rand(2, 1, 28, 28),), str(free), dynamo=False, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}})
    with pytest.raises(ValueError, match="has free sizes"):
        compile_bundle(free, None, out, labels=LABELS)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        compile_bundle(tmp_path / "missing.onnx", None, out, labels=LABELS)
    (tmp_path / "notes.onnx").write_text("not a model")
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        compile_bundle(tmp_path / "notes.onnx", None, out, labels=LABELS)
    assert not out.exists()


def test_cli_takes_a_checkpoint_or_an_onnx_file_not_both(image_onnx, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compile", "--onnx", str(image_onnx), "--checkpoint", "c.pt", "--out", "x"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # the task is gone from the compiler
        main(["compile", "--task", "image", "--onnx", str(image_onnx), "--out", "x"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --task" in capsys.readouterr().err
    assert main(["compile", "--onnx", str(image_onnx), "--out", str(tmp_path / "x")]) == 2
    assert "needs --labels FILE" in capsys.readouterr().err
    assert main(["compile", "--onnx", str(image_onnx), "--labels", str(tmp_path / "none.txt"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "--labels file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_nwp_lstm_onnx_is_refused_naming_the_operator(tmp_path):
    """TVM 0.27's ONNX frontend has no LSTM converter: the nwp model must come as a checkpoint."""
    path = export_onnx(tiny_nwp_model(), torch.randint(0, TINY_VOCAB, (2, 6)), tmp_path / "nwp.onnx")
    spec = onnx_input_spec(path, None, None, None)  # dtype, length and token range read from the graph
    assert (spec.name, spec.dtype, spec.sample_shape, spec.token_range) == ("x", "int64", (6,), TINY_VOCAB)
    text = {"labels": TINY_WORDS, "tokenizer": Tokenizer(TINY_WORDS)}
    with pytest.raises(ValueError, match="lengths"):  # the graph's axis 1 is 6: refused naming the setting
        compile_bundle(path, None, tmp_path / "b", **text, lengths=(7,))
    with pytest.raises(ValueError, match="not supported for frontend ONNX: LSTM"):
        compile_bundle(path, None, tmp_path / "b", **text, lengths=(6,), train_batch=2)
    assert not (tmp_path / "b").exists()
