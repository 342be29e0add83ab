"""A torch model's `ModelParts`: its graph split where training begins, verified against PyTorch."""
from __future__ import annotations

import torch
from torch import nn

from compiler.importer import import_module
from compiler.parts import ModelParts, PartsRequest, cut_type
from compiler.split import (GraphSplit, check_names, default_trainable, export_graph, inference_mode, split_graph,
                            trainable_from)
from compiler.training import build_training_modules
from compiler.verify import torch_forward_reference, verify_forward, verify_training


def choose_trainable(model: nn.Module, gm: torch.fx.GraphModule, cut: str | None,
                     trainable: list[str] | None) -> list[str]:
    """Explicit names, else the parameters from module `cut` on, else the last linear layer's."""
    if cut is not None and trainable is not None:
        raise ValueError("give the trainable parameters or a cut module, not both")
    if trainable is not None:
        return check_names(model, trainable)
    return check_names(model, trainable_from(gm, cut) if cut is not None else default_trainable(gm))


def split_model(model: nn.Module, example: torch.Tensor, cut: str | None = None,
                trainable: list[str] | None = None) -> GraphSplit:
    """The model exported for `example`'s shape and split where its trainable parameters begin."""
    gm = export_graph(model, example)
    return split_graph(gm, choose_trainable(model, gm, cut, trainable))


def torch_model_parts(model: nn.Module, request: PartsRequest) -> ModelParts:
    """The model exported for every forward shape, split at its trainable parameters."""
    model = inference_mode(model)
    names: list[str] | None = None
    forward_parts, splits = [], {}
    for shape in request.shapes:
        x = request.sample_input(shape)
        gm = export_graph(model, torch.from_numpy(x))
        names = names or choose_trainable(model, gm, request.cut, request.trainable)
        split = splits[shape] = split_graph(gm, names)
        imported = import_module(split.forward, torch.from_numpy(x))
        frozen_names = [n for n in imported.param_names if n not in names]
        forward_parts.append((shape, x, imported.reorder_params(frozen_names + names)))
        request.progress.update()
    assert names is not None
    train: GraphSplit = splits[request.train_shape]
    cut_layer = request.cut or train.cut_layer
    cut_dtype, cut_shape = cut_type(forward_parts, cut_layer)
    values = forward_parts[0][2].param_values

    x_train = next(x for s, x, _ in forward_parts if s == request.train_shape)
    with torch.no_grad():
        cut_sample = train.forward(torch.from_numpy(x_train))[1].numpy()
    labels_sample = request.sample_labels()
    head = import_module(train.trainable, torch.from_numpy(cut_sample), differentiable=True).reorder_params(names)
    training = build_training_modules(head, request.num_classes, request.optimizer)
    frozen_values = [values[n] for n in frozen_names]
    trainable_values = [values[n] for n in names]

    def check(executables) -> None:
        for shape, x, _ in forward_parts:
            verify_forward(executables["forward"], shape.name, x, frozen_values, trainable_values,
                           torch_forward_reference(splits[shape].forward))
        verify_training(executables["loss"], executables["update"], cut_sample, labels_sample,
                        names, trainable_values, training.state_values, train.trainable, request.optimizer)

    return ModelParts(cut_layer, forward_parts, frozen_names, names, values, training, cut_dtype,
                      cut_shape, check)
