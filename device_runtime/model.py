"""The model on the device: inference through the bundle's forward functions with live params.

`DeviceModel` owns the current trainable parameters and optimizer state as TVM tensors; the
learner swaps them after an update. Inference returns the cut activation next to the logits,
which is what the online cache and the offline epochs train from.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from device_runtime.bundle import Bundle
from device_runtime.guards import check_inputs


class DeviceModel:
    """Forward passes of a loaded bundle, with the trainable parameters it currently holds."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.trainable: list[Any] = list(bundle.trainable)
        self.optimizer_state: list[Any] = list(bundle.optimizer_state)
        self.train_batch = self.manifest.train_batch
        vm = bundle.vm("forward")
        # (batch, per-sample input shape) -> the compiled forward function for it
        self._forward_fns = {(f["batch"], tuple(f["input_shape"][1:])): vm[f["name"]]
                             for f in self.manifest.forward_functions}

    def check(self, x: np.ndarray, what: str = "input") -> np.ndarray:
        """`x` checked against the bundle's input spec (shape, dtype, finite, token range)."""
        spec = self.manifest.input
        check_inputs(x, dtype=spec["dtype"], shape=spec["shape"], num_tokens=self.manifest.token_range, what=what)
        sample_shape = tuple(x.shape[1:])
        if (1, sample_shape) not in self._forward_fns:
            known = sorted({shape for _, shape in self._forward_fns})
            raise ValueError(f"{what}: no forward function for samples of shape {list(sample_shape)}; "
                             f"the bundle has {[list(s) for s in known]}")
        return x

    def forward_batch(self, x: np.ndarray) -> tuple[Any, Any]:
        """(logits, cut) as TVM tensors for a checked batch whose size has a compiled function."""
        import tvm

        function = self._forward_fns.get((x.shape[0], tuple(x.shape[1:])))
        if function is None:
            raise ValueError(f"no forward function for batch {x.shape[0]} and samples of shape {list(x.shape[1:])}")
        out = function(tvm.runtime.tensor(x), *self.bundle.frozen, *self.trainable)
        return out[0], out[1]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, cut) as numpy arrays for any number of samples (train-batch chunks, then singles)."""
        self.check(x)
        step = self.train_batch if (self.train_batch, tuple(x.shape[1:])) in self._forward_fns else 1
        full = len(x) // step * step
        chunks = [x[i:i + step] for i in range(0, full, step)] + [x[i:i + 1] for i in range(full, len(x))]
        if not chunks:
            return (np.zeros((0, self.manifest.num_classes), np.float32),
                    np.zeros((0, *self.manifest.cut["shape"][1:]), np.float32))
        outputs = [self.forward_batch(np.ascontiguousarray(chunk)) for chunk in chunks]
        return (np.concatenate([logits.numpy() for logits, _ in outputs]),
                np.concatenate([cut.numpy() for _, cut in outputs]))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted class ids (argmax of the logits) for a batch of inputs."""
        return self.forward(x)[0].argmax(axis=1)
