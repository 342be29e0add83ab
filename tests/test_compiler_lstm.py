"""The fused LSTM (compiler/lstm.py): one projection GEMM and one recurrence kernel per layer,
matching PyTorch for every shape the kernel's blocks and tails cover, and TVM's unrolled ops
wherever a gradient is taken or the kernel does not fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

from cloud_pretrain.models import NextWordLSTM
from compiler.graph import prepare_graph
from compiler.importer import import_module
from compiler.targets import resolve_target
from compiler.tuning import _called_tasks, prepare_for_tuning


class LSTMOutputs(nn.Module):
    """An nn.LSTM's sequence, with its h_n and c_n unless started from a given state (TVM's own
    converter, which then runs, returns the sequence for any index)."""

    def __init__(self, size: int, hidden: int, batch_first: bool = True, initial: bool = False) -> None:
        super().__init__()
        self.lstm, self.initial = nn.LSTM(size, hidden, batch_first=batch_first), initial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = None
        if self.initial:
            batch = x.shape[0] if self.lstm.batch_first else x.shape[1]
            state = (torch.ones(1, batch, self.lstm.hidden_size), torch.ones(1, batch, self.lstm.hidden_size))
        out, (h, c) = self.lstm(x, state)
        return out.flatten() if self.initial else torch.cat([out.flatten(), h.flatten(), c.flatten()])


def calls(mod: tvm.IRModule) -> list[str]:
    """Names of the ops and global functions `main` calls, in order."""
    found = []

    @relax.expr_functor.visitor
    class Calls(relax.PyExprVisitor):
        def visit_call_(self, call):
            if isinstance(call.op, tvm.ir.Op):
                found.append(call.op.name if call.op.name != "relax.call_tir" else call.args[0].name_hint)
            super().visit_call_(call)

    Calls().visit_expr(mod["main"])
    return found


def run(module: nn.Module, x: torch.Tensor, differentiable: bool = False) -> tuple[np.ndarray, list[str]]:
    imported = import_module(module, x, differentiable=differentiable)
    vm = relax.VirtualMachine(tvm.compile(imported.mod, target=resolve_target("host").tvm_target()), tvm.cpu())
    params = [imported.param_values[n] for n in imported.param_names]
    args = [tvm.runtime.tensor(a) for a in [x.numpy(), *params]]
    return vm["main"](*args).numpy(), calls(imported.mod)


@pytest.mark.parametrize("batch, steps, hidden, batch_first", [
    (1, 10, 16, True),  # batch 1: one task, every vector full
    (5, 3, 37, True),  # a row block past the batch, unit and gate tails
    (6, 1, 5, False),  # one step (no recurrence), time-major input
])
def test_fused_lstm_matches_torch_with_its_final_states(batch, steps, hidden, batch_first):
    torch.manual_seed(batch)
    module = LSTMOutputs(7, hidden, batch_first).eval()
    x = torch.randn(batch, steps, 7) if batch_first else torch.randn(steps, batch, 7)
    out, names = run(module, x)
    assert names.count("lstm_recurrence") == 1 and "relax.matmul" in names
    with torch.no_grad():
        np.testing.assert_allclose(out, module(x).numpy(), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("differentiable, initial", [(True, False), (False, True)])
def test_unrolled_lstm_where_a_gradient_is_taken_or_the_state_is_given(differentiable, initial):
    module = LSTMOutputs(4, 6, initial=initial).eval()
    x = torch.randn(2, 3, 4)
    out, names = run(module, x, differentiable)
    with torch.no_grad():
        np.testing.assert_allclose(out, module(x).numpy(), rtol=1e-5, atol=2e-6)
    assert "lstm_recurrence" not in names and names.count("relax.matmul") >= 3  # one a step at least


def test_nwp_forward_is_one_gemm_and_one_recurrence_per_layer():
    """The input projection is hoisted out of the time loop; no matmul runs per step."""
    model = NextWordLSTM(50, 16, 24).eval()
    x = torch.randint(0, 50, (2, 9))
    out, names = run(model, x)
    assert names.count("lstm_recurrence") == 2
    assert names.count("relax.matmul") + names.count("relax.linear") <= 3  # two projections and the FC
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), rtol=1e-4, atol=1e-5)


def test_tuning_has_no_task_for_the_recurrence_kernel():
    """The kernel comes with its schedule: MetaSchedule gets the GEMMs, not the recurrence."""
    target = resolve_target("host").tvm_target()
    imported = import_module(NextWordLSTM(50, 16, 24).eval(), torch.randint(0, 50, (1, 9)))
    prepared = {"forward": prepare_for_tuning(prepare_graph(imported.mod), target)}
    tasks, _, _ = _called_tasks(prepared, target, None)
    names = [task.task_name for task in tasks]
    assert any("matmul" in n for n in names) and not any("lstm" in n for n in names)
