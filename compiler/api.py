"""`compile_bundle`: any torch model, exported program or ONNX file -> a verified artifact bundle.

One entry point, as ONNX Runtime's artifact generator: the model, an example input, and what
trains (explicit parameter names like ORT's `requires_grad`, a module to cut at, or by default
the last linear layer). forward.so runs the whole model and also returns the cut activation;
loss.so and update.so hold the trainable part, cross-entropy, its gradients and the optimizer
step. The input spec (name, dtype, shape, token range) comes from the example input and travels
in the manifest, so neither the compiler nor the device knows any task. Each format supplies
its `ModelParts` (compiler/torch_parts.py, compiler/onnx_import.py); the bundle is written the
same way for both.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tvm
from torch import nn
from tqdm import tqdm

from compiler.bundle import check_replaceable, write_bundle, write_npz
from compiler.importer import ImportedFunction, merge_mains
from compiler.parts import ForwardShape, InputSpec, PartsRequest, input_spec
from compiler.graph import prepare_graph
from compiler.schedules import schedule_module
from compiler.split import embedding_rows, export_graph, program_module
from compiler.targets import TargetSpec, linker_for, resolve_target
from compiler.training import optimizer_config
from compiler.verify import verify_where_it_runs
from device_runtime.manifest import Manifest
from device_runtime.tokenizer import Tokenizer

VERIFY_SEED = 0
TUNING_SUMMARY = "tuning/summary.json"  # trials run, tasks, seconds, and per task its share and winner
LABELS_FILE, VOCAB_FILE, SYNONYMS_FILE = "labels.txt", "vocab.txt", "synonyms.json"

Model = nn.Module | torch.export.ExportedProgram | str | Path


def compile_bundle(model: Model, example_input: Any, out: str | Path, *, labels: Sequence[str],
                   cut: str | None = None, trainable: Sequence[str] | None = None,
                   lengths: Sequence[int] | None = None, token_range: int | None = None,
                   tokenizer: Tokenizer | None = None, synonyms: Mapping[str, Sequence[str]] | None = None,
                   augmentation: str | None = "auto", name: str | None = None, target: str = "host",
                   optimizer: str = "sgd", lr: float = 0.05, train_batch: int = 16, tune_trials: int = 0,
                   tuning_db: str | Path | None = None, verify: bool = True) -> Path:
    """Compiles `model` into the bundle directory `out`.

    `model`: a torch module, a `torch.export` program (its example input is used when
    `example_input` is None), or the path of an ONNX file (`cut`: a tensor name; verified
    against ONNX Runtime). `example_input`: one input batch (tensor or array), which fixes the
    input's name, dtype and shape. `labels`: class names, line i naming class i. `cut`: a module
    name, training it and everything after; `trainable`: explicit parameter names (state-dict
    names); neither: the last linear layer. `lengths`: sizes of axis 1 to compile (token
    sequences), one forward function each. `token_range`: bound of integer ids (default: the
    rows of the embedding the input feeds). `tokenizer` (and `synonyms` for text augmentation)
    travel in the bundle. `augmentation`: "images", "text", None, or "auto" (text for a tokenizer,
    images for float [batch, C, H, W] inputs).
    """
    if isinstance(model, torch.export.ExportedProgram):
        if example_input is None:
            example_input = model.example_inputs[0][0]
        model = program_module(model)
    is_onnx = isinstance(model, (str, Path))
    if not is_onnx and not isinstance(model, nn.Module):
        raise ValueError(f"cannot compile a {type(model).__name__}: give a torch module, an exported program "
                         "or an ONNX file")
    if train_batch < 1:
        raise ValueError(f"train_batch must be >= 1, got {train_batch}")
    if tune_trials < 0:
        raise ValueError(f"tune_trials must be >= 0, got {tune_trials}")
    labels = list(labels)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be at least 2 distinct names, got {len(labels)} ({len(set(labels))} distinct)")
    opt_config = optimizer_config(optimizer, float(lr))
    spec = resolve_target(target)
    linker_for(spec.name)  # a missing cross toolchain fails now, not after minutes of compiling
    check_replaceable(Path(out))
    if is_onnx:
        from compiler.onnx_import import onnx_input_spec  # onnx and onnxruntime load only when needed

        if trainable is not None:
            raise ValueError("an ONNX model is cut at a tensor: name it as the cut, not trainable parameters")
        inputs = onnx_input_spec(Path(model), example_input, lengths, token_range)
    else:
        inputs = torch_input_spec(model, example_input, lengths, token_range)
    augmentation = _augmentation(augmentation, inputs, tokenizer)

    shapes = inputs.shapes(train_batch)
    display = name or (Path(model).stem if is_onnx else type(model).__name__)
    progress = tqdm(total=len(shapes) + 5, desc=f"compile {display} {spec.name}", unit="step", disable=None)
    request = PartsRequest(inputs, cut, list(trainable) if trainable is not None else None, shapes, train_batch,
                           len(labels), opt_config, np.random.default_rng(VERIFY_SEED), progress)
    if is_onnx:
        from compiler.onnx_import import onnx_model_parts

        parts = onnx_model_parts(Path(model), request)
    else:
        from compiler.torch_parts import torch_model_parts

        parts = torch_model_parts(model, request)
    progress.set_description(f"compile {display} cut={parts.cut} {spec.name}")
    progress.update()

    forward_mod = _merge_forward(parts.forward_parts)
    training = parts.training
    modules = {key: prepare_graph(mod) for key, mod in
               {"forward": forward_mod, "loss": training.loss, "update": training.update}.items()}
    tuning_records, tuning_summary = [], None
    if tune_trials:
        modules, tuning_records, tuning_summary = _tune(modules, spec, tune_trials, tuning_db)
    modules = {key: schedule_module(mod, spec.tvm_target()) for key, mod in modules.items()}  # what tuning left naive
    frozen_names, trainable_names = parts.frozen_names, parts.trainable_names
    trainable_values = [parts.values[n] for n in trainable_names]
    frozen_values = [parts.values[n] for n in frozen_names]
    check = parts.check

    labels_file = VOCAB_FILE if tokenizer is not None and labels == tokenizer.vocab else LABELS_FILE
    manifest = Manifest(
        model=display, target=spec.manifest_entry(), tvm_version=tvm.__version__, cut_layer=parts.cut,
        input=inputs.manifest_entry(), cut={"dtype": parts.cut_dtype, "shape": [None, *parts.cut_shape]},
        num_classes=len(labels), train_batch=train_batch, optimizer=opt_config,
        forward_functions=[{"name": s.name, "batch": s.batch, "input_shape": s.input_shape} for s in shapes],
        params={"frozen": frozen_names, "trainable": trainable_names, "optimizer_state": training.state_names},
        modules={"forward": "forward.so", "loss": "loss.so", "update": "update.so"},
        labels_file=labels_file,
        tokenizer=tokenizer.manifest_entry(VOCAB_FILE) if tokenizer is not None else None,
        augmentation=augmentation, synonyms_file=SYNONYMS_FILE if synonyms is not None else None,
        seed=VERIFY_SEED,
    )

    def fill(root: Path) -> None:
        """Compiles, exports and (before the bundle is moved into place) verifies every module."""
        paths = {key: root / manifest.modules[key] for key in modules}
        for key, mod in modules.items():
            spec.export(tvm.compile(mod, target=spec.tvm_target()), paths[key])
            progress.update()
        if verify:  # the very files that ship, where they run (compiler.verify)
            manifest.verified_on = verify_where_it_runs(spec.name, paths, modules, check)
        progress.update()
        write_npz(root / "frozen.npz", frozen_names, frozen_values)
        write_npz(root / "trainable.npz", trainable_names, trainable_values)
        write_npz(root / "optimizer.npz", training.state_names, training.state_values)
        _write_lines(root / labels_file, labels)
        if tokenizer is not None and labels_file != VOCAB_FILE:
            _write_lines(root / VOCAB_FILE, tokenizer.vocab)
        if synonyms is not None:
            from augment.synonyms import save_synonym_table

            save_synonym_table(synonyms, root / SYNONYMS_FILE)
        if tuning_summary is not None:
            from compiler.tuning import write_records

            write_records(tuning_records, root / "tuning")
            (root / TUNING_SUMMARY).write_text(json.dumps(tuning_summary, indent=2) + "\n")

    bundle = write_bundle(Path(out), manifest, fill)
    progress.close()
    return bundle


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def as_example(example_input: Any) -> torch.Tensor:
    """One input batch as a tensor (a tensor, an array, or a 1-tuple of either)."""
    if isinstance(example_input, (tuple, list)):
        if len(example_input) != 1:
            raise ValueError(f"the compiler takes models of one input; got {len(example_input)} example inputs")
        (example_input,) = example_input
    if isinstance(example_input, np.ndarray):
        example_input = torch.from_numpy(example_input)
    if not isinstance(example_input, torch.Tensor):
        raise ValueError(f"example input must be a tensor or numpy array, got {type(example_input).__name__}")
    if example_input.ndim < 1:
        raise ValueError("example input needs a batch axis")
    return example_input


def torch_input_spec(model: nn.Module, example_input: Any, lengths: Sequence[int] | None,
                     token_range: int | None) -> InputSpec:
    """The spec of a torch model's input, read from its example and exported graph."""
    example = as_example(example_input)
    gm = export_graph(model, example)
    (placeholder,) = [n for n in gm.graph.nodes if n.op == "placeholder"]
    found = embedding_rows(gm)
    return input_spec(placeholder.target, str(example.dtype).removeprefix("torch."), example.shape[1:], lengths,
                      token_range if token_range is not None else found)


