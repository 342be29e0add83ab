"""Low-rank factorisation by truncated SVD (the paper's SVD-based pruning).

A weight W [out, in] becomes U_r V_r with U_r = U sqrt(S_r) [out, r] and V_r = sqrt(S_r) V^T
[r, in]: the best rank-r approximation (Eckart-Young), split evenly between the factors so
fine-tuning sees two factors of the same scale. A factorised Linear is two plain Linears,
`down` (in -> r, no bias) then `up` (r -> out, the old bias), so torch.export and the compiler
see nothing new; at the default cut only `up` (the small factor that reaches the classes)
trains on the device. An LSTM's input weights W_ih [4h, in] factorise the same way: a
bias-free `Linear(in, r)` projection in front of an `LSTM(r, h)`.
"""
from __future__ import annotations

import torch
from torch import nn

MIN_RANK = 1


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(up [out, rank], down [rank, in]) whose product is the best rank-`rank` approximation."""
    full = min(weight.shape)
    if not MIN_RANK <= rank <= full:
        raise ValueError(f"rank {rank} is outside {MIN_RANK}..{full} for a {tuple(weight.shape)} weight")
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(weight.dtype), (root[:, None] * vh[:rank]).to(weight.dtype)


class LowRankLinear(nn.Module):
    """y = up(down(x)): a Linear(in, out) of rank `rank`, as two Linears."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    @property
    def rank(self) -> int:
        return self.down.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def weight(self) -> torch.Tensor:
        """The product U V, the [out, in] weight this layer stands for."""
        return self.up.weight @ self.down.weight


def factorise(layer: nn.Linear | LowRankLinear, rank: int) -> LowRankLinear:
    """A LowRankLinear of `rank` approximating `layer` (a Linear, or a LowRankLinear to truncate)."""
    weight = layer.weight() if isinstance(layer, LowRankLinear) else layer.weight
    bias = layer.up.bias if isinstance(layer, LowRankLinear) else layer.bias
    out_features, in_features = weight.shape
    up, down = svd_factors(weight, rank)
    new = LowRankLinear(in_features, out_features, rank, bias=bias is not None)
    with torch.no_grad():
        new.up.weight.copy_(up)
        new.down.weight.copy_(down)
        if bias is not None:
            new.up.bias.copy_(bias)
    return new.train(layer.training)


def current_rank(layer: nn.Linear | LowRankLinear) -> int:
    """The layer's rank: min(in, out), and its factor size when factorised (pruning the inputs
    can leave factors wider than the inputs; the rank is then the inputs')."""
    if isinstance(layer, LowRankLinear):
        return min(layer.rank, layer.up.out_features, layer.down.in_features)
    return min(layer.weight.shape)


def factorise_lstm_input(lstm: nn.LSTM, projection: nn.Linear | None, rank: int) -> tuple[nn.Linear, nn.LSTM]:
    """(projection [in -> rank], LSTM(rank, h)) whose composition approximates W_ih (times the old
    projection when there is one) at `rank`; the recurrent weights and biases are kept."""
    if lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size:
        raise ValueError("only single-layer, unidirectional LSTMs without projection factorise")
    w_ih = lstm.weight_ih_l0 if projection is None else lstm.weight_ih_l0 @ projection.weight
    up, down = svd_factors(w_ih, rank)
    new_projection = nn.Linear(w_ih.shape[1], rank, bias=False)
    new_lstm = nn.LSTM(rank, lstm.hidden_size, batch_first=lstm.batch_first, bias=lstm.bias)
    with torch.no_grad():
        new_projection.weight.copy_(down)
        new_lstm.weight_ih_l0.copy_(up)
        new_lstm.weight_hh_l0.copy_(lstm.weight_hh_l0)
        if lstm.bias:
            new_lstm.bias_ih_l0.copy_(lstm.bias_ih_l0)
            new_lstm.bias_hh_l0.copy_(lstm.bias_hh_l0)
    return new_projection.train(lstm.training), new_lstm.train(lstm.training)
