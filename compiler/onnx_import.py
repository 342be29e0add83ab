"""ONNX -> Relax for the training compiler: the graph split at a cut tensor, and its references.

An ONNX file has no stages: the cut is a tensor name (default: the input of the last
Gemm/MatMul node, the last FC layer's input). `onnx.utils.Extractor` gives the whole model with
the cut as a second output (forward.so) and the part from the cut to the logits, whose
parameters are the trainable ones (loss.so, update.so). Parameters are the floating-point
initializers with at least one dimension; other initializers (shapes, axes, clip bounds) become
constants, as the importer's ops need them. References for verification: onnxruntime for the
forward pass, ONNX Runtime training (compiler/ort_baseline.py) for loss, gradients and the step.
"""
from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import tvm
from onnx import numpy_helper
from tvm.relax.frontend import detach_params
from tvm.relax.frontend.onnx import from_onnx

from compiler.parts import InputSpec, ModelParts, PartsRequest, cut_type, input_spec
from compiler.importer import ImportedFunction, normalize_negative_take
from compiler.ort_baseline import load_ort_trainer
from compiler.training import build_training_modules
from compiler.verify import (ForwardReference, TrainingReference, check_training, optimizer_step_reference,
                             verify_forward)

FC_OPS = ("Gemm", "MatMul")
ORT_REFERENCE = "ONNX Runtime"