def _augmentation(kind: str | None, inputs: InputSpec, tokenizer: Tokenizer | None) -> str | None:
    if kind != "auto":
        if kind == "text" and tokenizer is None:
            raise ValueError("text augmentation needs the tokenizer in the bundle")
        return kind
    if tokenizer is not None and inputs.token_range is not None:
        return "text"
    return "images" if inputs.dtype == "float32" and len(inputs.sample_shape) == 3 else None


def _merge_forward(parts: list[tuple[ForwardShape, np.ndarray, ImportedFunction]]) -> tvm.IRModule:
    """One module with a `forward_b{B}[_l{L}]` function per shape."""
    return merge_mains({shape.name: imported.mod for shape, _, imported in parts})


def _tune(modules: dict[str, tvm.IRModule], spec: TargetSpec, trials: int,
          tuning_db: str | Path | None) -> tuple[dict[str, tvm.IRModule], Any, dict[str, Any]]:
    """MetaSchedule-tuned modules (compiler.tuning: `trials` in all, for the functions a device
    calls), the records they apply (the bundle ships those, not the whole database), and what
    tuning did: the bundle keeps it in tuning/summary.json."""
    from compiler.tuning import tune_modules, tuning_device

    called = {"forward": [gv.name_hint for gv, f in modules["forward"].functions.items()
                          if isinstance(f, tvm.relax.Function)],
              "loss": [], "update": ["update"]}  # `loss` and `gradients` serve verification
    with tuning_device(spec.name) as device:  # linux-arm64: the emulated device's RPC server measures
        result = tune_modules(modules, spec.tvm_target(), trials=trials, device=device, called=called,
                              database_dir=Path(tuning_db) if tuning_db is not None else None)
    summary = {"trials_requested": trials, "trials": result.trials, "failed_trials": result.failed_trials,
               "tasks": len(result.tasks), "tuned_tasks": result.tuned_tasks, "records_shipped": len(result.records),
               "seconds": round(result.seconds, 1),
               "measured_on": device.description if device is not None else "this machine",
               "database": str(result.database_dir), "per_task": [t.to_json() for t in result.tasks],
               "end_to_end": {key: race.to_json() for key, race in result.races.items()}}
    return result.mods, result.records, summary
