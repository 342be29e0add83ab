"""Models no code path names, compiled through the CLI and learning on the device.

A torchvision ResNet-18 on 3x32x32 images and a GRU text classifier are exported by the test to
torch.export programs (.pt2), as a user would, compiled with `autlearn compile --exported`,
verified against PyTorch by the compiler, then trained offline and online and queried on the
device in a fresh process with no torch and no network (test_device_cli's driver).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from autlearn.cli import main
from device_runtime.manifest import read_manifest
from test_device_cli import run_commands

WORDS = ["<pad>", "<unk>", "good", "great", "fine", "bad", "awful", "terrible", "the", "film", "movie", "was", "very",
         "a", "plot"]
SENTIMENTS = ["negative", "positive"]


class GRUClassifier(nn.Module):
    """Embedding, one GRU layer, the last step, a linear layer over the classes."""

    def __init__(self, vocab: int, classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, 8)
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.head = nn.Linear(16, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embedding(tokens))
        return self.head(out[:, out.shape[1] - 1])


def _write_lines(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _printed(out):
    """The JSON objects a run printed, in order (the driver's own summary last)."""
    decoder, objects, i = json.JSONDecoder(), [], 0
    while i < len(out):
        if out[i] == "{":
            obj, i = decoder.raw_decode(out, i)
            objects.append(obj)
        else:
            i += 1
    return objects


def _learned(state, name):
    with np.load(state / name) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    import torchvision

    root = tmp_path_factory.mktemp("resnet")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    torch.export.save(torch.export.export(model, (torch.rand(2, 3, 32, 32),)), root / "resnet18.pt2")
    labels = _write_lines(root / "labels.txt", [f"class{i}" for i in range(10)])
    argv = ["compile", "--exported", str(root / "resnet18.pt2"), "--labels", str(labels), "--train-batch", "4"]
    assert main([*argv, "--out", str(root / "bundle")]) == 0
    rng = np.random.default_rng(0)
    x = rng.random((40, 3, 32, 32), dtype=np.float32)
    y = (x[:, 0].mean(axis=(1, 2)) * 40).astype(np.int64) % 10
    np.savez(root / "user.npz", x=x[:32], y=y[:32], test_x=x[32:], test_y=y[32:])
    return root, argv


def test_resnet18_compiles_from_its_exported_program(resnet):
    root, _ = resnet
    manifest = read_manifest(root / "bundle")
    assert manifest.model == "resnet18" and manifest.cut_layer == "fc"
    assert manifest.input == {"name": "x", "dtype": "float32", "shape": [None, 3, 32, 32]}
    assert manifest.params["trainable"] == ["fc.weight", "fc.bias"] and len(manifest.params["frozen"]) == 60
    assert manifest.cut["shape"] == [None, 512] and manifest.augmentation == "images"
    assert manifest.tokenizer is None and manifest.labels_file == "labels.txt"


def test_resnet18_learns_offline_and_online_on_the_device(resnet, tmp_path):
    root, _ = resnet
    b, data, s = str(root / "bundle"), str(root / "user.npz"), tmp_path / "state"
    out, result = run_commands([
        ["device", "offline", "--bundle", b, "--data", data, "--state", str(s), "--epochs", "2"],
        ["device", "online", "--bundle", b, "--data", data, "--state", str(s), "--batch", "8"],
        ["device", "infer", "--bundle", b, "--input", data, "--state", str(s), "--top", "2"],
    ], tmp_path)
    assert result == {"codes": [0, 0, 0], "socket_events": [], "torch_loaded": False}
    with np.load(root / "bundle" / "trainable.npz") as npz:
        start = npz["fc.weight"]
    assert not np.allclose(_learned(s, "checkpoint.npz")["fc.weight"], start)  # offline moved the head
    assert '"updates": 8' in out and '"label": "class' in out


def test_resnet18_trains_an_explicit_parameter_list_and_refuses_a_bad_one(resnet, tmp_path, capsys):
    root, argv = resnet
    assert main([*argv, "--trainable", "fc.weight", "--out", str(tmp_path / "w")]) == 0
    manifest = read_manifest(tmp_path / "w")
    assert manifest.params["trainable"] == ["fc.weight"] and manifest.params["frozen"][-1] == "fc.bias"
    assert main([*argv, "--trainable", "layer4.1.conv2.weight", "--out", str(tmp_path / "x")]) == 2
    assert main([*argv, "--trainable", "fc.kernel", "--out", str(tmp_path / "x")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert "read 2 activations of the frozen part" in errors[-2] and "unknown trainable parameter 'fc.kernel'" in errors[-1]
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def gru(tmp_path_factory):
    root = tmp_path_factory.mktemp("gru")
    torch.manual_seed(0)
    model = GRUClassifier(len(WORDS), len(SENTIMENTS)).eval()
    example = torch.randint(2, len(WORDS), (2, 8))  # export specialises the GRU's length: one length
    dims = ({0: torch.export.Dim("batch", min=1)},)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=dims), root / "gru.pt2")
    assert main(["compile", "--exported", str(root / "gru.pt2"), "--labels",
                 str(_write_lines(root / "labels.txt", SENTIMENTS)), "--vocab", str(_write_lines(root / "vocab.txt", WORDS)),
                 "--train-batch", "4", "--cut", "gru", "--out", str(root / "bundle")]) == 0
    rng = np.random.default_rng(1)
    x = rng.integers(2, len(WORDS), (48, 8))
    y = np.isin(x, [2, 3, 4]).sum(axis=1) > np.isin(x, [5, 6, 7]).sum(axis=1)
    np.savez(root / "user.npz", x=x[:40], y=y[:40].astype(np.int64), test_x=x[40:], test_y=y[40:].astype(np.int64))
    return root


def test_gru_classifier_carries_its_tokenizer_and_trains_the_recurrence(gru):
    manifest = read_manifest(gru / "bundle")
    assert manifest.input == {"name": "tokens", "dtype": "int64", "shape": [None, 8], "token_range": len(WORDS)}
    assert [f["name"] for f in manifest.forward_functions] == ["forward_b1", "forward_b4"]
    assert manifest.params["frozen"] == ["embedding.weight"] and manifest.params["trainable"][0] == "gru.weight_ih_l0"
    assert manifest.tokenizer["vocab_file"] == "vocab.txt" and manifest.labels_file == "labels.txt"
    assert manifest.augmentation == "text" and not manifest.next_token
    table = json.loads((gru / "bundle" / "synonyms.json").read_text())
    assert table["film"] == ["movie"] and table["awful"] == ["terrible"]  # WordNet, inside the vocabulary


def test_gru_classifier_learns_and_classifies_typed_text_on_the_device(gru, tmp_path):
    b, s = str(gru / "bundle"), str(tmp_path / "state")
    out, result = run_commands([
        ["device", "offline", "--bundle", b, "--data", str(gru / "user.npz"), "--state", s, "--epochs", "3"],
        ["device", "infer", "--bundle", b, "--state", s, "--text", "The film was very GOOD, great!", "--json"],
    ], tmp_path)
    assert result == {"codes": [0, 0], "socket_events": [], "torch_loaded": False}
    shown = _printed(out)[1]
    assert [p["label"] for p in shown["suggestions"]] in (SENTIMENTS, SENTIMENTS[::-1])


def test_next_word_suggestions_and_learning_from_typed_text(tiny_nwp_bundle, tmp_path):
    b, s = str(tiny_nwp_bundle), str(tmp_path / "state")
    typed = _write_lines(tmp_path / "typed.txt", ["w1 w2 w3 w4 w5 w6 w7", "W3, w9 zebra w10", "", "w2"])
    out, result = run_commands([
        ["device", "infer", "--bundle", b, "--text", "w1 w2 w3", "--top", "40", "--json"],
        ["device", "online", "--bundle", b, "--text", str(typed), "--state", s, "--batch", "4"],
    ], tmp_path)
    assert result["codes"] == [0, 0] and result["socket_events"] == []
    shown, status, _ = _printed(out)
    suggestions = shown["suggestions"]
    assert len(suggestions) == 38 and not {"<pad>", "<unk>"} & {p["label"] for p in suggestions}
    assert status["inferred"] == status["labelled"] == 6 + 2  # 'zebra' is unknown: never a label
    assert status["updates"] == 2


def test_text_needs_a_token_model(tiny_image_bundle, tmp_path):
    code = main(["device", "infer", "--bundle", str(tiny_image_bundle), "--text", "hello"])
    assert code == 2
