"""Default CPU schedules for what dominates a training step, so an untuned build is not naive.

Untuned TVM lowers every kernel to single-threaded scalar loops (BENCHMARKS.md, the profile):
the FC over 10,002 words alone took 80% of the nwp update. Two rules, for kernels of one block:
- a reduction along the innermost, contiguous axis of its inputs (`x @ W.T`, the `NT_matmul`
  every linear layer becomes; sums along the last axis): the reduction is split by the vector
  width and rfactored into that many partial sums, which vectorise without reassociating floats
  across lanes, and the outer spatial loop is parallel;
- any other kernel whose output's innermost axis is spatial (elementwise ops, the weight
  gradient `dY.T @ X`): that axis becomes the innermost loop, vectorised when the vector width
  divides it, and the outermost loop is parallel when it is spatial;
- a kernel of several loop nests (log_softmax: max, sum, output): each nest's outermost loop
  parallel where it is spatial.
Kernels MetaSchedule already scheduled are left as they are.
"""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.s_tir.schedule import LoopRV, SBlockRV, Schedule

VECTOR_LANES = 8  # fp32 lanes of AVX2 (and two NEON registers); 16 measured slower on AVX-512
OUTER_TILE = 16  # output columns per parallel task


def schedule_module(mod: tvm.IRModule) -> tvm.IRModule:
    """The module legalized, with every kernel no tuning scheduled given the first rule that fits."""
    mod = relax.transform.LegalizeOps()(mod)
    out = tvm.IRModule(attrs=mod.attrs)
    for gvar, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and not (func.attrs and func.attrs.get("tir.is_scheduled")):
            func = _first_rule(func) or func
        out[gvar] = func
    return out


def _first_rule(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc | None:
    """The first rule's schedule of `func`; a rule the schedule refuses leaves the kernel naive."""
    for rule in (schedule_dot_product, schedule_spatial, schedule_loop_nests):
        try:
            scheduled = rule(func)
        except (ValueError, RuntimeError):  # tvm_ffi raises these (InternalError is a RuntimeError)
            continue
        if scheduled is not None:
            return scheduled
    return None


def _is_dot_product(sch: Schedule, block: SBlockRV) -> bool:
    """One reduction axis, last among the block's iterators, read as the last index of every input."""
    stmt = sch.get(block)
    iters = list(stmt.iter_vars)
    reductions = [v for v in iters if v.iter_type == tvm.tirx.IterVar.CommReduce]
    if len(reductions) != 1 or iters[-1] is not reductions[0] or not stmt.reads:
        return False
    k = reductions[0].var
    for region in stmt.reads:
        last = region.region[-1].min
        if not (isinstance(last, tvm.tirx.Var) and last.same_as(k)):
            return False
    extent = reductions[0].dom.extent
    return isinstance(extent, tvm.tirx.IntImm) and int(extent) % VECTOR_LANES == 0


def schedule_dot_product(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc | None:
    """The kernel with its one dot-product block vectorised and parallel; None if it is not one."""
    sch = Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root")) if _has_root(sch) else []
    if len(blocks) != 1 or not _is_dot_product(sch, blocks[0]):
        return None
    block = blocks[0]
    loops = sch.get_loops(block)
    if len(loops) < 2:
        return None
    _, lanes = sch.split(loops[-1], [None, VECTOR_LANES])
    partial = sch.rfactor(lanes, 0)
    *spatial, k_outer, lanes = sch.get_loops(partial)
    tiles, columns = sch.split(spatial[-1], [None, OUTER_TILE])
    sch.reorder(tiles, *spatial[:-1], columns, k_outer, lanes)
    sch.vectorize(lanes)
    sch.parallel(tiles)
    sch.parallel(sch.get_loops(block)[0])  # the sum of the lanes, written back
    return sch.mod["main"].with_attr("tir.is_scheduled", True)


def schedule_spatial(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc | None:
    """The kernel with its output's innermost axis innermost (vectorised when the lanes divide it)
    and its outermost spatial loop parallel; None unless it has one block whose output's last
    index is one of its spatial iterators."""
    sch = Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root")) if _has_root(sch) else []
    if len(blocks) != 1:
        return None
    block = blocks[0]
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if len(stmt.writes) != 1 or len(loops) != len(stmt.iter_vars) or not loops:
        return None
    last = stmt.writes[0].region[-1].min
    position = next((i for i, v in enumerate(stmt.iter_vars) if v.var.same_as(last)), None)
    if position is None or stmt.iter_vars[position].iter_type != tvm.tirx.IterVar.DataPar:
        return None
    order = [i for i in range(len(loops)) if i != position] + [position]
    sch.reorder(*[loops[i] for i in order])
    outermost = loops[order[0]]
    extent = stmt.iter_vars[position].dom.extent
    if isinstance(extent, tvm.tirx.IntImm) and int(extent) % VECTOR_LANES == 0:
        outer, lanes = sch.split(loops[position], [None, VECTOR_LANES])
        sch.vectorize(lanes)
        outermost = outer if order[0] == position else outermost
    if stmt.iter_vars[order[0]].iter_type == tvm.tirx.IterVar.DataPar:
        sch.parallel(outermost)
    return sch.mod["main"].with_attr("tir.is_scheduled", True)


def schedule_loop_nests(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc | None:
    """A kernel of several loop nests (log_softmax over the classes: max, sum, output) with the
    outermost loop of each nest parallel where it is spatial; None if no nest has one."""
    sch = Schedule(func)
    if not _has_root(sch):
        return None
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    outermost: list[LoopRV] = []
    for block in blocks:
        loops = sch.get_loops(block)
        stmt = sch.get(block)
        if (loops and len(loops) == len(stmt.iter_vars) and stmt.iter_vars[0].iter_type == tvm.tirx.IterVar.DataPar
                and not any(sch.get(loops[0]).same_as(sch.get(seen)) for seen in outermost)):
            outermost.append(loops[0])
    if len(blocks) < 2 or not outermost:
        return None
    for loop in outermost:
        sch.parallel(loop)
    return sch.mod["main"].with_attr("tir.is_scheduled", True)


def _has_root(sch: Schedule) -> bool:
    try:
        sch.get_sblock("root")
    except (ValueError, RuntimeError):
        return False
    return True
