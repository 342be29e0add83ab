"""An LSTM no gradient flows through, as one GEMM over every step and one recurrence kernel.

TVM's importer unrolls `nn.LSTM` into about ten ops per time step, which fuse into four kernels a
step (for nwp's two layers of ten steps: 80 kernels and about 140 tensor allocations, at batch 1
40% of the forward pass in VM bookkeeping). Here the input projection of every step is one GEMM,
X @ W_ih^T + (b_ih + b_hh), and `recurrence_kernel` runs all the steps in one PrimFunc: each task
takes a block of batch rows through every step, so the steps need no barrier; each gate row's dot
product with h sums 8 lanes for up to 4 batch rows per load of W_hh, read as stored (a transpose
of W_hh cost more than the recurrence at batch 1).

The kernel has no gradient, so only imports that are never differentiated use it (`forward`);
the trained part keeps TVM's unrolled ops, which Relax's Gradient pass differentiates.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import fx
from tvm import relax, tirx
from tvm.script import tirx as T

from compiler.fastmath import fast_sigmoid, fast_tanh

LSTM_OP = "lstm.input"
LANES = 8  # float32 lanes of one 256-bit vector (two NEON registers)
ROW_BLOCK = 4  # batch rows per task: one load of a weight vector serves four rows


def keep_lstm_decompositions() -> dict:
    """torch.export's default decompositions less the LSTM's, so the importer sees `lstm.input`."""
    table = torch.export.default_decompositions()
    del table[torch.ops.aten.lstm.input]
    return table


def recurrence_kernel(batch: int, steps: int, hidden: int) -> tirx.PrimFunc:
    """(P [batch, steps, 4h] input projections with both biases, W_hh [4h, h]) -> (Y [batch,
    steps, h] every step's h, C [batch, h] the last c), from zero initial states; gates i, f, g, o.

    Lane values stay in buffers, never in a `let`: TVM 0.27 vectorises a let of a lane-varying value
    wrongly (every lane got the last lane's value).
    """
    gates_n, rb = 4 * hidden, min(ROW_BLOCK, batch)
    blocks, units_v = -(-batch // rb), hidden // LANES * LANES

    @T.macro
    def cell(gates, C, Y, b, r, t, u):  # noqa: ANN001 (TVMScript macro)
        C[b, u] = (T.if_then_else(t > 0, fast_sigmoid(gates[r, hidden + u]) * C[b, u], T.float32(0))
                   + fast_sigmoid(gates[r, u]) * fast_tanh(gates[r, 2 * hidden + u]))
        Y[b, t, u] = fast_sigmoid(gates[r, 3 * hidden + u]) * fast_tanh(C[b, u])

    @T.prim_func(private=True)
    def lstm_recurrence(P: T.Buffer((batch, steps, gates_n), "float32"), W: T.Buffer((gates_n, hidden), "float32"),
                        Y: T.Buffer((batch, steps, hidden), "float32"), C: T.Buffer((batch, hidden), "float32")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        for bo in T.parallel(blocks):
            gates = T.alloc_buffer((rb, gates_n), "float32", scope="local")
            acc = T.alloc_buffer((rb, LANES), "float32", scope="local")
            for t in range(steps):
                for r, j in T.grid(rb, gates_n):  # rows past the batch repeat its last row, never written
                    gates[r, j] = P[T.min(bo * rb + r, batch - 1), t, j]
                if t > 0:
                    for j in range(gates_n):
                        for r in T.unroll(rb):
                            for lane in T.vectorized(LANES):
                                acc[r, lane] = T.float32(0)
                        for k0 in range(units_v // LANES):
                            for r in T.unroll(rb):
                                row = T.min(bo * rb + r, batch - 1)
                                for lane in T.vectorized(LANES):
                                    acc[r, lane] = acc[r, lane] + Y[row, t - 1, k0 * LANES + lane] * W[j, k0 * LANES + lane]
                        for k in range(units_v, hidden):
                            for r in T.unroll(rb):
                                acc[r, 0] = acc[r, 0] + Y[T.min(bo * rb + r, batch - 1), t - 1, k] * W[j, k]
                        for r, lane in T.grid(rb, LANES):
                            gates[r, j] = gates[r, j] + acc[r, lane]
                for r in range(rb):
                    if bo * rb + r < batch:
                        for u0 in range(units_v // LANES):
                            for lane in T.vectorized(LANES):
                                cell(gates, C, Y, bo * rb + r, r, t, u0 * LANES + lane)
                        for u in range(units_v, hidden):
                            cell(gates, C, Y, bo * rb + r, r, t, u)

    return lstm_recurrence


def _is_zeros(node: object) -> bool:
    return (isinstance(node, fx.Node) and node.target in (torch.ops.aten.full.default, torch.ops.aten.zeros.default)
            and (node.target == torch.ops.aten.zeros.default or node.args[1] == 0))


def _fits(node: fx.Node) -> bool:
    """One layer, one direction, biases, zero initial states, float32."""
    _, hx, params, has_biases, num_layers, _, _, bidirectional, _ = node.args
    value = node.args[0].meta.get("val")
    return (num_layers == 1 and not bidirectional and has_biases and len(params) == 4
            and all(_is_zeros(h) for h in hx) and value is not None and value.dtype == torch.float32
            and all(isinstance(d, int) for d in value.shape))


def convert_lstm(node: fx.Node, importer) -> relax.Expr:  # noqa: ANN001 (TVM's importer class)
    """`aten.lstm.input` as projection GEMM + recurrence kernel, as the tuple (output, h_n, c_n);
    LSTMs the kernel does not cover go to TVM's own converter."""
    if not _fits(node):
        return importer._lstm(node)
    bb = importer.block_builder
    x, _, (w_ih, w_hh, b_ih, b_hh) = importer.retrieve_args(node)[:3]
    batch_first = node.args[8]
    if not batch_first:
        x = bb.emit(relax.op.permute_dims(x, [1, 0, 2]))
    batch, steps, _ = (int(d) for d in x.ty.shape)
    hidden = int(w_hh.ty.shape[1])
    projected = bb.emit(relax.op.linear(x, w_ih, bb.emit(relax.op.add(b_ih, b_hh))))
    kernel = bb.add_func(recurrence_kernel(batch, steps, hidden), "lstm_recurrence")
    out = bb.emit(relax.call_tir(kernel, [projected, w_hh],
                                 [relax.TensorType((batch, steps, hidden), "float32"),
                                  relax.TensorType((batch, hidden), "float32")]))
    y, c_last = bb.emit(relax.TupleGetItem(out, 0)), bb.emit(relax.TupleGetItem(out, 1))
    h_last = bb.emit(relax.op.take(y, relax.const(steps - 1, "int64"), axis=1))
    if not batch_first:
        y = bb.emit(relax.op.permute_dims(y, [1, 0, 2]))
    return relax.Tuple([y, bb.emit(relax.op.expand_dims(h_last, 0)), bb.emit(relax.op.expand_dims(c_last, 0))])


CONVERTERS: dict[str, Callable] = {LSTM_OP: convert_lstm}
