"""The ExecuTorch training baseline steps exactly like eager PyTorch (TorchHeadStep)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autlearn.torch_step import TorchHeadStep
from compiler.executorch_baseline import build_executorch_trainer, executorch_available

pytestmark = pytest.mark.skipif(executorch_available() is not None, reason=str(executorch_available()))

LR = 0.1


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5))


def _conv_head() -> nn.Module:
    """The image task's shape of trainable part: a classifier after a pooled feature."""
    return nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


@pytest.mark.parametrize("make_head, cut_shape", [(lambda: nn.Linear(8, 5), (4, 8)), (_mlp, (4, 8)),
                                                  (_conv_head, (4, 8, 3, 3))], ids=["linear", "mlp", "conv"])
def test_two_steps_match_torch(tmp_path, make_head, cut_shape):
    torch.manual_seed(0)
    head = make_head()
    rng = np.random.default_rng(0)
    cuts = [rng.standard_normal(cut_shape).astype(np.float32) for _ in range(2)]
    labels = [rng.integers(0, 5, size=cut_shape[0]).astype(np.int64) for _ in range(2)]
    et = build_executorch_trainer(head, torch.from_numpy(cuts[0]), torch.from_numpy(labels[0]), lr=LR,
                                  workdir=tmp_path, threads=1)
    reference = TorchHeadStep(head, LR)
    assert set(et.parameters()) == {n for n, _ in head.named_parameters()}
    for cut, y in zip(cuts, labels):
        want = reference(torch.from_numpy(cut), torch.from_numpy(y))
        assert et.step(cut, y) == pytest.approx(want, rel=1e-5)
    got = et.parameters()
    for name, p in reference.head.named_parameters():
        np.testing.assert_allclose(got[name].numpy(), p.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    initial = dict(head.named_parameters())
    assert all(not torch.equal(got[n], initial[n]) for n in got)  # every parameter trained
