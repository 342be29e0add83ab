"""`compile_bundle`: a staged torch model or an ONNX file -> a verified artifact bundle (ARCHITECTURE.md).

The model is cut at stage K: forward.so runs every stage and also returns the input of K;
loss.so and update.so hold stages K.. plus cross-entropy, its gradients and the optimizer step.
Stages before K and the buffers of the trainable stages (batch-norm statistics) stay frozen.
Each format supplies its `ModelParts` (imported functions, parameters, the training modules and
a verification against its own framework); the bundle is written the same way for both.
An ONNX file is cut at a tensor instead of a stage: compiler/onnx_import.py.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tvm
from torch import nn
from tqdm import tqdm

from compiler.bundle import check_replaceable, write_bundle, write_npz
from compiler.importer import ImportedFunction, StageChain, import_stages, merge_mains
from compiler.targets import TargetSpec, linker_for, resolve_target
from compiler.training import TrainingModules, build_trainable_part, optimizer_config, trainable_param_names
from compiler.verify import torch_forward_reference, verify_forward, verify_training
from device_runtime.manifest import Manifest

# Model inputs per task (ARCHITECTURE.md, "Data layer"): name, dtype, shape after the batch.
TASK_INPUTS = {"nwp": ("tokens", "int64"), "image": ("image", "float32")}
IMAGE_SHAPE = (1, 28, 28)
VERIFY_SEED = 0
TUNING_SUMMARY = "tuning/summary.json"  # per module: trials run, tasks, seconds


@dataclasses.dataclass(frozen=True)
class ForwardShape:
    """One forward function: its VM name and static input shape."""

    batch: int
    length: int | None  # nwp bucket length; None for images

    @property
    def name(self) -> str:
        return f"forward_b{self.batch}" + (f"_l{self.length}" if self.length is not None else "")

    @property
    def input_shape(self) -> list[int]:
        return [self.batch, self.length] if self.length is not None else [self.batch, *IMAGE_SHAPE]


@dataclasses.dataclass
class ModelParts:
    """What the bundle needs from a model, whatever its format (torch stages or an ONNX graph)."""

    cut: str  # the manifest's cut_layer: a stage name, or an ONNX tensor name
    forward_parts: list[tuple[ForwardShape, np.ndarray, ImportedFunction]]  # (shape, verification x, import)
    frozen_names: list[str]
    trainable_names: list[str]
    values: dict[str, np.ndarray]
    training: TrainingModules
    cut_dtype: str
    cut_shape: list[int]  # after the batch
    check: Callable[[dict[str, tvm.runtime.Module]], None]  # raises naming the first diverging tensor


def compile_bundle(model: nn.Module | str | Path, task: str, out: str | Path, *, labels: Sequence[str],
                   cut: str | None = None, target: str = "host", optimizer: str = "sgd",
                   lr: float = 0.05, train_batch: int = 16, seq_lengths: Sequence[int] = (10,),
                   tune_trials: int = 0, tuning_db: str | Path | None = None,
                   verify: bool = True) -> Path:
    """Compiles `model` into the bundle directory `out`.

    `model` is a torch module with `stages()` (`cut`: a stage name; verified against PyTorch)
    or the path of an ONNX file (`cut`: a tensor name; verified against ONNX Runtime).
    """
    if task not in TASK_INPUTS:
        raise ValueError(f"unknown task {task!r}; choose nwp or image")
    is_onnx = isinstance(model, (str, Path))
    if not is_onnx and not hasattr(model, "stages"):
        raise ValueError(f"{type(model).__name__} has no stages(): the compiler needs a staged model or an ONNX file")
    if train_batch < 1:
        raise ValueError(f"train_batch must be >= 1, got {train_batch}")
    if tune_trials < 0:
        raise ValueError(f"tune_trials must be >= 0, got {tune_trials}")
    labels = list(labels)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be at least 2 distinct names, got {len(labels)} ({len(set(labels))} distinct)")
    lengths = sorted(set(int(n) for n in seq_lengths)) if task == "nwp" else [None]
    if task == "nwp" and (not lengths or lengths[0] < 1):
        raise ValueError(f"seq_lengths must be positive lengths, got {list(seq_lengths)}")
    opt_config = optimizer_config(optimizer, float(lr))
    spec = resolve_target(target)
    linker_for(spec.name)  # a missing cross toolchain fails now, not after minutes of compiling
    check_replaceable(Path(out))

    shapes = [ForwardShape(b, n) for n in lengths for b in sorted({1, train_batch})]
    progress = tqdm(total=len(shapes) + 5, desc=f"compile {task} {spec.name}", unit="step")
    request = PartsRequest(task, cut, shapes, train_batch, len(labels), opt_config,
                           np.random.default_rng(VERIFY_SEED), progress)
    if is_onnx:
        from compiler.onnx_import import onnx_model_parts  # onnx and onnxruntime load only when needed

        parts = onnx_model_parts(Path(model), request)
    else:
        parts = _torch_model_parts(model, request)
    progress.set_description(f"compile {task} cut={parts.cut} {spec.name}")
    progress.update()

    forward_mod = _merge_forward(parts.forward_parts)
    training = parts.training
    modules = {"forward": forward_mod, "loss": training.loss, "update": training.update}
    tuning_dir, tuning_summary = None, None
    if tune_trials:
        modules, tuning_dir, tuning_summary = _tune(modules, spec, tune_trials, tuning_db)
    frozen_names, trainable_names = parts.frozen_names, parts.trainable_names
    trainable_values = [parts.values[n] for n in trainable_names]
    frozen_values = [parts.values[n] for n in frozen_names]
    check = parts.check

    input_name, input_dtype = TASK_INPUTS[task]
    label_file = "vocab.txt" if task == "nwp" else "labels.txt"
    manifest = Manifest(
        task=task, target=spec.manifest_entry(), tvm_version=tvm.__version__, cut_layer=parts.cut,
        input={"name": input_name, "dtype": input_dtype,
               "shape": [None, *shapes[-1].input_shape[1:]] if task == "image" else [None, None]},
        cut={"dtype": parts.cut_dtype, "shape": [None, *parts.cut_shape]},
        num_classes=len(labels), train_batch=train_batch, optimizer=opt_config,
        forward_functions=[{"name": s.name, "batch": s.batch, "input_shape": s.input_shape} for s in shapes],
        params={"frozen": frozen_names, "trainable": trainable_names, "optimizer_state": training.state_names},
        modules={"forward": "forward.so", "loss": "loss.so", "update": "update.so"},
        vocab_file=label_file if task == "nwp" else None,
        labels_file=label_file if task == "image" else None,
    )

    def fill(root: Path) -> None:
        """Compiles, exports and (before the bundle is moved into place) verifies every module."""
        paths = {key: root / manifest.modules[key] for key in modules}
        for key, mod in modules.items():
            spec.export(tvm.compile(mod, target=spec.tvm_target()), paths[key])
            progress.update()
        if verify and spec.is_host:  # the very files that ship
            check({key: tvm.runtime.load_module(str(path)) for key, path in paths.items()})
        elif verify:
            check({key: tvm.compile(mod, target=resolve_target("host").tvm_target()) for key, mod in modules.items()})
        progress.update()
        write_npz(root / "frozen.npz", frozen_names, frozen_values)
        write_npz(root / "trainable.npz", trainable_names, trainable_values)
        write_npz(root / "optimizer.npz", training.state_names, training.state_values)
        (root / label_file).write_text("".join(f"{label}\n" for label in labels))
        if tuning_dir is not None:
            shutil.copytree(tuning_dir, root / "tuning", ignore=shutil.ignore_patterns("logs"))
            (root / TUNING_SUMMARY).write_text(json.dumps(tuning_summary, indent=2) + "\n")

    bundle = write_bundle(Path(out), manifest, fill)
    progress.close()
    return bundle


@dataclasses.dataclass
class PartsRequest:
    """What every model format is asked for: the forward shapes, the training batch, the optimizer."""

    task: str
    cut: str | None  # None: the format's default cut (the last FC layer)
    shapes: list[ForwardShape]
    train_batch: int
    num_classes: int
    optimizer: dict[str, Any]
    rng: np.random.Generator  # verification inputs and labels
    progress: tqdm  # one step per forward shape imported

    @property
    def train_shape(self) -> ForwardShape:
        """The forward shape whose cut activations train (the longest nwp bucket)."""
        return next(s for s in reversed(self.shapes) if s.batch == self.train_batch)

    def sample_input(self, shape: ForwardShape) -> np.ndarray:
        """A verification input: token ids in the vocabulary, or images in [0, 1]."""
        if self.task == "nwp":
            return self.rng.integers(0, self.num_classes, size=shape.input_shape).astype("int64")
        return self.rng.random(shape.input_shape, dtype=np.float32)

    def sample_labels(self) -> np.ndarray:
        return self.rng.integers(0, self.num_classes, size=self.train_batch).astype("int64")


def cut_type(forward_parts: list[tuple[ForwardShape, np.ndarray, ImportedFunction]],
             cut: str) -> tuple[str, list[int]]:
    """The cut activation's dtype and shape after the batch; one shape for every length bucket."""
    cut_info = [imported.mod["main"].ret_ty.fields[1] for _, _, imported in forward_parts]
    cut_dims = {tuple(int(d) for d in list(info.shape)[1:]) for info in cut_info}
    lengths = sorted({shape.length for shape, _, _ in forward_parts if shape.length is not None})
    if len(cut_dims) != 1:
        raise ValueError(f"cut {cut!r} gives activations of shapes {sorted(cut_dims)} for the length buckets "
                         f"{lengths}: cut at or after 'last' stage, or compile one seq_lengths bucket")
    return str(cut_info[0].dtype), list(sorted(cut_dims)[0])


