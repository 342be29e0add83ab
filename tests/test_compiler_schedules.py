"""The default CPU schedules: each rule keeps results exact and the dot product gets much faster."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te
from tvm.script import relax as R

from compiler.schedules import schedule_dot_product, schedule_loop_nests, schedule_module, schedule_spatial
from compiler.targets import resolve_target

M, N, K = 16, 1000, 128


def _nt_matmul():
    a, b = te.placeholder((M, K), name="A"), te.placeholder((N, K), name="B")
    k = te.reduce_axis((0, K), name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[j, k], axis=k), name="C")
    return te.create_prim_func([a, b, c])


def _build(func):
    return tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                          target=resolve_target("host").tvm_target())


def _run(func, *arrays, out_shape):
    lib = _build(func)
    out = tvm.runtime.tensor(np.zeros(out_shape, "float32"))
    lib["main"](*[tvm.runtime.tensor(a) for a in arrays], out)
    return lib, out.numpy()


def test_a_dot_product_is_vectorised_parallel_exact_and_faster():
    rng = np.random.default_rng(0)
    a, b = rng.random((M, K), dtype=np.float32), rng.random((N, K), dtype=np.float32)
    naive = _nt_matmul()
    scheduled = schedule_dot_product(naive)
    assert scheduled is not None and scheduled.attrs["tir.is_scheduled"]
    assert "vectorized" in scheduled.script() and "parallel" in scheduled.script()
    fast, got = _run(scheduled, a, b, out_shape=(M, N))
    np.testing.assert_allclose(got, a @ b.T, rtol=1e-5)
    slow, _ = _run(naive, a, b, out_shape=(M, N))
    args = [tvm.runtime.tensor(a), tvm.runtime.tensor(b), tvm.runtime.tensor(np.zeros((M, N), "float32"))]
    times = [lib.time_evaluator("main", tvm.cpu(), number=20, repeat=5)(*args).median for lib in (slow, fast)]
    assert times[1] * 3 < times[0], times  # measured 10-25x on 2 cores


def test_spatial_and_loop_nest_rules_keep_results_exact():
    @tvm.script.ir_module
    class Ops:
        @R.function
        def main(x: R.Tensor((4, 24), "float32"), y: R.Tensor((4, 24), "float32")):
            return (R.add(x, y), R.nn.log_softmax(x, axis=1))

    legal = relax.transform.LegalizeOps()(Ops)
    prims = {gv.name_hint: f for gv, f in legal.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert schedule_spatial(prims["add"]) is not None and schedule_loop_nests(prims["log_softmax"]) is not None
    assert schedule_dot_product(prims["add"]) is None  # no reduction: not a dot product
    scheduled = schedule_module(Ops)
    assert all(f.attrs["tir.is_scheduled"] for f in scheduled.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    vm = relax.VirtualMachine(tvm.compile(scheduled, target=resolve_target("host").tvm_target()), tvm.cpu())
    x, y = np.random.default_rng(1).standard_normal((2, 4, 24)).astype("float32")
    added, log_probs = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(y))
    np.testing.assert_allclose(added.numpy(), x + y, rtol=1e-6)
    want = x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))
    np.testing.assert_allclose(log_probs.numpy(), want, rtol=1e-5, atol=1e-6)


def test_kernels_tuning_scheduled_are_left_alone():
    tuned = _nt_matmul().with_attr("tir.is_scheduled", True)
    mod = schedule_module(tvm.IRModule({"main": tuned}))
    assert "parallel" not in mod["main"].script()