@dataclasses.dataclass
class OnnxModel:
    """A loaded ONNX classifier: one input, logits as its first output, parameters named."""

    model: onnx.ModelProto  # non-parameter initializers already turned into Constant nodes
    input_name: str
    logits_name: str
    param_names: list[str]  # initializer order

    def param_values(self, names: Sequence[str]) -> list[np.ndarray]:
        by_name = {init.name: init for init in self.model.graph.initializer}
        return [numpy_helper.to_array(by_name[n]) for n in names]

    def default_cut(self) -> str:
        """The input of the last Gemm/MatMul node: the last FC layer's input."""
        fc = [node for node in self.model.graph.node if node.op_type in FC_OPS]
        if not fc:
            raise ValueError("the ONNX graph has no Gemm or MatMul node: name the cut tensor (--cut)")
        return fc[-1].input[0]

    def tensor_names(self) -> list[str]:
        """Every tensor a cut may name: the input and every node output."""
        return [self.input_name] + [out for node in self.model.graph.node for out in node.output if out]

    def extract(self, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
        """The sub-graph from `inputs` to `outputs` (onnx.utils.Extractor)."""
        return onnx.utils.Extractor(self.model).extract_model(inputs, outputs)

    def trainable_names(self, cut: str) -> list[str]:
        """The parameters of the part from `cut` to the logits, in initializer order."""
        part = {init.name for init in self.extract([cut], [self.logits_name]).graph.initializer}
        names = [n for n in self.param_names if n in part]
        if not names:
            raise ValueError(f"the part of the graph from cut {cut!r} to {self.logits_name!r} "
                             "has no parameters to train")
        return names


def load_onnx(path: str | Path) -> OnnxModel:
    """Reads and checks an ONNX classifier file; its shapes are inferred for the Extractor."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:  # protobuf's DecodeError or onnx's ValidationError: not an ONNX model
        raise ValueError(f"{path} is not a valid ONNX model: {err}") from err
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"{path}: the compiler needs a model with one input, this one has {inputs}")
    model = _constants_as_nodes(onnx.shape_inference.infer_shapes(model))
    params = [init.name for init in model.graph.initializer]
    return OnnxModel(model, inputs[0], model.graph.output[0].name, params)


def _is_parameter(init: onnx.TensorProto) -> bool:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
    return np.issubdtype(dtype, np.floating) and len(init.dims) >= 1


def _constants_as_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Initializers that are not parameters -> Constant nodes (from_onnx would make them inputs)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    constants = [init for init in graph.initializer if not _is_parameter(init)]
    params = [init for init in graph.initializer if _is_parameter(init)]
    nodes = [onnx.helper.make_node("Constant", [], [c.name], value=c) for c in constants] + list(graph.node)
    del graph.initializer[:]
    graph.initializer.extend(params)
    del graph.node[:]
    graph.node.extend(nodes)
    kept = {p.name for p in params}
    inputs = [i for i in graph.input if i.name not in {c.name for c in constants} or i.name in kept]
    del graph.input[:]
    graph.input.extend(inputs)
    return model


def check_cut(onnx_model: OnnxModel, cut: str) -> None:
    """ValueError unless `cut` is a tensor between the input and the logits."""
    names = onnx_model.tensor_names()
    if cut not in names or cut == onnx_model.logits_name:
        shown = ", ".join(names[-8:])
        raise ValueError(f"unknown cut tensor {cut!r}: name a tensor of the ONNX graph before the logits "
                         f"(the last ones are: {shown})")


def import_part(part: onnx.ModelProto, shapes: dict[str, list[int]], dtypes: dict[str, str],
                param_order: Sequence[str]) -> ImportedFunction:
    """`part` as a Relax `main(*inputs, *params)` with static input shapes, params in `param_order`."""
    try:
        mod = from_onnx(part, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=True)
    except tvm.error.OpNotImplemented as err:
        raise ValueError(f"TVM's ONNX importer cannot import this graph: {err}") from err
    mod, _ = detach_params(mod)
    mod = normalize_negative_take(mod)
    names = [init.name for init in part.graph.initializer]
    values = {init.name: numpy_helper.to_array(init) for init in part.graph.initializer}
    num_inputs = int(mod["main"].attrs["num_input"])
    if len(mod["main"].params) != num_inputs + len(names):
        raise RuntimeError(f"TVM imported {len(mod['main'].params) - num_inputs} parameters, "
                           f"the ONNX graph has {len(names)} initializers")
    return ImportedFunction(mod, num_inputs, names, values).reorder_params(param_order)


def import_forward(onnx_model: OnnxModel, cut: str, input_shape: list[int], input_dtype: str,
                   param_order: Sequence[str]) -> ImportedFunction:
    """The whole model `(x, *params) -> (logits, cut)` for one static input shape."""
    whole = onnx_model.extract([onnx_model.input_name], [onnx_model.logits_name, cut])
    return import_part(whole, {onnx_model.input_name: input_shape}, {onnx_model.input_name: input_dtype},
                       param_order)


def import_trainable(onnx_model: OnnxModel, cut: str, cut_shape: list[int], cut_dtype: str) -> ImportedFunction:
    """The part `(cut, *trainable) -> logits` for cut activations of `cut_shape` (batch included)."""
    part = onnx_model.extract([cut], [onnx_model.logits_name])
    imported = import_part(part, {cut: cut_shape}, {cut: cut_dtype}, onnx_model.trainable_names(cut))
    lowered = sorted(gvar.name_hint for gvar in imported.mod.functions if gvar.name_hint != "main")
    if lowered:  # TIR functions (Clip becomes maximum/minimum) have no registered gradient
        raise ValueError(f"the graph from cut {cut!r} on has ops TVM's ONNX importer lowers to TIR "
                         f"({', '.join(lowered)}), which cannot be differentiated: cut later in the graph")
    return imported


def ort_forward_reference(onnx_model: OnnxModel, cut: str) -> ForwardReference:
    """onnxruntime on the whole model with the cut as second output: x -> (logits, cut)."""
    whole = onnx_model.extract([onnx_model.input_name], [onnx_model.logits_name, cut])
    session = onnxruntime.InferenceSession(whole.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, cut_value = session.run(None, {onnx_model.input_name: x})
        return logits, cut_value
    return run


def ort_training_reference(onnx_model: OnnxModel, cut: str, cut_sample: np.ndarray, labels: np.ndarray,
                           optimizer: dict[str, Any]) -> TrainingReference:
    """Loss and gradients from ONNX Runtime training on the part from `cut` on; the step too for
    SGD (ORT's own), else the manifest's optimizer from those gradients (compiler.verify)."""
    part = onnx_model.extract([cut], [onnx_model.logits_name])
    names = onnx_model.trainable_names(cut)
    with tempfile.TemporaryDirectory(prefix="autlearn-ort-") as workdir:
        trainer = load_ort_trainer(part, set(names), lr=optimizer["lr"], workdir=Path(workdir), threads=1)
        trainer.module.lazy_reset_grad()
        loss = trainer.module(cut_sample, labels.astype(trainer.label_dtype, copy=False))
        params = trainer.state.parameters
        before = [params[n].data.copy() for n in names]
        grads = [params[n].grad.copy() for n in names]
        if optimizer["name"] == "sgd":
            trainer.optimizer.step()
            updated = [params[n].data.copy() for n in names]
        else:
            updated = optimizer_step_reference(before, grads, optimizer)
    return TrainingReference(ORT_REFERENCE, np.asarray(loss, dtype="float32"), grads, updated)


def onnx_model_parts(path: Path, request: PartsRequest) -> ModelParts:
    """An ONNX classifier cut at tensor `request.cut`, verified against ONNX Runtime."""
    onnx_model = load_onnx(path)
    cut = request.cut if request.cut is not None else onnx_model.default_cut()
    check_cut(onnx_model, cut)
    trainable_names = onnx_model.trainable_names(cut)
    frozen_names = [n for n in onnx_model.param_names if n not in trainable_names]
    input_dtype = request.input.dtype

    forward_parts = []
    for shape in request.shapes:
        x = request.sample_input(shape)
        forward_parts.append((shape, x, import_forward(onnx_model, cut, shape.input_shape, input_dtype,
                                                       frozen_names + trainable_names)))
        request.progress.update()
    cut_dtype, cut_shape = cut_type(forward_parts, cut)
    values = dict(zip(onnx_model.param_names, onnx_model.param_values(onnx_model.param_names)))

    forward_reference = ort_forward_reference(onnx_model, cut)
    _, cut_sample = forward_reference(next(x for s, x, _ in forward_parts if s == request.train_shape))
    labels_sample = request.sample_labels()
    trainable = import_trainable(onnx_model, cut, list(cut_sample.shape), cut_dtype)
    training = build_training_modules(trainable, request.num_classes, request.optimizer)
    frozen_values = [values[n] for n in frozen_names]
    trainable_values = [values[n] for n in trainable_names]

    def check(executables: dict[str, tvm.runtime.Module]) -> None:
        for shape, x, _ in forward_parts:
            verify_forward(executables["forward"], shape.name, x, frozen_values, trainable_values,
                           forward_reference, against=ORT_REFERENCE)
        check_training(executables["loss"], executables["update"], cut_sample, labels_sample, trainable_names,
                       trainable_values, training.state_values,
                       ort_training_reference(onnx_model, cut, cut_sample, labels_sample, request.optimizer))

    return ModelParts(cut, forward_parts, frozen_names, trainable_names, values, training, cut_dtype, cut_shape,
                      check)


def onnx_input_spec(path: Path, example_input: Any, lengths: Sequence[int] | None,
                    token_range: int | None) -> InputSpec:
    """The spec of the graph's input: its dtype, its static sizes (or the example's), the rows of
    the embedding table (a Gather of an initializer) it indexes."""
    onnx_model = load_onnx(path)
    (graph_input,) = [i for i in onnx_model.model.graph.input if i.name == onnx_model.input_name]
    tensor_type = graph_input.type.tensor_type
    dtype = str(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim][1:]
    if example_input is not None:
        example = np.asarray(example_input)
        if example.ndim != len(dims) + 1 or any(d is not None and d != e for d, e in zip(dims, example.shape[1:])):
            raise ValueError(f"example input of shape {list(example.shape)} does not fit the ONNX input "
                             f"{onnx_model.input_name!r} of shape {['batch', *dims]}")
        dims = list(example.shape[1:])
    if lengths is not None and dims:
        if dims[0] is not None and set(lengths) != {dims[0]}:
            raise ValueError(f"the ONNX input {onnx_model.input_name!r} has a fixed axis 1 of {dims[0]}: "
                             f"lengths {sorted(set(lengths))} cannot be compiled (give lengths={dims[0]} or none)")
        dims[0] = max(lengths)
    if any(d is None for d in dims):
        raise ValueError(f"the ONNX input {onnx_model.input_name!r} has free sizes {['batch', *dims]}: "
                         "give an example input (or lengths for axis 1)")
    if token_range is None:
        tables = {init.name: list(init.dims) for init in onnx_model.model.graph.initializer}
        rows = [tables[node.input[0]][0] for node in onnx_model.model.graph.node
                if node.op_type == "Gather" and node.input[1] == onnx_model.input_name and node.input[0] in tables]
        token_range = rows[0] if rows else None
    return input_spec(onnx_model.input_name, dtype, dims, lengths, token_range)
