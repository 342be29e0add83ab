"""Default CPU schedules for what dominates a training step, so an untuned build is not naive.

Untuned TVM lowers every kernel to single-threaded scalar loops (BENCHMARKS.md, the profile):
the FC over 10,002 words alone took 80% of the nwp update. Every entry point is first made one
dataflow graph (compiler/graph.py) so that Relax fuses across the loss, its gradient and the
optimizer: the weight gradient and its SGD step become one kernel, the FC and its bias another.
A fused kernel is scheduled around its main block (its one reduction, or its last block):
- elementwise producers are inlined into their consumers;
- a reduction along the innermost, contiguous axis of its inputs (`x @ W.T`, the `NT_matmul`
  every linear layer becomes) keeps a vector of partial sums for each of 4 rows in registers
  (the lanes are summed at the end, so floats are not reassociated across lanes) over tiles of
  output columns whose weights fit in L1, the tiles parallel;
- the weight gradient `dY.T @ X` (a short reduction over the batch, the output's columns
  contiguous in X): a tile of sums in registers over the whole reduction, the optimizer's step
  written from them;
- any other main block whose output's innermost axis is spatial (elementwise ops, convolutions):
  that axis becomes the innermost loop, vectorised when the vector width divides it, the
  reductions outside the row (a long row: around each vector, whose sums stay in a register),
  the other spatial axes one parallel loop;
- what follows the main block (bias, the optimizer's step) runs in the main block's loop, on
  each output tile while it is in cache;
- a kernel of several reductions over rows (log_softmax: max, sum, output) runs row by row in one
  parallel loop;
- a kernel too small to pay for waking the thread pool (PARALLEL_MIN_WORK) gets no parallel loop.
Kernels MetaSchedule already scheduled are left as they are.
"""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.s_tir.schedule import LoopRV, SBlockRV, Schedule
from tvm.target import codegen

VECTOR_LANES = 8  # fp32 lanes of AVX2 (and two NEON registers); 16 measured slower on AVX-512
OUTER_TILE = 16  # output columns per parallel task: 16 rows of a 128-wide weight fit in L1
ROW_BLOCK = 4  # rows of the input per load of a weight vector (4 accumulators in registers)
# An output row this short stays in L1 over the reductions of `_schedule_spatial`: summing into it
# there beat summing each vector in a register (measured, 2 threads, before weight gradients had
# `_schedule_outer_product`: nwp's 128-wide one 0.39 against 0.58 ms; image's 1280-wide one 0.058
# against 0.039 ms the other way). Also the longest reduction the register-blocked rules take.
SHORT_ROW = 512
LONG_ROW = 4096  # the longest reduction whose rows-as-lanes dot products fill 16-lane registers
COLUMN_BLOCK = 8  # columns per task of a row-vectorised x @ W.T: 8 x 2 vectors of sums in registers
# A parallel loop wakes the thread pool. With a passive wait (TVM_THREAD_POOL_SPIN_COUNT=0) that is
# a futex wake of a sleeping core: 13-35 us a kernel at 2 threads on the 2-core VM of 2026-12-02 (an
# empty 64-element loop; 3 us spinning), 4 us on an earlier host. A kernel whose main block runs
# fewer than 2M times (under about 50 us on one core) stays on the calling thread: at 2 threads
# image's update step went 0.149 -> 0.120 ms and nwp's batch-1 forward 0.34 -> 0.27 ms against
# 1 << 15, image's forward 1.83 -> 1.95 ms (a one-off script, side by side, 60 rounds). The wake moves
# with the host's load (5-60 us on 2026-12-04): `bench compiler` records it (autlearn/cpu_limits.py).
PARALLEL_MIN_WORK = 1 << 21
ACCUMULATORS = 8  # vectors of sums kept in registers: half of AVX2's 16 (AVX-512 has 32: twice as many)
# TVM 0.27 puts a constant-size global buffer under this many bytes on the stack (LowerTVMBuiltin's
# kMaxStackAlloca); a larger one, or any "local" one, costs a workspace allocation and free per task:
# nwp's weight gradient with 2 x 8 vectors of sums (1,024 bytes) took 0.58 against 0.47 ms with 8
# (kernel alone, 1 thread, a one-off script).
STACK_BYTES = 1024
DATA_PAR, REDUCE = tvm.tirx.IterVar.DataPar, tvm.tirx.IterVar.CommReduce


