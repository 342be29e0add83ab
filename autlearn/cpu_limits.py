"""This CPU's limits on a compiled step, measured: its FP32 peak and the cost of waking the pool.

The nominal peak (cores x 32 FLOP a cycle x the clock /proc/cpuinfo reports) is wrong both ways on
a VM: the core boosts above the reported clock (110 measured against 83 nominal GFLOP/s on one
core of the 2-core EPYC VM of 2026-12-04), and two vCPUs may share one physical core's FMA units.
The kernel keeps FMA_CHAINS independent FMA chains in registers at the target's vector width,
one task a thread, so its rate is the most a compiled kernel can reach here. The same kernel,
short, tells what a parallel loop costs beyond its work (the wait policy's wake of sleeping
workers), the figure behind compiler/schedules.py's PARALLEL_MIN_WORK.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm.script import tirx as T

from compiler.schedules import register_floats

FMA_CHAINS = 10  # independent chains: enough to cover the FMA latency, few enough for AVX2's 16 registers
ITERATIONS = 1_000_000  # per task: about 3 ms on one core, so waking the pool (up to 0.1 ms) hardly counts
WAKE_ITERATIONS = 2_000  # per task: about 6 us, so the wake is most of a parallel call


def _fma_kernel(tasks: int, lanes: int, iterations: int) -> tvm.tirx.PrimFunc:
    @T.prim_func(s_tir=True)
    def fma_chains(x: T.Buffer((2, lanes), "float32"), out: T.Buffer((tasks, FMA_CHAINS, lanes), "float32")):
        for t in T.parallel(tasks):
            with T.sblock("task"):
                acc = T.sblock_alloc_buffer((FMA_CHAINS, lanes), "float32")
                for v in T.unroll(FMA_CHAINS):
                    for lane in T.vectorized(lanes):
                        acc[v, lane] = x[1, lane] * T.float32(v)
                for _ in range(iterations):
                    for v in T.unroll(FMA_CHAINS):
                        for lane in T.vectorized(lanes):
                            acc[v, lane] = acc[v, lane] * x[0, lane] + x[1, lane]
                for v in T.unroll(FMA_CHAINS):
                    for lane in T.vectorized(lanes):
                        out[t, v, lane] = acc[v, lane]

    return fma_chains


def measured_peak_gflops(target: tvm.target.Target, threads: int, repeats: int = 5) -> float:
    """GFLOP/s of `threads` tasks of independent FMAs on TVM's thread pool (sized by the caller),
    the median of `repeats` timings."""
    lanes = register_floats(target)
    seconds = _seconds(target, threads, ITERATIONS, number=3, repeats=repeats)
    return threads * ITERATIONS * FMA_CHAINS * lanes * 2 / seconds / 1e9


def parallel_wake_us(target: tvm.target.Target, threads: int, repeats: int = 9) -> float:
    """Microseconds a parallel loop of `threads` short tasks takes beyond one such task alone, on
    TVM's pool (sized by the caller, its wait policy as the environment sets it)."""
    many = _seconds(target, threads, WAKE_ITERATIONS, number=50, repeats=repeats)
    one = _seconds(target, 1, WAKE_ITERATIONS, number=50, repeats=repeats)
    return max(0.0, (many - one) * 1e6)


def _seconds(target: tvm.target.Target, tasks: int, iterations: int, number: int, repeats: int) -> float:
    """Median seconds a call of `tasks` parallel tasks of `iterations` FMA rounds each."""
    lanes = register_floats(target)
    lib = tvm.tirx.build(_fma_kernel(tasks, lanes, iterations), target=target)
    x = tvm.runtime.tensor(np.array([[0.999] * lanes, [0.001] * lanes], "float32"))  # converges: no overflow
    out = tvm.runtime.tensor(np.zeros((tasks, FMA_CHAINS, lanes), "float32"))
    return lib.time_evaluator(lib.entry_name, tvm.cpu(), number=number, repeat=repeats)(x, out).median
