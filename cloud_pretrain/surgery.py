"""Structural surgery: new, smaller layers that keep only chosen units of old ones.

Pruning must shrink the model, not mask it, so every function here returns a fresh layer
whose tensors are index-selected copies (same hyperparameters, fewer channels/units).
The models say which layers depend on which (`StagedModel.keep_units`); this module only
knows how to cut one layer along one axis.
"""
from __future__ import annotations

import torch
from torch import nn

LSTM_GATES = 4  # PyTorch stacks the i, f, g, o gate blocks along dim 0 of each weight


def _index(idx: torch.Tensor | list[int], size: int) -> torch.Tensor:
    idx = torch.as_tensor(idx, dtype=torch.long).flatten()
    if idx.numel() == 0:
        raise ValueError("cannot keep zero units of a layer")
    if int(idx.min()) < 0 or int(idx.max()) >= size:
        raise ValueError(f"unit indices must lie in [0, {size}), got {idx.tolist()}")
    if idx.unique().numel() != idx.numel():
        raise ValueError("unit indices to keep must be distinct")
    return idx


def _copy_param(new: nn.Parameter | None, old: torch.Tensor | None) -> None:
    if new is not None and old is not None:
        with torch.no_grad():
            new.copy_(old)


def conv_keep(conv: nn.Conv2d, out_idx=None, in_idx=None) -> nn.Conv2d:
    """A Conv2d keeping output channels `out_idx` and input channels `in_idx` (None: all).

    A depthwise conv (groups == channels) has one filter per channel: keeping channels keeps
    the same indices on both sides, so pass `out_idx` only.
    """
    w = conv.weight
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    if conv.groups > 1 and not depthwise:
        raise ValueError(f"grouped conv with {conv.groups} groups is not prunable")
    out_idx = _index(out_idx, conv.out_channels) if out_idx is not None else torch.arange(conv.out_channels)
    if depthwise:
        in_idx, groups, n_in = None, out_idx.numel(), out_idx.numel()
    else:
        in_idx = _index(in_idx, conv.in_channels) if in_idx is not None else torch.arange(conv.in_channels)
        groups, n_in = 1, in_idx.numel()
    new = nn.Conv2d(n_in, out_idx.numel(), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    groups, conv.bias is not None, conv.padding_mode)
    kept = w[out_idx] if depthwise else w[out_idx][:, in_idx]
    _copy_param(new.weight, kept)
    _copy_param(new.bias, None if conv.bias is None else conv.bias[out_idx])
    return new.train(conv.training)


def linear_keep(fc: nn.Linear, out_idx=None, in_idx=None) -> nn.Linear:
    """A Linear keeping rows `out_idx` and input columns `in_idx` (None: all)."""
    out_idx = _index(out_idx, fc.out_features) if out_idx is not None else torch.arange(fc.out_features)
    in_idx = _index(in_idx, fc.in_features) if in_idx is not None else torch.arange(fc.in_features)
    new = nn.Linear(in_idx.numel(), out_idx.numel(), bias=fc.bias is not None)
    _copy_param(new.weight, fc.weight[out_idx][:, in_idx])
    _copy_param(new.bias, None if fc.bias is None else fc.bias[out_idx])
    return new.train(fc.training)


def batchnorm_keep(bn: nn.BatchNorm2d, idx) -> nn.BatchNorm2d:
    """A BatchNorm2d keeping channels `idx`, running statistics included."""
    idx = _index(idx, bn.num_features)
    new = nn.BatchNorm2d(idx.numel(), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        _copy_param(new.weight, bn.weight[idx])
        _copy_param(new.bias, bn.bias[idx])
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean[idx])
        new.running_var.copy_(bn.running_var[idx])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.train(bn.training)


def embedding_keep(emb: nn.Embedding, dim_idx) -> nn.Embedding:
    """An Embedding keeping the embedding dimensions `dim_idx` (every token row stays)."""
    dim_idx = _index(dim_idx, emb.embedding_dim)
    new = nn.Embedding(emb.num_embeddings, dim_idx.numel(), padding_idx=emb.padding_idx)
    _copy_param(new.weight, emb.weight[:, dim_idx])
    return new.train(emb.training)


def _gate_rows(unit_idx: torch.Tensor, hidden: int) -> torch.Tensor:
    """Rows of a stacked-gate LSTM weight that belong to hidden units `unit_idx`."""
    return torch.cat([g * hidden + unit_idx for g in range(LSTM_GATES)])


def lstm_keep(lstm: nn.LSTM, hidden_idx=None, in_idx=None) -> nn.LSTM:
    """A one-layer, batch-first LSTM keeping hidden units `hidden_idx` and inputs `in_idx`.

    A hidden unit owns one row in each of the four gate blocks of W_ih, W_hh and the
    biases, and one column of W_hh (its recurrent output).
    """
    if lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size:
        raise ValueError("only single-layer, unidirectional LSTMs without projection are prunable")
    h = lstm.hidden_size
    hidden_idx = _index(hidden_idx, h) if hidden_idx is not None else torch.arange(h)
    in_idx = _index(in_idx, lstm.input_size) if in_idx is not None else torch.arange(lstm.input_size)
    rows = _gate_rows(hidden_idx, h)
    new = nn.LSTM(in_idx.numel(), hidden_idx.numel(), batch_first=lstm.batch_first, bias=lstm.bias)
    _copy_param(new.weight_ih_l0, lstm.weight_ih_l0[rows][:, in_idx])
    _copy_param(new.weight_hh_l0, lstm.weight_hh_l0[rows][:, hidden_idx])
    if lstm.bias:
        _copy_param(new.bias_ih_l0, lstm.bias_ih_l0[rows])
        _copy_param(new.bias_hh_l0, lstm.bias_hh_l0[rows])
    return new.train(lstm.training)


def lstm_unit_norms(lstm: nn.LSTM) -> torch.Tensor:
    """L2 norm of each hidden unit's incoming weights (its rows in all four gate blocks)."""
    h = lstm.hidden_size
    w = torch.cat([lstm.weight_ih_l0, lstm.weight_hh_l0], dim=1).detach()
    return w.reshape(LSTM_GATES, h, -1).pow(2).sum(dim=(0, 2)).sqrt()
