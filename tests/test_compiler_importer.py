"""Import normalisation: TVM 0.27 imports `x[:, -1]` as an out-of-bounds `take` (TVM_NOTES).

Regression tests: the normalising pass rewrites the negative index, and a model that uses
`x[:, -1]` compiles to a bundle whose forward pass matches PyTorch.
"""
from __future__ import annotations

import numpy as np
import torch
import tvm
from torch import nn
from tvm import relax

from compiler import compile_bundle
from compiler.importer import import_module, normalize_negative_take
from compiler.targets import resolve_target
from device_runtime.manifest import read_manifest


class NegativeLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1]


class NegativeIndexModel(nn.Module):
    """Embedding, `x[:, -1]`, FC: the pattern TVM imports wrongly."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.last, self.fc = nn.Embedding(12, 4), NegativeLast(), nn.Linear(4, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.last(self.embed(x)))


def take_indices(mod: tvm.IRModule) -> list[np.ndarray]:
    found = []

    @relax.expr_functor.visitor
    class Takes(relax.PyExprVisitor):
        def visit_call_(self, call):
            if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.take" \
                    and isinstance(call.args[1], tvm.ir.expr.GenericConst):
                found.append(call.args[1].value.numpy())
            super().visit_call_(call)

    Takes().visit_expr(mod["main"])
    return found


def test_negative_constant_index_is_rewritten():
    x = relax.Var("x", relax.TensorType((2, 5, 3), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        bb.emit_func_output(bb.emit(relax.op.take(x, relax.const(np.array(-1, "int64"), "int64"), axis=1)))
    fixed = normalize_negative_take(bb.get())
    assert [int(i) for i in take_indices(fixed)] == [4]
    vm = relax.VirtualMachine(tvm.compile(fixed, target=resolve_target("host").tvm_target()), tvm.cpu())
    data = np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(data)).numpy(), data[:, -1])


def test_imported_model_has_no_negative_take():
    model = NegativeIndexModel().eval()
    imported = import_module(model, torch.zeros(2, 7, dtype=torch.int64))
    indices = take_indices(imported.mod)
    assert indices and all((i >= 0).all() for i in indices)
    # params keep their state-dict names, the values those of the model
    assert imported.param_names == ["embed.weight", "fc.weight", "fc.bias"]
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(imported.param_values[name], value.numpy())


def test_negative_index_model_compiles_and_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = NegativeIndexModel().eval()
    out = compile_bundle(model, torch.zeros(2, 7, dtype=torch.int64), tmp_path / "b",
                         labels=[f"w{i}" for i in range(12)], lengths=(7,), train_batch=2)
    manifest = read_manifest(out)
    assert manifest.cut_layer == "fc" and manifest.params["trainable"] == ["fc.weight", "fc.bias"]
    assert manifest.input["token_range"] == 12  # the rows of the embedding the input indexes
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(out / "forward.so")), tvm.cpu())
    tokens = np.array([[1, 2, 3, 4, 5, 6, 11]], dtype="int64")
    params = [p.detach().numpy() for p in (model.embed.weight, model.fc.weight, model.fc.bias)]
    logits, cut = vm["forward_b1_l7"](*[tvm.runtime.tensor(a) for a in [tokens, *params]])
    with torch.no_grad():
        want = model.fc(model.embed(torch.from_numpy(tokens))[:, -1]).numpy()
    np.testing.assert_allclose(logits.numpy(), want, rtol=1e-5, atol=1e-6)
    # the cut (default: the input of fc) is the embedding of the last token, read through x[:, -1]
    np.testing.assert_array_equal(cut.numpy(), params[0][tokens[:, -1]])
