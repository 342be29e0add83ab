"""What every model format (a torch module, an ONNX file) hands the bundle writer.

`compile_bundle` asks a format for `ModelParts` through a `PartsRequest`: the input spec, the
forward shapes to compile, the training batch and the optimizer. Kept apart from compiler/api.py
so the format importers and the entry point do not import each other.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tvm
from tqdm import tqdm

from compiler.importer import ImportedFunction
from compiler.training import TrainingModules
from device_runtime.manifest import sample_input


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The model's one input: name, dtype, per-sample shape, id range, and the lengths compiled.

    `lengths`: sizes of axis 1 (a token sequence) with one forward function each; None keeps the
    example's shape. `token_range`: ids lie in [0, token_range) (integer inputs only).
    """

    name: str
    dtype: str
    sample_shape: tuple[int, ...]
    token_range: int | None = None
    lengths: tuple[int, ...] | None = None

    def manifest_entry(self) -> dict[str, Any]:
        shape: list[int | None] = [None, *self.sample_shape]
        if self.lengths is not None:
            shape[1] = None
        entry: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": shape}
        if self.token_range is not None:
            entry["token_range"] = self.token_range
        return entry

    def shapes(self, train_batch: int) -> list["ForwardShape"]:
        """Batch 1 and the training batch for every length (the longest last)."""
        samples = ([(n, *self.sample_shape[1:]) for n in self.lengths] if self.lengths is not None
                   else [self.sample_shape])
        return [ForwardShape(b, s, self.lengths is not None) for s in samples for b in sorted({1, train_batch})]


def input_spec(name: str, dtype: str, sample_shape: Sequence[int], lengths: Sequence[int] | None,
               token_range: int | None) -> InputSpec:
    """The input spec, checked: ids need a token range, lengths a sequence axis."""
    if dtype not in ("float32", "int64", "int32"):
        raise ValueError(f"input {name!r} has dtype {dtype}; the compiler takes float32 values or int64/int32 ids")
    if dtype.startswith("int") and token_range is None:
        raise ValueError(f"integer input {name!r} feeds no embedding the compiler can see: give token_range")
    if lengths is not None:
        lengths = tuple(sorted(set(int(n) for n in lengths)))
        if not sample_shape or not lengths or lengths[0] < 1:
            raise ValueError(f"lengths must be positive sizes of the input's axis 1, got {list(lengths)}")
    return InputSpec(name, dtype, tuple(int(d) for d in sample_shape),
                     int(token_range) if dtype.startswith("int") else None, lengths)


@dataclasses.dataclass(frozen=True)
class ForwardShape:
    """One forward function: its batch and per-sample shape, and so its VM name."""

    batch: int
    sample_shape: tuple[int, ...]
    by_length: bool = False  # named by its axis-1 length

    @property
    def name(self) -> str:
        return f"forward_b{self.batch}" + (f"_l{self.sample_shape[0]}" if self.by_length else "")

    @property
    def input_shape(self) -> list[int]:
        return [self.batch, *self.sample_shape]


@dataclasses.dataclass
class ModelParts:
    """What the bundle needs from a model, whatever its format (torch module or ONNX graph)."""

    cut: str  # the manifest's cut_layer: a module name, or an ONNX tensor name
    forward_parts: list[tuple[ForwardShape, np.ndarray, ImportedFunction]]  # (shape, verification x, import)
    frozen_names: list[str]
    trainable_names: list[str]
    values: dict[str, np.ndarray]
    training: TrainingModules
    cut_dtype: str
    cut_shape: list[int]  # after the batch
    check: Callable[[dict[str, tvm.runtime.Module]], None]  # raises naming the first diverging tensor


@dataclasses.dataclass
class PartsRequest:
    """What every model format is asked for: the forward shapes, the training batch, the optimizer."""

    input: InputSpec
    cut: str | None  # a module (torch) or tensor (ONNX) name; None: the default
    trainable: list[str] | None  # explicit trainable parameter names (torch)
    shapes: list[ForwardShape]
    train_batch: int
    num_classes: int
    optimizer: dict[str, Any]
    rng: np.random.Generator  # verification inputs and labels
    progress: tqdm  # one step per forward shape imported

    @property
    def train_shape(self) -> ForwardShape:
        """The forward shape whose cut activations train (the longest length)."""
        return next(s for s in reversed(self.shapes) if s.batch == self.train_batch)

    def sample_input(self, shape: ForwardShape) -> np.ndarray:
        return sample_input(self.input.manifest_entry(), shape.input_shape, self.rng)

    def sample_labels(self) -> np.ndarray:
        return self.rng.integers(0, self.num_classes, size=self.train_batch).astype("int64")


def cut_type(forward_parts: Sequence[tuple[ForwardShape, np.ndarray, ImportedFunction]],
             cut: str) -> tuple[str, list[int]]:
    """The cut activation's dtype and shape after the batch; one shape for every length."""
    cut_info = [imported.mod["main"].ret_ty.fields[1] for _, _, imported in forward_parts]
    cut_dims = {tuple(int(d) for d in list(info.shape)[1:]) for info in cut_info}
    if len(cut_dims) != 1:
        lengths = sorted({shape.sample_shape[0] for shape, _, _ in forward_parts})
        raise ValueError(f"cut {cut!r} gives activations of shapes {sorted(cut_dims)} for the lengths "
                         f"{lengths}: cut after the sequence is reduced, or compile one length")
    return str(cut_info[0].dtype), list(sorted(cut_dims)[0])
