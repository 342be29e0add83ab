"""`compile_bundle`: a staged torch model -> a verified artifact bundle (ARCHITECTURE.md).

The model is cut at stage K: forward.so runs every stage and also returns the input of K;
loss.so and update.so hold stages K.. plus cross-entropy, its gradients and the optimizer step.
Stages before K and the buffers of the trainable stages (batch-norm statistics) stay frozen.
"""
from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import tvm
from torch import nn
from tqdm import tqdm

from compiler.bundle import check_replaceable, write_bundle, write_npz
from compiler.importer import ImportedFunction, StageChain, import_stages
from compiler.targets import TargetSpec, linker_for, resolve_target
from compiler.training import build_trainable_part, optimizer_config, trainable_param_names
from compiler.verify import verify_forward, verify_training
from device_runtime.manifest import Manifest

# Model inputs per task (ARCHITECTURE.md, "Data layer"): name, dtype, shape after the batch.
TASK_INPUTS = {"nwp": ("tokens", "int64"), "image": ("image", "float32")}
IMAGE_SHAPE = (1, 28, 28)
VERIFY_SEED = 0


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


def compile_bundle(model: nn.Module, task: str, out: str | Path, *, labels: Sequence[str],
                   cut: str | None = None, target: str = "host", optimizer: str = "sgd",
                   lr: float = 0.05, train_batch: int = 16, seq_lengths: Sequence[int] = (10,),
                   tune_trials: int = 0, tuning_db: str | Path | None = None,
                   verify: bool = True) -> Path:
    """Compiles `model` (a torch module with `stages()`) into the bundle directory `out`."""
    if task not in TASK_INPUTS:
        raise ValueError(f"unknown task {task!r}; choose nwp or image")
    if not hasattr(model, "stages"):
        raise ValueError(f"{type(model).__name__} has no stages(): the compiler needs a staged model")
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

    model = model.eval()
    stages = list(model.stages())
    names = [n for n, _ in stages]
    cut = cut if cut is not None else names[-1]
    if cut not in names:
        raise ValueError(f"unknown cut layer {cut!r}; the model's stages are: {', '.join(names)}")
    k = names.index(cut)
    trainable_names = trainable_param_names(stages, k)

    rng = np.random.default_rng(VERIFY_SEED)
    shapes = [ForwardShape(b, n) for n in lengths for b in sorted({1, train_batch})]
    progress = tqdm(total=len(shapes) + 5, desc=f"compile {task} cut={cut} {spec.name}", unit="step")

    forward_parts = []  # (shape, verification input, imported function taking (x, *frozen, *trainable))
    for shape in shapes:
        x = _sample_input(task, shape.input_shape, len(labels), rng)
        imported = import_stages(stages, torch.from_numpy(x), cut_index=k)
        frozen_names = [n for n in imported.param_names if n not in trainable_names]
        forward_parts.append((shape, x, imported.reorder_params(frozen_names + trainable_names)))
        progress.update()
    values = forward_parts[0][2].param_values

    train_shape = next(s for s, _, _ in forward_parts if s.batch == train_batch and s.length == lengths[-1])
    cut_info = [f.mod["main"].ret_ty.fields[1] for f in (p[2] for p in forward_parts)]
    cut_dims = {tuple(int(d) for d in list(info.shape)[1:]) for info in cut_info}
    if len(cut_dims) != 1:
        raise ValueError(f"cut {cut!r} gives activations of shapes {sorted(cut_dims)} for the length buckets "
                         f"{lengths}: cut at or after 'last' stage, or compile one seq_lengths bucket")
    x_train = next(x for s, x, _ in forward_parts if s == train_shape)
    with torch.no_grad():
        cut_sample = StageChain(stages[:k])(torch.from_numpy(x_train)).numpy() if k else x_train
    labels_sample = rng.integers(0, len(labels), size=train_batch).astype("int64")
    training = build_trainable_part(stages, k, cut_sample, len(labels), opt_config)
    progress.update()

    forward_mod = _merge_forward(forward_parts)
    modules = {"forward": forward_mod, "loss": training.loss, "update": training.update}
    tuning_dir = None
    if tune_trials:
        modules, tuning_dir = _tune(modules, spec, tune_trials, tuning_db)
    trainable_values = [values[n] for n in trainable_names]
    frozen_values = [values[n] for n in frozen_names]

    def check(executables: dict[str, tvm.runtime.Module]) -> None:
        """Runs the host build against PyTorch; raises naming the first tensor that diverges."""
        for shape, x, _ in forward_parts:
            verify_forward(executables["forward"], shape.name, x, frozen_values, trainable_values,
                           StageChain(stages, cut_index=k))
        verify_training(executables["loss"], executables["update"], cut_sample, labels_sample,
                        trainable_names, trainable_values, training.state_values, StageChain(stages[k:]),
                        opt_config)

    input_name, input_dtype = TASK_INPUTS[task]
    label_file = "vocab.txt" if task == "nwp" else "labels.txt"
    manifest = Manifest(
        task=task, target=spec.manifest_entry(), tvm_version=tvm.__version__, cut_layer=cut,
        input={"name": input_name, "dtype": input_dtype,
               "shape": [None, *shapes[-1].input_shape[1:]] if task == "image" else [None, None]},
        cut={"dtype": str(cut_info[0].dtype), "shape": [None, *sorted(cut_dims)[0]]},
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

    bundle = write_bundle(Path(out), manifest, fill)
    progress.close()
    return bundle


def _sample_input(task: str, shape: list[int], num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A verification input: token ids in the vocabulary, or images in [0, 1]."""
    if task == "nwp":
        return rng.integers(0, num_classes, size=shape).astype("int64")
    return rng.random(shape, dtype=np.float32)


def _merge_forward(parts: list[tuple[ForwardShape, np.ndarray, ImportedFunction]]) -> tvm.IRModule:
    """One module with a `forward_b{B}[_l{L}]` function per shape."""
    return tvm.IRModule({shape.name: imported.mod["main"].with_attr("global_symbol", shape.name)
                         for shape, _, imported in parts})


def _tune(modules: dict[str, tvm.IRModule], spec: TargetSpec, trials: int,
          tuning_db: str | Path | None) -> tuple[dict[str, tvm.IRModule], Path]:
    """MetaSchedule-tuned modules (compiler.tuning) and the database directory they used."""
    from compiler.tuning import tune_module

    results = {key: tune_module(mod, spec.tvm_target(), trials=trials,
                                database_dir=Path(tuning_db) if tuning_db is not None else None)
               for key, mod in modules.items()}
    return {key: r.mod for key, r in results.items()}, results["forward"].database_dir
