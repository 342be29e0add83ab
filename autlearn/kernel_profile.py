"""Where a compiled function's time goes: its kernels, each with its share (`bench compiler --profile`).

TVM 0.27's VM has no `profile()`; its instrument hook is called before and after every call
instruction. Calls nest (a Relax function such as `backbone_loss_adjoint` calls its kernels), so
each call is charged its self time: its wall time less that of the calls inside it. `vm.builtin.*`
calls (allocation, tuple access) are the runtime's, the rest are the module's kernels. The hook
costs a few microseconds a call, so figures are for ranking kernels, not for headline speeds.
Each kernel is also timed alone (`alone_ms`): TVM's time evaluator on the tensors of its last call
in the run, so a kernel's own speed can be compared with a rebuilt one, or with the machine's peak.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass
class KernelTime:
    """One kernel (or runtime builtin): calls per run and self milliseconds per run."""

    name: str
    calls: float
    ms: float
    share: float  # of all self time in the run
    alone_ms: float | None = None  # one call timed alone, for the module's kernels (not the runtime's)

    def to_json(self) -> dict[str, Any]:
        alone = None if self.alone_ms is None else round(self.alone_ms, 6)
        return {"name": self.name, "calls": self.calls, "ms": round(self.ms, 4), "share": round(self.share, 4),
                "alone_ms": alone}


def profile_function(vm: Any, function: str, args: Sequence[Any], *, repeats: int = 5,
                     warmup: int = 2) -> list[KernelTime]:
    """Self time per kernel of `vm[function](*args)`, averaged over `repeats` runs, largest first."""
    fn = vm[function]
    for _ in range(warmup):
        fn(*args)
    totals: dict[str, list[float]] = {}
    stack: list[list[Any]] = []  # [name, start, time of the calls inside]
    last_args: dict[str, list[Any]] = {}

    def instrument(func: Any, name: str, before_run: bool, ret_value: Any, *call_args: Any) -> int:
        now = time.perf_counter()
        if before_run:
            stack.append([name, now, 0.0])
            last_args[name] = list(call_args)
        else:
            _, start, inner = stack.pop()
            elapsed = now - start
            entry = totals.setdefault(name, [0, 0.0])
            entry[0] += 1
            entry[1] += elapsed - inner
            if stack:
                stack[-1][2] += elapsed
        return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual

    vm.set_instrument(instrument)
    try:
        for _ in range(repeats):
            fn(*args)
    finally:
        vm.set_instrument(None)
    total = sum(seconds for _, seconds in totals.values()) or 1.0
    rows = [KernelTime(name, calls / repeats, 1e3 * seconds / repeats, seconds / total,
                       _time_alone(vm, name, last_args[name]))
            for name, (calls, seconds) in totals.items()]
    return sorted(rows, key=lambda row: -row.ms)


def _time_alone(vm: Any, name: str, args: list[Any]) -> float | None:
    """Milliseconds of kernel `name` on `args` by TVM's time evaluator (median); None for what is
    not a compiled kernel of the module (runtime builtins, Relax functions)."""
    import tvm

    if name.startswith("vm.builtin."):
        return None
    library = next((m for m in vm.module.imports if m.implements_function(name)), None)
    if library is None:
        return None
    return 1e3 * library.time_evaluator(name, tvm.cpu(), number=20, repeat=5)(*args).median


def format_profile(title: str, rows: Sequence[KernelTime], top: int = 12) -> str:
    """A Markdown table of the `top` kernels by self time, with the rest summed."""
    lines = [f"{title}", "", "| kernel | calls | ms | share | alone, ms a call |", "| --- | --- | --- | --- | --- |"]
    for row in rows[:top]:
        alone = "-" if row.alone_ms is None else f"{row.alone_ms:.4f}"
        lines.append(f"| `{row.name}` | {row.calls:g} | {row.ms:.3f} | {100 * row.share:.1f}% | {alone} |")
    rest = rows[top:]
    if rest:
        lines.append(f"| {len(rest)} others | {sum(r.calls for r in rest):g} | {sum(r.ms for r in rest):.3f} | "
                     f"{100 * sum(r.share for r in rest):.1f}% | |")
    return "\n".join(lines)
