"""The CPU's measured limits: the FP32 peak bounds every compiled kernel, and a parallel loop's wake
cost is a small, finite figure."""
from __future__ import annotations

import numpy as np
import tvm
from test_compiler_schedules import _build, _nt_matmul_add

from autlearn.cpu_limits import measured_peak_gflops, parallel_wake_us
from compiler.schedules import schedule_kernel
from compiler.targets import resolve_target


def test_the_measured_peak_bounds_a_compiled_gemm_and_is_physically_possible():
    target = resolve_target("host").tvm_target()
    peak = measured_peak_gflops(target, 1)
    assert peak < 64 * 6.0, peak  # two 16-lane FMAs a cycle at 6 GHz: a faster loop did no work
    m, n, k = 16, 2002, 128
    lib = _build(schedule_kernel(_nt_matmul_add(m, n, k), target))
    args = [tvm.runtime.tensor(np.ones(s, "float32")) for s in ((m, k), (n, k), (n,), (m, n))]
    seconds = lib.time_evaluator("main", tvm.cpu(), number=20, repeat=5)(*args).median
    gemm = 2 * m * n * k / seconds / 1e9
    assert gemm < peak * 1.05, (gemm, peak)  # what the peak is for: no kernel beats it


def test_a_parallel_loops_wake_cost_is_small_and_finite():
    wake = parallel_wake_us(resolve_target("host").tvm_target(), 2)
    assert 0 <= wake < 5000, wake
