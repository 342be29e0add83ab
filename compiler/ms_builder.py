"""A MetaSchedule builder that really builds on this machine.

The stock `LocalBuilder` starts a fresh worker pool for every batch, and each worker imports
torch (through tvm) and `tvm.s_tir.tensor_intrin` (hundreds of TVMScript functions parsed
with `inspect.stack()`): 40-50 s per call, so every candidate times out and tuning runs zero
trials (TVM_NOTES "Speed"). This builder keeps one pool for the whole tuning run and its
workers skip the intrinsic import; candidates still build in separate processes, under a
timeout, so a hung LLVM or a crash costs one candidate, not the tuner.
"""
from __future__ import annotations

import contextlib
import inspect
import linecache
import os
import sys
import tempfile
from collections.abc import Iterator

import cloudpickle
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

# Workers receive `_build_and_export` by value, so they never import this package (or torch
# through it); only tvm itself must be importable there.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _build_and_export(mod: tvm.IRModule, target: tvm.target.Target, cross_compiler: str | None = None) -> str:
    """In a worker: what MetaSchedule's default build does, minus the tensor_intrin import; with
    a cross compiler, a shared object linked for the device (an RPC server there cannot link a tar)."""
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support.cc import cross_compiler as linked_by
    from tvm.support.tar import tar

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    fcompile = tar if cross_compiler is None else linked_by(cross_compiler)
    suffix = tar.output_format if cross_compiler is None else "so"
    path = os.path.join(tempfile.mkdtemp(prefix="autlearn_ms_"), "candidate." + suffix)
    tvm.tirx.build(mod, target=target).export_library(path, fcompile=fcompile)
    return path


@derived_object
class PersistentPoolBuilder(PyBuilder):
    """Builds candidates in a pool of worker processes started once and kept for the run."""

    def __init__(self, max_workers: int = 2, timeout_sec: float = 30.0, cross_compiler: str | None = None) -> None:
        super().__init__()
        if max_workers < 1 or timeout_sec <= 0:
            raise ValueError(f"need max_workers >= 1 and timeout_sec > 0, got {max_workers}, {timeout_sec}")
        self.max_workers = max_workers
        self.timeout_sec = timeout_sec
        self.cross_compiler = cross_compiler  # e.g. aarch64-linux-gnu-gcc: candidates for an RPC device
        self._pool: PopenPoolExecutor | None = None

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        if self._pool is None:
            self._pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec)
        results = []
        jobs = [(inp.mod, inp.target, self.cross_compiler) for inp in build_inputs]
        for res in self._pool.map_with_error_catching(lambda job: _build_and_export(*job), jobs):
            if res.status == StatusKind.COMPLETE:
                results.append(BuilderResult(res.value, None))
            elif res.status == StatusKind.TIMEOUT:
                results.append(BuilderResult(None, f"build timed out after {self.timeout_sec} s"))
            else:
                results.append(BuilderResult(None, f"build failed: {res.value}"))
        return results

    def close(self) -> None:
        """Stops the worker processes (call when tuning ends)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _cheap_stack(context: int = 1) -> list[inspect.FrameInfo]:
    """`inspect.stack()` without its per-frame scan of `sys.modules` (one source line per frame)."""
    frames = []
    frame = sys._getframe(1)
    while frame is not None:
        filename, lineno = frame.f_code.co_filename, frame.f_lineno
        line = linecache.getline(filename, lineno)
        frames.append(inspect.FrameInfo(frame, filename, lineno, frame.f_code.co_name,
                                        [line] if line else None, 0 if line else None))
        frame = frame.f_back
    return frames


@contextlib.contextmanager
def _cheap_inspect_stack() -> Iterator[None]:
    original = inspect.stack
    inspect.stack = _cheap_stack
    try:
        yield
    finally:
        inspect.stack = original


def import_tensor_intrinsics() -> None:
    """Registers TVM's tensor intrinsics in this process in seconds instead of ~35 s.

    MetaSchedule's TuneContext imports `tvm.s_tir.tensor_intrin`; doing it first here with a
    cheap `inspect.stack` makes that later import free.
    """
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    with _cheap_inspect_stack():
        import tvm.s_tir.tensor_intrin  # noqa: F401
