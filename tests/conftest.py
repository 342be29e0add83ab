"""Shared fixtures: tiny real bundles, compiled once per test session.

The bundles are made by the same `compiler.compile_bundle` a user calls (real TVM compilation
and verification against PyTorch), from small untrained models, so any test that needs a
bundle on disk gets one without a checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_VOCAB = 40
TINY_CLASSES = 10
TINY_TRAIN_BATCH = 4
TINY_WORDS = ["<pad>", "<unk>"] + [f"w{i}" for i in range(TINY_VOCAB - 2)]
TINY_LABELS = [f"c{i}" for i in range(TINY_CLASSES)]


def write_manifest_json(root, data: dict) -> None:
    """Writes `data` as root/manifest.json with its fingerprint recomputed: a manifest edited as
    the compiler would have written it, so the check under test is the one that refuses it."""
    import json

    from device_runtime.manifest import manifest_fingerprint

    (Path(root) / "manifest.json").write_text(json.dumps({**data, "fingerprint": manifest_fingerprint(data)}))


def tiny_nwp_inputs(lengths=(6,)) -> dict:
    """`compile_bundle` inputs of the tiny next-word model: ids, its vocabulary as classes and tokenizer."""
    from device_runtime.tokenizer import Tokenizer

    return {"example_input": torch.randint(2, TINY_VOCAB, (2, max(lengths))), "labels": TINY_WORDS,
            "lengths": tuple(lengths), "tokenizer": Tokenizer(TINY_WORDS)}


def tiny_image_inputs() -> dict:
    """`compile_bundle` inputs of the tiny image model: grey 28x28 images, ten classes."""
    return {"example_input": torch.rand(2, 1, 28, 28), "labels": TINY_LABELS}


def tiny_nwp_model():
    """NextWordLSTM(vocab 40, embed 8, hidden 16), seeded."""
    import torch

    from cloud_pretrain.models import NextWordLSTM

    torch.manual_seed(0)
    return NextWordLSTM(TINY_VOCAB, embed_dim=8, hidden_size=16).eval()


def tiny_image_model():
    """MobileNetV2Image(10 classes, width 0.25), seeded."""
    import torch

    from cloud_pretrain.models import MobileNetV2Image

    torch.manual_seed(0)
    return MobileNetV2Image(num_classes=TINY_CLASSES, width_mult=0.25).eval()


@pytest.fixture(scope="session")
def tiny_nwp_bundle(tmp_path_factory) -> Path:
    """A host bundle of a tiny NextWordLSTM: default cut (fc), SGD, lengths (6,), batch 4, tokenizer."""
    from compiler import compile_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny-nwp"
    return compile_bundle(tiny_nwp_model(), out=out, **tiny_nwp_inputs(), train_batch=TINY_TRAIN_BATCH)


@pytest.fixture(scope="session")
def tiny_image_bundle(tmp_path_factory) -> Path:
    """A host bundle of a tiny MobileNetV2Image: default cut (classifier), SGD, batch 4."""
    from compiler import compile_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny-image"
    return compile_bundle(tiny_image_model(), out=out, **tiny_image_inputs(), train_batch=TINY_TRAIN_BATCH)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread: on a busy 2-core machine, two threads run many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