def schedule_module(mod: tvm.IRModule, target: tvm.target.Target | None = None) -> tvm.IRModule:
    """The module legalized and fused, with every kernel no tuning scheduled by `schedule_kernel`
    for `target` (None: any CPU with 8-lane vectors)."""
    mod = tvm.transform.Sequential([
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ])(mod)
    out = tvm.IRModule(attrs=mod.attrs)
    for gvar, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and not (func.attrs and func.attrs.get("tirx.is_scheduled")):
            func = schedule_kernel(func, target) or func
        out[gvar] = func
    return out


def schedule_kernel(func: tvm.tirx.PrimFunc, target: tvm.target.Target | None = None) -> tvm.tirx.PrimFunc | None:
    """`func` scheduled as the module docstring says for `target`; None where no rule fits (it
    stays naive)."""
    try:
        sch = Schedule(func)
        blocks = _blocks(sch)
        if not blocks:
            return None
        for block in blocks[:-1]:  # the last block writes the output
            if _is_spatial(sch, block):
                _try(sch.compute_inline, block)
        blocks = _blocks(sch)
        reductions = [b for b in blocks if not _is_spatial(sch, b)]
        if len(reductions) > 1:
            scheduled = _schedule_rows(sch, blocks, max(_iterations(sch, b) for b in blocks) >= PARALLEL_MIN_WORK)
        else:
            main = reductions[0] if reductions else blocks[-1]
            if blocks.index(main) != 0:
                return None  # spatial blocks before the main one that could not be inlined
            epilogue = blocks[1:]
            spread = _iterations(sch, main) >= PARALLEL_MIN_WORK
            if _is_dot_product(sch, main):
                scheduled = _try_rule(sch, _schedule_column_block, main, epilogue, register_floats(target), spread)
                if scheduled:
                    sch = scheduled
                else:
                    scheduled = _schedule_dot_product(sch, main, epilogue, spread)
            else:
                scheduled = _try_rule(sch, _schedule_outer_product, main, epilogue, register_floats(target), spread)
                if scheduled:
                    sch = scheduled
                else:
                    scheduled = _schedule_spatial(sch, main, epilogue, spread)
    except (ValueError, RuntimeError):  # tvm_ffi raises these (InternalError is a RuntimeError)
        return None
    return sch.mod["main"].with_attr("tirx.is_scheduled", True) if scheduled else None


def _try_rule(sch: Schedule, rule, block: SBlockRV, *args) -> Schedule | None:
    """`rule` applied to a copy of `sch`: the copy where it applied, else None (a rule may fail
    half-way, and the next rule then starts afresh)."""
    trial = sch.copy()
    try:
        return trial if rule(trial, block, *args) else None
    except (ValueError, RuntimeError):
        return None


