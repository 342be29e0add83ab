"""The default CPU schedules and graph rewrites: results stay exact, the kernels that dominate a
training step get parallel, vectorised schedules, and the dot product gets much faster."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax, te
from tvm.s_tir.schedule import Schedule
from tvm.script import relax as R
from tvm.target import codegen

from compiler import schedules
from compiler.graph import fast_log_softmax, prepare_graph
from compiler.schedules import schedule_kernel, schedule_module
from compiler.targets import resolve_target

M, N, K = 16, 2002, 128  # N not a multiple of the vector width, as the 10,002-word vocabulary


def _nt_matmul_add(m=M, n=N, k_=K):
    """`x @ W.T + b` as Relax fuses a linear layer: a reduction with an elementwise epilogue."""
    a, b, bias = te.placeholder((m, k_), name="A"), te.placeholder((n, k_), name="B"), te.placeholder((n,), name="bias")
    k = te.reduce_axis((0, k_), name="k")
    c = te.compute((m, n), lambda i, j: te.sum(a[i, k] * b[j, k], axis=k), name="C")
    out = te.compute((m, n), lambda i, j: c[i, j] + bias[j], name="out")
    return te.create_prim_func([a, b, bias, out])


def _build(func):
    return tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                          target=resolve_target("host").tvm_target())


def _run(func, *arrays, out_shape):
    lib = _build(func)
    out = tvm.runtime.tensor(np.zeros(out_shape, "float32"))
    lib["main"](*[tvm.runtime.tensor(a) for a in arrays], out)
    return lib, out.numpy()


def test_a_fused_dot_product_is_vectorised_parallel_exact_and_faster():
    rng = np.random.default_rng(0)
    a, b, bias = rng.random((M, K), dtype=np.float32), rng.random((N, K), dtype=np.float32), rng.random(N, dtype=np.float32)
    naive = _nt_matmul_add()
    scheduled = schedule_kernel(naive)
    assert scheduled is not None and scheduled.attrs["tirx.is_scheduled"]
    script = scheduled.script()
    assert "vectorized" in script and "parallel" in script and 'scope="local"' in script
    fast, got = _run(scheduled, a, b, bias, out_shape=(M, N))
    np.testing.assert_allclose(got, a @ b.T + bias, rtol=1e-5)
    slow, _ = _run(naive, a, b, bias, out_shape=(M, N))
    args = [tvm.runtime.tensor(v) for v in (a, b, bias, np.zeros((M, N), "float32"))]
    times = [lib.time_evaluator("main", tvm.cpu(), number=20, repeat=5)(*args).median for lib in (slow, fast)]
    assert times[1] * 3 < times[0], times  # measured 10-25x on 2 cores


@pytest.mark.parametrize("m, n, k, rows_are_lanes", [(16, 10002, 16, True), (32, 1002, 40, True),
                                                     (1, 1002, 16, False), (16, 62, 1280, False)])
def test_a_batch_of_rows_is_the_vector_lanes_where_the_reduction_is_short(m, n, k, rows_are_lanes):
    """x @ W.T for 16 rows and a rank-16 head: the rows are the lanes (x transposed once a call),
    no sums across lanes; batch 1 or a long reduction keeps partial sums per lane."""
    rng = np.random.default_rng(k)
    a, b, bias = (rng.standard_normal(s).astype("float32") for s in ((m, k), (n, k), (n,)))
    scheduled = schedule_kernel(_nt_matmul_add(m, n, k))
    assert ("A_global" in scheduled.script()) == rows_are_lanes
    fast, got = _run(scheduled, a, b, bias, out_shape=(m, n))
    np.testing.assert_allclose(got, a @ b.T + bias, rtol=1e-4, atol=1e-4)
    if rows_are_lanes and m == 16:
        sch = Schedule(_nt_matmul_add(m, n, k))
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        assert schedules._schedule_dot_product(sch, blocks[0], [blocks[1]], True)
        lanes = _build(sch.mod["main"])
        args = [tvm.runtime.tensor(v) for v in (a, b, bias, np.zeros((m, n), "float32"))]
        times = [lib.time_evaluator("main", tvm.cpu(), number=20, repeat=7)(*args).median for lib in (lanes, fast)]
        assert times[1] < times[0], times  # measured 2.6x at 1 thread


AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})


def test_register_width_follows_the_target():
    assert schedules.register_floats(AVX512) == 16
    assert schedules.register_floats(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})) == 8
    assert schedules.register_floats(resolve_target("linux-arm64").tvm_target()) == 8
    assert schedules.register_floats(None) == 8


@pytest.mark.parametrize("m, lanes", [(16, 16), (32, 16), (8, 8), (24, 8)])
def test_rows_fill_one_avx512_register_where_they_divide_it(m, lanes):
    """On AVX-512 a vector of rows is one 16-lane register and 16 columns share each task; a batch
    that 16 does not divide keeps 8-lane vectors. Results stay exact either way."""
    rng = np.random.default_rng(m)
    a, b, bias = (rng.standard_normal(s).astype("float32") for s in ((m, 16), (1002, 16), (1002,)))
    script = schedule_kernel(_nt_matmul_add(m, 1002, 16), AVX512).script()
    assert re.findall(r"T\.vectorized\((?:T\.int64\()?(\d+)", script) == [str(lanes)] * 3, script  # x.T, init, update
    assert re.search(rf"T\.unroll\((?:T\.int64\()?{lanes}\b", script)  # as many columns per task as lanes
    if "avx512f" in codegen.llvm_get_cpu_features(resolve_target("host").tvm_target()):
        lib = tvm.tirx.build(tvm.IRModule({"main": schedule_kernel(_nt_matmul_add(m, 1002, 16), AVX512)
                                           .with_attr("global_symbol", "main")}), target=AVX512)
        out = tvm.runtime.tensor(np.zeros((m, 1002), "float32"))
        lib["main"](*[tvm.runtime.tensor(v) for v in (a, b, bias)], out)
        np.testing.assert_allclose(out.numpy(), a @ b.T + bias, rtol=1e-4, atol=1e-4)


def test_a_kernel_too_small_for_the_thread_pool_stays_on_the_calling_thread():
    """Waking the pool costs tens of microseconds: a 62-class head's kernels run serial, exact all
    the same; nwp-sized ones stay parallel. The loss kernel follows the same rule."""
    from compiler.cross_entropy import cross_entropy_kernel

    rng = np.random.default_rng(1)
    for n, parallel in ((62, False), (10002, True)):
        assert (16 * n * 16 >= schedules.PARALLEL_MIN_WORK) == parallel  # the premise: rows x columns x reduction
        scheduled = schedule_kernel(_nt_matmul_add(16, n, 16))
        assert ("T.parallel" in scheduled.script()) == parallel
        a, b, bias = (rng.standard_normal(s).astype("float32") for s in ((16, 16), (n, 16), (n,)))
        np.testing.assert_allclose(_run(scheduled, a, b, bias, out_shape=(16, n))[1], a @ b.T + bias,
                                   rtol=1e-4, atol=1e-4)
    assert "T.parallel" not in cross_entropy_kernel(16, 62).script()
    assert "T.parallel" in cross_entropy_kernel(256, 10002).script()


def test_fused_training_kernels_keep_results_exact():
    """The weight gradient fused with its SGD step, log_softmax and its gradient, an elementwise op."""
    @tvm.script.ir_module
    class Ops:
        @R.function
        def main(x: R.Tensor((4, 1002), "float32"), g: R.Tensor((1002, 4), "float32"),
                 h: R.Tensor((4, 24), "float32"), w: R.Tensor((1002, 24), "float32")):
            with R.dataflow():
                log_probs = R.nn.log_softmax(x, axis=1)
                back = R.subtract(x, R.multiply(R.exp(log_probs), R.sum(x, axis=1, keepdims=True)))
                step = R.subtract(w, R.multiply(R.const(0.05, "float32"), R.matmul(g, h)))
                out = (log_probs, back, step, R.add(x, x))
                R.output(out)
            return out

    scheduled = schedule_module(prepare_graph(Ops))
    prims = [f for f in scheduled.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert prims and all(f.attrs.get("tirx.is_scheduled") for f in prims)
    assert any("fast_log_softmax" in gv.name_hint for gv in scheduled.functions)
    vm = relax.VirtualMachine(tvm.compile(scheduled, target=resolve_target("host").tvm_target()), tvm.cpu())
    rng = np.random.default_rng(1)
    x, g, h, w = (rng.standard_normal(s).astype("float32") for s in ((4, 1002), (1002, 4), (4, 24), (1002, 24)))
    log_probs, back, step, doubled = (t.numpy() for t in vm["main"](*map(tvm.runtime.tensor, (x, g, h, w))))
    want = x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))
    np.testing.assert_allclose(log_probs, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(back, x - np.exp(want) * x.sum(1, keepdims=True), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(step, w - 0.05 * (g @ h), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(doubled, 2 * x, rtol=1e-6)


def test_fast_log_softmax_matches_numpy_on_every_axis_and_width():
    rng = np.random.default_rng(2)
    for shape, axis in (((3, 10002), 1), ((3, 16), 1), ((3, 5), 1), ((4, 6, 3), 1), ((5, 7), 0)):
        x = te.placeholder(shape, name="x")
        func = te.create_prim_func([x, fast_log_softmax(x, axis)])
        value = (rng.standard_normal(shape) * 4).astype("float32")
        _, got = _run(func, value, out_shape=shape)
        top = value.max(axis, keepdims=True)
        want = value - top - np.log(np.exp(value - top).sum(axis, keepdims=True))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5, err_msg=f"{shape} axis {axis}")


def test_kernels_tuning_scheduled_are_left_alone():
    tuned = _nt_matmul_add().with_attr("tirx.is_scheduled", True)
    mod = schedule_module(tvm.IRModule({"main": tuned}))
    assert "parallel" not in mod["main"].script()


def test_rows_as_lanes_also_where_the_product_is_the_kernels_output():
    """No epilogue: the sums are kept in a buffer of the kernel's own, then written out."""
    a, b = te.placeholder((16, 24), name="A"), te.placeholder((40, 24), name="B")
    k = te.reduce_axis((0, 24), name="k")
    c = te.compute((16, 40), lambda i, j: te.sum(a[i, k] * b[j, k], axis=k), name="C")
    scheduled = schedule_kernel(te.create_prim_func([a, b, c]))
    assert "A_global" in scheduled.script()
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((16, 24)).astype("float32"), rng.standard_normal((40, 24)).astype("float32")
    _, got = _run(scheduled, x, w, out_shape=(16, 40))
    np.testing.assert_allclose(got, x @ w.T, rtol=1e-5, atol=1e-5)


