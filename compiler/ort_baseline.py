"""The ONNX Runtime on-device training baseline for the compiler benchmark.

The trainable part (cut stage onwards) is exported to ONNX and turned into ORT training
artifacts with its parameters trainable and every other initializer frozen, cross-entropy
(mean) and SGD at the same learning rate: the same work as the compiled `update` module.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import torch
import onnxruntime
from onnxruntime import SessionOptions
from onnxruntime.training import api as ort_api
from onnxruntime.training import artifacts
from torch import nn


@dataclasses.dataclass
class OrtTrainer:
    """An ORT training session: `step` runs forward, loss, backward and the SGD update."""

    module: ort_api.Module
    optimizer: ort_api.Optimizer
    label_dtype: np.dtype
    state: ort_api.CheckpointState  # parameters, with their gradients after a step

    def step(self, cut: np.ndarray, labels: np.ndarray) -> float:
        self.module.lazy_reset_grad()
        loss = self.module(cut, labels.astype(self.label_dtype, copy=False))
        self.optimizer.step()
        return float(loss)


# onnx 1.23 stamps the optimizer graph with IR version 14; onnxruntime-training 1.19 reads <= 10.
ORT_MAX_IR_VERSION = 10
ORT_LOG_ERRORS_ONLY = 3


def _cap_ir_version(path: Path) -> None:
    model = onnx.load(str(path))
    if model.ir_version > ORT_MAX_IR_VERSION:
        model.ir_version = ORT_MAX_IR_VERSION
        onnx.save(model, str(path))


def build_ort_trainer(trainable: nn.Module, cut_example: torch.Tensor, *, lr: float, workdir: Path,
                      threads: int) -> OrtTrainer:
    """ORT training artifacts for `trainable` (cut -> logits) in `workdir`, loaded into a trainer."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    onnx_path = workdir / "trainable.onnx"
    torch.onnx.export(trainable.eval(), (cut_example,), str(onnx_path), input_names=["cut"],
                      output_names=["logits"], dynamo=False, do_constant_folding=False,
                      training=torch.onnx.TrainingMode.EVAL)
    model = onnx.load(str(onnx_path))
    trainable_names = {name for name, p in trainable.named_parameters() if p.requires_grad}
    missing = trainable_names - {init.name for init in model.graph.initializer}
    if missing:
        raise RuntimeError(f"the ONNX export renamed or folded trainable parameters: {sorted(missing)}")
    return load_ort_trainer(model, trainable_names, lr=lr, workdir=workdir, threads=threads)


def load_ort_trainer(model: onnx.ModelProto, trainable_names: set[str], *, lr: float, workdir: Path,
                     threads: int) -> OrtTrainer:
    """ORT training artifacts for an ONNX model (cut -> logits) whose `trainable_names`
    initializers train and every other initializer is frozen; cross-entropy (mean), SGD at `lr`."""
    if lr <= 0 or threads < 1:
        raise ValueError(f"need lr > 0 and threads >= 1, got lr={lr}, threads={threads}")
    onnxruntime.set_default_logger_severity(ORT_LOG_ERRORS_ONLY)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    initializers = [init.name for init in model.graph.initializer]
    requires_grad = [n for n in initializers if n in trainable_names]
    artifacts.generate_artifacts(
        model, requires_grad=requires_grad, frozen_params=[n for n in initializers if n not in trainable_names],
        loss=artifacts.LossType.CrossEntropyLoss, optimizer=artifacts.OptimType.SGD,
        artifact_directory=str(workdir))
    _cap_ir_version(workdir / "optimizer_model.onnx")

    options = SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = ORT_LOG_ERRORS_ONLY
    # ORT's pool spins after each run by default, taking the cores from whatever runs next
    # (measured: the compiled update step 0.3 ms alone, 12 ms right after ORT steps).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    state = ort_api.CheckpointState.load_checkpoint(str(workdir / "checkpoint"))
    module = ort_api.Module(str(workdir / "training_model.onnx"), state, str(workdir / "eval_model.onnx"),
                            device="cpu", session_options=options)
    optimizer = ort_api.Optimizer(str(workdir / "optimizer_model.onnx"), module)
    optimizer.set_learning_rate(lr)
    labels_input = next(i for i in onnx.load(str(workdir / "training_model.onnx")).graph.input
                        if i.name == module.input_names()[1])
    label_dtype = onnx.helper.tensor_dtype_to_np_dtype(labels_input.type.tensor_type.elem_type)
    module.train()
    return OrtTrainer(module, optimizer, label_dtype, state)
