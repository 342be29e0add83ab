"""A tuned module ships only where it beats the default build end to end.

MetaSchedule times each kernel alone, in a runner process, beside builders compiling on the
same cores; inside a module the same kernel can run at another speed. nwp's batch-1 FC was
measured at 183 us tuned against 692 us default there, and takes 0.2 ms default inside the
forward: the tuned forward lost, 0.63 against 0.46 ms. So once tuning is done each module is
built both ways and its entry points are timed side by side on the same inputs, in rounds that
alternate the two builds; the slower build is dropped. Inputs are random floats and zero
integers (a valid token id and label in any model).
"""
from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax

from compiler.schedules import schedule_module

ROUNDS = 7  # alternating samples of each build; medians
MIN_SAMPLE_MS = 20  # each sample repeats the call for at least this long


@dataclass(frozen=True)
class ModuleRace:
    """One module's entry points, summed: milliseconds of the default and of the tuned build, at
    the thread count of TVM's pool in this process."""

    default_ms: float
    tuned_ms: float
    threads: int

    @property
    def tuned_wins(self) -> bool:
        return self.tuned_ms < self.default_ms

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ships": "tuned" if self.tuned_wins else "default"}


def race_modules(default: Mapping[str, tvm.IRModule], tuned: Mapping[str, tvm.IRModule],
                 target: tvm.target.Target, called: Mapping[str, Sequence[str]] | None,
                 rounds: int = ROUNDS) -> dict[str, ModuleRace]:
    """Per module that tuning changed and a device calls (`called`: entry points per key; None:
    every public function): its default (`schedule_module(default[key])`, the untuned build)
    against its tuned build, on this machine."""
    races = {}
    for key, mod in tuned.items():
        entries = list(called[key]) if called is not None else public_names(mod)
        if not entries or _scheduled_kernels(mod) == _scheduled_kernels(default[key]):
            continue
        vms = [relax.VirtualMachine(tvm.compile(schedule_module(m, target), target=target), tvm.cpu())
               for m in (default[key], mod)]
        rng = np.random.default_rng(0)
        args = {name: _random_args(default[key][name], rng) for name in entries}
        samples: list[list[float]] = [[], []]
        for _ in range(rounds):
            for side, vm in enumerate(vms):
                samples[side].append(sum(_sample_ms(vm, name, args[name]) for name in entries))
        races[key] = ModuleRace(*(round(statistics.median(s), 4) for s in samples),
                                threads=int(tvm.get_global_func("runtime.NumThreads")()))
    return races


def public_names(mod: tvm.IRModule) -> list[str]:
    """The module's entry points: the Relax functions a caller can look up by name."""
    return [gv.name_hint for gv, f in mod.functions.items()
            if isinstance(f, relax.Function) and f.attrs is not None and "global_symbol" in f.attrs]


def _scheduled_kernels(mod: tvm.IRModule) -> int:
    """PrimFuncs already scheduled (by MetaSchedule's records, or written with their schedule)."""
    return sum(1 for f in mod.functions.values()
               if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and f.attrs.get("tirx.is_scheduled"))


def _random_args(func: relax.Function, rng: np.random.Generator) -> list[tvm.runtime.Tensor]:
    out = []
    for param in func.params:
        ty = param.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            raise ValueError(f"parameter {param.name_hint} of a raced function has no static tensor type")
        shape, dtype = tuple(int(d) for d in ty.shape), str(ty.dtype)
        value = np.zeros(shape, dtype) if "int" in dtype else (0.1 * rng.standard_normal(shape)).astype(dtype)
        out.append(tvm.runtime.tensor(value))
    return out


def _sample_ms(vm: relax.VirtualMachine, name: str, args: list[tvm.runtime.Tensor]) -> float:
    timer = vm.time_evaluator(name, tvm.cpu(), number=1, repeat=1, min_repeat_ms=MIN_SAMPLE_MS)
    return timer(*args).mean * 1e3
