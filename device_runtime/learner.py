"""One training step on the device: the bundle's `update` function, with a rollback guard.

The update takes and returns TVM tensors (no numpy round trip for the parameters). A step whose
loss or new parameters are not finite is discarded: the model keeps its previous tensors and
the rollback is counted, so one bad batch never poisons the model.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from device_runtime.guards import check_labels, is_finite
from device_runtime.model import DeviceModel


@dataclasses.dataclass(frozen=True)
class StepResult:
    """The loss of one update and whether it was rolled back (then the params did not change)."""

    loss: float
    rolled_back: bool


class Learner:
    """Applies updates to a DeviceModel's trainable parameters and counts rollbacks."""

    def __init__(self, model: DeviceModel) -> None:
        self.model = model
        self.batch = model.train_batch
        self._num_trainable = len(model.trainable)
        self.steps = 0
        self.rollbacks = 0

    @functools.cached_property
    def _update(self) -> Any:
        """update.so's `update`, looked up once, at the first step (inference never loads it)."""
        return self.model.bundle.vm("update")["update"]

    def step(self, cut: np.ndarray, labels: np.ndarray) -> StepResult:
        """One update from a batch of cut activations [train_batch, ...] and their labels."""
        import tvm

        manifest = self.model.manifest
        want = (self.batch, *manifest.cut["shape"][1:])
        if cut.shape != want or cut.dtype != np.dtype(manifest.cut["dtype"]):
            raise ValueError(f"cut batch has shape {list(cut.shape)} {cut.dtype}; the update needs {list(want)} "
                             f"{manifest.cut['dtype']}")
        labels = check_labels(labels, manifest.num_classes)
        if labels.shape != (self.batch,):
            raise ValueError(f"labels have shape {list(labels.shape)}; the update needs [{self.batch}]")
        out = self._update(tvm.runtime.tensor(np.ascontiguousarray(cut)), tvm.runtime.tensor(labels),
                           *self.model.trainable, *self.model.optimizer_state)
        loss = float(out[0].numpy())
        new = list(out[1:])
        self.steps += 1
        if not np.isfinite(loss) or not all(is_finite(np.from_dlpack(t)) for t in new):
            self.rollbacks += 1
            return StepResult(loss, rolled_back=True)
        self.model.trainable = new[:self._num_trainable]
        self.model.optimizer_state = new[self._num_trainable:]
        return StepResult(loss, rolled_back=False)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Trainable params and optimizer state as numpy arrays, keyed by their manifest names."""
        params = self.model.manifest.params
        names = params["trainable"] + params["optimizer_state"]
        return {name: t.numpy() for name, t in zip(names, self.model.trainable + self.model.optimizer_state)}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restores what `state_arrays` returned, checked array by array against this bundle's names,
        shapes and dtypes, so a learned state of another layout never half-loads."""
        import tvm

        params = self.model.manifest.params
        current = dict(zip(params["trainable"] + params["optimizer_state"],
                           self.model.trainable + self.model.optimizer_state))
        missing, extra = sorted(set(current) - set(arrays)), sorted(set(arrays) - set(current))
        if missing:
            raise ValueError(f"learned state lacks parameters: {', '.join(missing)}")
        if extra:
            raise ValueError(f"learned state has parameters this bundle lacks: {', '.join(extra)}")
        for name, tensor in current.items():
            got, want = arrays[name], (list(tensor.shape), np.dtype(str(tensor.dtype)))
            if (list(got.shape), got.dtype) != want:
                raise ValueError(f"learned state has {name} {list(got.shape)} {got.dtype}; "
                                 f"this bundle's is {want[0]} {want[1]}")
        self.model.trainable = [tvm.runtime.tensor(arrays[n]) for n in params["trainable"]]
        self.model.optimizer_state = [tvm.runtime.tensor(arrays[n]) for n in params["optimizer_state"]]
