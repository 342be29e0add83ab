"""The PyTorch side of every benchmark: one eager training step of the trainable part.

Imports torch only, so a benchmark's PyTorch worker loads what the same training needs.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class TorchHeadStep:
    """Eager autograd and torch.optim.SGD on a private copy of the trainable part (cut -> logits)."""

    def __init__(self, head: nn.Module, lr: float) -> None:
        self.head = copy.deepcopy(head).eval()
        self.optimizer = torch.optim.SGD(self.head.parameters(), lr=lr)

    def __call__(self, cut: torch.Tensor, labels: torch.Tensor) -> float:
        """One step; returns the loss before it."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.head(cut), labels)
        loss.backward()
        self.optimizer.step()
        return loss.item()