def _schedule_dot_product(sch: Schedule, block: SBlockRV, epilogue: list[SBlockRV], spread: bool) -> bool:
    """Vector partial sums in registers, lanes summed once per output, the epilogue after each."""
    *spatial, k = sch.get_loops(block)
    if not spatial:
        return False
    _, lanes = sch.split(k, [None, VECTOR_LANES])
    partial = sch.rfactor(lanes, len(spatial))
    *spatial, lanes = sch.get_loops(block)
    tiles, columns = sch.split(spatial[-1], [None, OUTER_TILE])
    rows = []  # ROW_BLOCK rows share each load of the weight: their partial sums stay in registers
    if len(spatial) > 1 and _extent(sch, spatial[-2]) % ROW_BLOCK == 0:
        outer_rows, inner_rows = sch.split(spatial[-2], [None, ROW_BLOCK])
        spatial, rows = [*spatial[:-2], outer_rows], [inner_rows]
    else:
        spatial = spatial[:-1]
    sch.reorder(tiles, *spatial, columns, *rows, lanes)
    sch.compute_at(partial, columns)
    sch.set_scope(partial, 0, "local")
    _attach(sch, epilogue, columns)
    # compute_at follows rfactor's iterators: the lanes, the rows of the block, the reduction
    lanes, *rows, k_outer = sch.get_loops(partial)[-2 - len(rows):]
    if _extent(sch, lanes) != VECTOR_LANES:
        raise ValueError("rfactor placed the partial sums' lanes elsewhere")
    sch.reorder(k_outer, *rows, lanes)
    for row in rows:
        sch.unroll(row)
    sch.vectorize(lanes)
    if spread:
        sch.parallel(tiles)
    _decompose(sch, partial, k_outer)
    return True


def register_floats(target: tvm.target.Target | None) -> int:
    """fp32 lanes of the target's widest vector register: 16 with AVX-512, else VECTOR_LANES."""
    if target is None or target.kind.name != "llvm":
        return VECTOR_LANES
    return 16 if "avx512f" in codegen.llvm_get_cpu_features(target) else VECTOR_LANES


