"""The trainable head (the last linear layer) trained in numpy as the device trains it: plain SGD
on the mean cross-entropy of batches of `batch`, each epoch a fresh shuffle, the last partial batch
dropped. CloudTrain, CloudCustomize and every FedAvg client use it, so the comparison with the
device's offline learning differs only in who holds which data."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Head:
    """weight [classes, features] and bias [classes], float32 (a torch Linear's layout)."""

    weight: np.ndarray
    bias: np.ndarray

    def copy(self) -> "Head":
        return Head(self.weight.copy(), self.bias.copy())

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Share of `y` predicted by the argmax (nan for no samples)."""
        return float((self.logits(x).argmax(axis=1) == y).mean()) if len(y) else float("nan")

    def train(self, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch: int, seed: int) -> "Head":
        """`epochs` of SGD in place; returns self."""
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y) - batch + 1, batch):
                index = order[start:start + batch]
                xb, yb = x[index], y[index]
                logits = self.logits(xb)
                p = np.exp(logits - logits.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                p[np.arange(len(yb)), yb] -= 1.0
                p /= len(yb)
                self.weight -= lr * (p.T @ xb).astype(np.float32)
                self.bias -= lr * p.sum(axis=0).astype(np.float32)
        return self