def _tn_matmul_sgd(n, k_, batch=16):
    """`w - lr * dz.T @ x`, a linear layer's weight gradient fused with its SGD step."""
    from compiler.graph import tn_matmul

    dz, x, w = te.placeholder((batch, n), name="dz"), te.placeholder((batch, k_), name="x"), te.placeholder((n, k_), name="w")
    grad = tn_matmul(dz, x)
    step = te.compute(grad.shape, lambda i, j: w[i, j] - grad[i, j] * tvm.tirx.const(0.05, "float32"), name="step")
    return te.create_prim_func([dz, x, w, step])


@pytest.mark.parametrize("n, k", [(10002, 128), (62, 1280), (1001, 24)])
def test_a_weight_gradient_sums_in_registers_over_the_batch_and_steps_in_the_same_task(n, k):
    """dz.T @ x with its SGD step: a tile's sums stay in registers over the 16 rows of the batch (the
    reduction outside the unrolled vectors), on the stack rather than in a workspace allocated per
    task, and the step writes the tile; results exact, and faster than summing in memory."""
    rng = np.random.default_rng(n)
    dz, x, w = (rng.standard_normal(s).astype("float32") for s in ((16, n), (16, k), (n, k)))
    target = resolve_target("host").tvm_target()
    scheduled = schedule_kernel(_tn_matmul_sgd(n, k), target)
    script = scheduled.script()
    assert re.search(r"for r in range\(16\):\s+for \w+ in T\.unroll\(1\):\s+for \w+ in T\.unroll\(\d+\):\s+"
                     r"for \w+ in T\.vectorized", script), script
    lib = tvm.tirx.build(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}), target=target)
    assert "TVMBackendAllocWorkspace" not in lib.inspect_source("ll")
    out = tvm.runtime.tensor(np.zeros((n, k), "float32"))
    lib["main"](*[tvm.runtime.tensor(v) for v in (dz, x, w)], out)
    np.testing.assert_allclose(out.numpy(), w - 0.05 * (dz.T @ x), rtol=1e-5, atol=1e-5)
    if (n, k) == (62, 1280):
        sch = Schedule(_tn_matmul_sgd(n, k))
        gradient, step = sch.get_child_blocks(sch.get_sblock("root"))
        assert schedules._schedule_spatial(sch, gradient, [step], False)
        in_memory = tvm.tirx.build(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}),
                                   target=target)
        args = [tvm.runtime.tensor(v) for v in (dz, x, w, np.zeros((n, k), "float32"))]
        times = [f.time_evaluator("main", tvm.cpu(), number=20, repeat=7)(*args).median for f in (in_memory, lib)]
        assert times[1] < times[0], times  # measured 1.9x at 1 thread on AVX-512


def test_a_long_reduction_takes_rows_as_lanes_where_they_fill_an_avx512_register():
    """image's classifier (16 rows, 1,280 deep): rows as 16 lanes on AVX-512, lanes summed per
    output (the lanes rule) where vectors are 8 wide."""
    assert "A_global" in schedule_kernel(_nt_matmul_add(16, 62, 1280), AVX512).script()
    assert "A_global" not in schedule_kernel(_nt_matmul_add(16, 62, 1280),
                                             tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})).script()