def _schedule_column_block(sch: Schedule, block: SBlockRV, epilogue: list[SBlockRV], register: int,
                           spread: bool) -> bool:
    """`x @ W.T` for a batch of rows that fills whole vectors and a short reduction: the rows are
    the lanes. x is transposed once per call (it is small), each task takes COLUMN_BLOCK columns
    of W, and for every k one broadcast element of W times a vector of rows adds into each
    column's sums, which stay in registers; nothing is summed across lanes. With a 16-wide
    reduction, 8 lanes' partial sums per output (`_schedule_dot_product`) cost more in their final
    sums than in the products (nwp's FC at rank 16, 1 thread: 0.29 against 0.11 ms).
    Where the rows fill the target's `register` (16 lanes of AVX-512), a vector is one register and
    16 columns' sums take 16 of its 32: 0.157 against 0.121 ms for that FC; on AVX2 two registers
    per vector and 8 columns (16 of its 16 registers) is the most that does not spill. A long
    reduction (image's classifier: 1,280) suits 16 lanes too (0.044 -> 0.037 ms), not 8 (0.046 ->
    0.051 ms built for AVX2), where the lanes rule keeps it (kernel alone, a one-off script)."""
    loops = sch.get_loops(block)
    iters = list(sch.get(block).iter_vars)
    if len(loops) != 3 or len(iters) != 3:
        return False
    rows, columns, k = loops
    wide = register > VECTOR_LANES and _extent(sch, rows) % register == 0
    if _extent(sch, rows) % VECTOR_LANES or not 0 < _extent(sch, k) <= (LONG_ROW if wide else SHORT_ROW):
        return False
    row_var = iters[0].var
    x_index = next((i for i, r in enumerate(sch.get(block).reads)
                    if len(r.region) == 2 and isinstance(r.region[0].min, tvm.tirx.Var)
                    and r.region[0].min.same_as(row_var)), None)
    if x_index is None:
        return False
    if not epilogue:  # the output is a parameter, whose layout is not the kernel's to change
        epilogue = [sch.cache_write(block, 0, "global")]
    transposed = sch.cache_read(block, x_index, "global")
    sch.transform_layout(block, ("read", x_index), lambda r, c: (c, r))
    sch.transform_layout(block, ("write", 0), lambda r, c: (c, r))
    lanes, block_columns = ((register, COLUMN_BLOCK * register // VECTOR_LANES)
                            if _extent(sch, rows) % register == 0 else (VECTOR_LANES, COLUMN_BLOCK))
    # x.T written a vector of rows at a time (a gather of one column of x): written a row of x at a
    # time it strode over a buffer larger than L1, 16 us of image's 39 us FC (16 x 1,280 rows; a one-off
    # script fitting FCs of 3 and 4 column tiles).
    copy_rows, copy_k = sch.get_loops(transposed)
    sch.reorder(copy_k, copy_rows)
    _unroll_vectorize(sch, sch.split(copy_rows, [None, lanes]))
    tiles, inner_columns = sch.split(columns, [None, block_columns])
    row_vectors, lanes = sch.split(rows, [None, lanes])
    sch.reorder(tiles, k, inner_columns, row_vectors, lanes)
    for stage in epilogue:
        sch.reverse_compute_at(stage, tiles)
    sch.set_scope(block, 0, "local")
    sch.unroll(inner_columns)
    sch.unroll(row_vectors)
    sch.vectorize(lanes)
    if spread:
        sch.parallel(tiles)
    sch.decompose_reduction(block, k)
    return True


def _schedule_outer_product(sch: Schedule, block: SBlockRV, epilogue: list[SBlockRV], register: int,
                            spread: bool) -> bool:
    """`out[i, j] = sum_r a[.., i] * b[r, j]` over a short reduction (`dY.T @ X`, every linear
    layer's weight gradient, whose reduction is the batch) with its epilogue (the optimizer's
    step): the sums of a block of output rows and columns stay in registers over the whole
    reduction (ACCUMULATORS vectors), each a[r, i] broadcast times a vector of b's row r, and the
    epilogue writes the block while the sums are still there. Summing into the output in memory
    (`_schedule_spatial`) kept a full-size intermediate and a load and a store around every
    product. Kernel alone with its SGD step, 1 thread, on AVX-512: nwp's 10,002 x 128 gradient
    0.50 -> 0.46 ms, image's 62 x 1,280 one 0.055 -> 0.029 ms."""
    stmt = sch.get(block)
    loops, iters = sch.get_loops(block), list(stmt.iter_vars)
    if len(loops) != 3 or [v.iter_type for v in iters] != [DATA_PAR, DATA_PAR, REDUCE] or len(stmt.reads) != 2:
        return False
    i_var, j_var, r_var = (v.var for v in iters)
    write = [r.min for r in stmt.writes[0].region]
    if len(write) != 2 or not (write[0].same_as(i_var) and write[1].same_as(j_var)):
        return False
    indices = [[r.min for r in region.region] for region in stmt.reads]
    if not any(len(ix) == 2 and ix[0].same_as(r_var) and ix[1].same_as(j_var) for ix in indices):
        return False  # no input read as rows of the reduction with the output's columns contiguous
    i_loop, j_loop, r_loop = loops
    columns, depth = _extent(sch, j_loop), _extent(sch, r_loop)
    lanes = register if columns % register == 0 else VECTOR_LANES
    if not columns or columns % lanes or not 0 < depth <= SHORT_ROW:
        return False
    budget = min(ACCUMULATORS * (2 if register > VECTOR_LANES else 1), STACK_BYTES // 4 // lanes - 1)
    vectors = max(v for v in range(1, min(columns // lanes, budget) + 1) if (columns // lanes) % v == 0)
    rows = budget // vectors if _extent(sch, i_loop) % (budget // vectors) == 0 else 1
    chunks, vector, lane = sch.split(j_loop, [None, vectors, lanes])
    row_blocks, row = sch.split(i_loop, [None, rows])
    sch.reorder(chunks, row_blocks, r_loop, row, vector, lane)
    tiles = sch.fuse(chunks, row_blocks)  # the outermost loop; the sums: a global buffer of a tile, on the stack
    for stage in epilogue:
        sch.reverse_compute_at(stage, tiles)
        *stage_rows, stage_columns = sch.get_loops(stage)[1:]  # a row loop of 1 is left out
        _unroll_vectorize(sch, [*stage_rows, *sch.split(stage_columns, [None, lanes])])
    _unroll_vectorize(sch, [row, vector, lane])
    if spread:
        sch.parallel(tiles)
    init = sch.decompose_reduction(block, r_loop)
    _unroll_vectorize(sch, sch.get_loops(init)[1:])
    return True


def _unroll_vectorize(sch: Schedule, loops: list[LoopRV]) -> None:
    """The last loop vectorised, the others unrolled: one tile's registers, indexed by constants."""
    for loop in loops[:-1]:
        sch.unroll(loop)
    sch.vectorize(loops[-1])


def _schedule_spatial(sch: Schedule, block: SBlockRV, epilogue: list[SBlockRV], spread: bool) -> bool:
    """The output's innermost axis innermost (vectorised where the lanes divide it, the reductions
    around each vector), the other spatial axes one parallel loop, the epilogue after each of its
    iterations."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if len(stmt.writes) != 1 or len(loops) != len(stmt.iter_vars) or not loops or not stmt.writes[0].region:
        return False
    last = stmt.writes[0].region[-1].min
    position = next((i for i, v in enumerate(stmt.iter_vars) if v.var.same_as(last)), None)
    if position is None or stmt.iter_vars[position].iter_type != DATA_PAR:
        return False
    kinds = [v.iter_type for v in stmt.iter_vars]
    order = ([i for i in range(len(loops)) if i != position and kinds[i] == DATA_PAR]
             + [i for i in range(len(loops)) if kinds[i] == REDUCE] + [position])
    sch.reorder(*[loops[i] for i in order])
    if kinds[order[0]] != DATA_PAR:
        return False
    outer_spatial = [loops[i] for i in order if i != position and kinds[i] == DATA_PAR]
    # a batch of 1 leaves the first axis nothing to spread: the outer spatial axes go parallel as one
    outermost = sch.fuse(*outer_spatial) if len(outer_spatial) > 1 else loops[order[0]]
    if epilogue:
        if order[0] == position:
            return False  # one spatial axis: the epilogue could only follow the whole output
        _attach(sch, epilogue, outermost)
    extent = stmt.iter_vars[position].dom.extent
    reductions = [loops[i] for i in order if kinds[i] == REDUCE]
    if isinstance(extent, tvm.tirx.IntImm) and int(extent) % VECTOR_LANES == 0:
        outer, lanes = sch.split(loops[position], [None, VECTOR_LANES])
        if reductions and int(extent) > SHORT_ROW:  # each vector sums in a register over the reductions
            sch.reorder(outer, *reductions, lanes)
        sch.vectorize(lanes)
        outermost = outer if order[0] == position else outermost
    if spread:
        sch.parallel(outermost)
    if reductions:
        _decompose(sch, block, reductions[0])
    return True


def _attach(sch: Schedule, epilogue: list[SBlockRV], anchor: LoopRV) -> None:
    """The blocks after the main one, computed at `anchor` on the tile it has just finished."""
    for block in epilogue:
        sch.reverse_compute_at(block, anchor)
        inner = sch.get_loops(block)[-1]
        if not sch.get(inner).same_as(sch.get(anchor)) and _extent(sch, inner) % VECTOR_LANES == 0:
            _, lanes = sch.split(inner, [None, VECTOR_LANES])
            sch.vectorize(lanes)


def _decompose(sch: Schedule, block: SBlockRV, loop: LoopRV) -> None:
    """The reduction's init hoisted above `loop` (last: parallel and vectorize refuse a loop over
    a decomposed reduction), the init vectorised where its innermost loop is."""
    init = sch.decompose_reduction(block, loop)
    inner = sch.get_loops(init)[-1]
    if _extent(sch, inner) % VECTOR_LANES == 0:
        _try(sch.vectorize, inner)


def _schedule_rows(sch: Schedule, blocks: list[SBlockRV], spread: bool) -> bool:
    """Every block computed row by row inside the first output block's outermost (parallel) loop
    (the last block's, but for a kernel with two outputs, one read by the other); in each, a spatial
    axis that fills whole vectors (compiler/graph.py's partial results per lane) goes inside the
    reduction and is vectorised."""
    params = list(sch.mod["main"].params)
    anchor = next(b for b in blocks if any(w.source.same_as(p) for w in sch.get(b).writes for p in params))
    loops = sch.get_loops(anchor)
    if not loops or sch.get(anchor).iter_vars[0].iter_type != DATA_PAR:
        return False
    row, at = loops[0], blocks.index(anchor)
    for block in reversed(blocks[:at]):
        sch.compute_at(block, row)
    for block in blocks[at + 1:]:
        sch.reverse_compute_at(block, row)
    lanes_inside = []
    for block in blocks[:at]:
        iters, inner = list(sch.get(block).iter_vars)[1:], sch.get_loops(block)[1:]
        if len(iters) != len(inner):
            continue
        spatial = [loop for loop, v in zip(inner, iters) if v.iter_type == DATA_PAR]
        reduction = [loop for loop, v in zip(inner, iters) if v.iter_type == REDUCE]
        if len(spatial) == 1 and reduction and _extent(sch, spatial[0]) % VECTOR_LANES == 0:
            sch.reorder(*reduction, spatial[0])
            sch.vectorize(spatial[0])
            lanes_inside.append((block, reduction[0]))
    for block in blocks[at:]:
        _vectorize_row(sch, block)
    if spread:
        sch.parallel(row)
    for block, reduction in lanes_inside:
        _decompose(sch, block, reduction)
    return True


def _vectorize_row(sch: Schedule, block: SBlockRV) -> None:
    """A spatial block's one loop inside the row, vectorised over the whole vectors; the columns
    left over become a loop of their own (a predicated vector loop would read past the row)."""
    inner = sch.get_loops(block)[1:]
    if len(inner) != 1 or len(sch.get(block).iter_vars) != 2 or not _is_spatial(sch, block):
        return
    loop, extent = inner[0], _extent(sch, inner[0])
    if extent < VECTOR_LANES:
        return
    if extent % VECTOR_LANES:
        loop = sch.loop_partition(loop, [extent // VECTOR_LANES * VECTOR_LANES, None])[0]
    sch.vectorize(sch.split(loop, [None, VECTOR_LANES])[1])


def _is_dot_product(sch: Schedule, block: SBlockRV) -> bool:
    """One reduction axis, last among the block's iterators, read as the last index of every input."""
    stmt = sch.get(block)
    iters = list(stmt.iter_vars)
    reductions = [v for v in iters if v.iter_type == REDUCE]
    if len(reductions) != 1 or iters[-1] is not reductions[0] or not stmt.reads:
        return False
    if len(sch.get_loops(block)) != len(iters):
        return False
    k = reductions[0].var
    for region in stmt.reads:
        last = region.region[-1].min
        if not (isinstance(last, tvm.tirx.Var) and last.same_as(k)):
            return False
    extent = reductions[0].dom.extent
    return isinstance(extent, tvm.tirx.IntImm) and int(extent) % VECTOR_LANES == 0


def _is_spatial(sch: Schedule, block: SBlockRV) -> bool:
    return all(v.iter_type == DATA_PAR for v in sch.get(block).iter_vars)


def _iterations(sch: Schedule, block: SBlockRV) -> int:
    """How many times the block's body runs: the product of its loops' extents."""
    total = 1
    for loop in sch.get_loops(block):
        total *= _extent(sch, loop)
    return total


def _extent(sch: Schedule, loop: LoopRV) -> int:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tvm.tirx.IntImm) else 0


def _blocks(sch: Schedule) -> list[SBlockRV]:
    try:
        return list(sch.get_child_blocks(sch.get_sblock("root")))
    except (ValueError, RuntimeError):
        return []


def _try(action, *args) -> None:
    """A schedule step that may not apply (a block that cannot be inlined stays as it is)."""
    try:
        action(*args)
    except (ValueError, RuntimeError):
        pass