def _torch_model_parts(model: nn.Module, request: PartsRequest) -> ModelParts:
    """A staged torch model cut at stage `request.cut`, verified against PyTorch."""
    model = model.eval()
    stages = list(model.stages())
    names = [n for n, _ in stages]
    cut = request.cut if request.cut is not None else names[-1]
    if cut not in names:
        raise ValueError(f"unknown cut layer {cut!r}; the model's stages are: {', '.join(names)}")
    k = names.index(cut)
    trainable_names = trainable_param_names(stages, k)

    forward_parts = []
    for shape in request.shapes:
        x = request.sample_input(shape)
        imported = import_stages(stages, torch.from_numpy(x), cut_index=k)
        frozen_names = [n for n in imported.param_names if n not in trainable_names]
        forward_parts.append((shape, x, imported.reorder_params(frozen_names + trainable_names)))
        request.progress.update()
    cut_dtype, cut_shape = cut_type(forward_parts, cut)
    values = forward_parts[0][2].param_values

    x_train = next(x for s, x, _ in forward_parts if s == request.train_shape)
    with torch.no_grad():
        cut_sample = StageChain(stages[:k])(torch.from_numpy(x_train)).numpy() if k else x_train
    labels_sample = request.sample_labels()
    training = build_trainable_part(stages, k, cut_sample, request.num_classes, request.optimizer)
    frozen_values = [values[n] for n in frozen_names]
    trainable_values = [values[n] for n in trainable_names]

    def check(executables: dict[str, tvm.runtime.Module]) -> None:
        for shape, x, _ in forward_parts:
            verify_forward(executables["forward"], shape.name, x, frozen_values, trainable_values,
                           torch_forward_reference(StageChain(stages, cut_index=k)))
        verify_training(executables["loss"], executables["update"], cut_sample, labels_sample,
                        trainable_names, trainable_values, training.state_values, StageChain(stages[k:]),
                        request.optimizer)

    return ModelParts(cut, forward_parts, frozen_names, trainable_names, values, training, cut_dtype, cut_shape,
                      check)


def _merge_forward(parts: list[tuple[ForwardShape, np.ndarray, ImportedFunction]]) -> tvm.IRModule:
    """One module with a `forward_b{B}[_l{L}]` function per shape."""
    return merge_mains({shape.name: imported.mod for shape, _, imported in parts})


def _tune(modules: dict[str, tvm.IRModule], spec: TargetSpec, trials: int,
          tuning_db: str | Path | None) -> tuple[dict[str, tvm.IRModule], Path, dict[str, Any]]:
    """MetaSchedule-tuned modules (compiler.tuning), their database directory, and per module
    how many trials ran (a reused database runs none): the bundle keeps it in tuning/summary.json."""
    from compiler.tuning import tune_module

    results = {key: tune_module(mod, spec.tvm_target(), trials=trials,
                                database_dir=Path(tuning_db) if tuning_db is not None else None)
               for key, mod in modules.items()}
    summary = {key: {"trials": r.trials, "failed_trials": r.failed_trials, "tasks": r.tasks,
                     "tuned_tasks": r.tuned_tasks, "seconds": round(r.seconds, 1)}
               for key, r in results.items()}
    return {key: r.mod for key, r in results.items()}, results["forward"].database_dir, summary
