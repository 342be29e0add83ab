"""The fused cross-entropy (compiler/cross_entropy.py): loss and gradients as PyTorch's, for class
counts that fill whole vectors, leave a tail, or fill none; the gradient over the logits one
scheduled kernel, with no pass left for Gradient's unit seed."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

from compiler.cross_entropy import LANES, cross_entropy_kernel
from compiler.graph import prepare_graph
from compiler.importer import import_module
from compiler.schedules import schedule_module
from compiler.targets import resolve_target
from compiler.training import build_training_modules, optimizer_config


def compiled_update(classes: int, batch: int, features: int = 12):
    torch.manual_seed(classes)
    head = nn.Linear(features, classes).eval()
    imported = import_module(head, torch.randn(batch, features), differentiable=True)
    training = build_training_modules(imported, classes, optimizer_config("sgd", 0.1))
    scheduled = schedule_module(prepare_graph(training.update))
    vm = relax.VirtualMachine(tvm.compile(scheduled, target=resolve_target("host").tvm_target()), tvm.cpu())
    return head, imported.param_names, scheduled, vm


@pytest.mark.parametrize("classes, batch", [(10002, 3), (24, 16), (5, 1)])
def test_loss_and_gradients_match_torch(classes, batch):
    head, names, _, vm = compiled_update(classes, batch)
    x = torch.randn(batch, 12) * 3
    labels = torch.randint(0, classes, (batch,))
    params = [head.state_dict()[n].numpy() for n in names]
    out = vm["gradients"](*[tvm.runtime.tensor(a) for a in [x.numpy(), labels.numpy(), *params]])
    loss = nn.functional.cross_entropy(head(x), labels)
    loss.backward()
    assert float(out[0].numpy()) == pytest.approx(loss.item(), rel=1e-5)
    for name, grad in zip(names, list(out)[1:]):
        expected = dict(head.named_parameters())[name].grad.numpy()
        np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-4, atol=1e-7)


def test_the_logits_gradient_is_one_scheduled_kernel_and_the_seed_costs_no_pass():
    _, _, scheduled, _ = compiled_update(10002, 16)
    kernels = {g.name_hint: f for g, f in scheduled.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert kernels["softmax_cross_entropy"].attrs.get("tirx.is_scheduled")
    assert not any("log_softmax" in n or "nll" in n or "ones" in n for n in kernels), sorted(kernels)
    # the weight gradient dz.T @ x reads dz as stored, fused with its SGD step: no transpose kernel
    assert not any("transpose" in n for n in kernels) and any(n.startswith("fused_TN_matmul") for n in kernels), \
        sorted(kernels)
    # 10,002 = 625 x 16 + 2: the gradient's columns are a vector loop and a loop of their own
    script = kernels["softmax_cross_entropy"].script()
    assert re.search(r"for \w+ in range\((T\.int64\()?16\)", script)  # 160K iterations: serial
    assert len(re.findall(rf"T\.vectorized\((T\.int64\()?{LANES}\b", script)) >= 5  # max, exp-sum, inits, dz
    assert re.search(r"range\((T\.int64\()?10000\)?, (T\.int64\()?10002\b", script)  # the tail loop


@pytest.mark.parametrize("rows, classes", [(16, 10002), (2, 16), (1, 7)])
def test_the_kernel_writes_one_hot_only_for_labels_in_range(rows, classes):
    """dz and logsumexp as PyTorch's; a label outside the classes adds no one-hot (the runtime
    refuses such labels before a step; the kernel must not write past the row for one)."""
    kernel = cross_entropy_kernel(rows, classes).with_attr("global_symbol", "main")
    run = tvm.compile(tvm.IRModule({"main": kernel}), target=resolve_target("host").tvm_target()).mod["main"]
    rng = np.random.default_rng(rows)
    z = (rng.standard_normal((rows, classes)) * 4).astype("float32")
    labels = rng.integers(0, classes, rows)
    labels[0] = classes  # out of range
    out = [tvm.runtime.tensor(a) for a in (z, labels, np.zeros((rows, classes), "float32"), np.zeros(rows, "float32"))]
    run(*out)
    zt = torch.tensor(z)
    expected = torch.softmax(zt, 1) / rows
    valid = torch.tensor(labels) < classes
    expected[valid] -= nn.functional.one_hot(torch.tensor(labels[valid.numpy()]), classes) / rows
    np.testing.assert_allclose(out[2].numpy(), expected.numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(out[3].numpy(), torch.logsumexp(zt, 1).numpy(), rtol=1e-6)
