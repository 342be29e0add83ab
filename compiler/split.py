"""Any torch model cut where its trainable parameters begin: the graph split of transfer learning.

The model is exported (`torch.export`) for one input shape. The trainable region is every node
that depends on a trainable parameter; the cut is the one activation that crosses into it from
the input. From that graph come two modules, both naming parameters as the model's state dict:
- `forward`: the whole model returning `(logits, cut)`, for forward.so and the cache;
- `trainable`: `cut -> logits`, the part loss.so and update.so train (frozen parameters it
  reads become buffers, so the importer makes them constants).
The trainable set is explicit (ORT's `requires_grad`), a module name `K` (K's parameters and
every parameter first used after K begins, in execution order), or by default the parameters of
the last linear layer. No stage list is needed, so any model compiles the same way.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import fx, nn

LINEAR_OPS = (torch.ops.aten.linear.default, torch.ops.aten.addmm.default, torch.ops.aten.matmul.default)


@dataclasses.dataclass
class GraphSplit:
    """The model for one input shape, split at the cut (see the module docstring)."""

    forward: nn.Module  # x -> (logits, cut)
    trainable: nn.Module  # cut -> logits
    cut_layer: str  # the module the trainable region begins with (the manifest's cut_layer)


def inference_mode(model: nn.Module) -> nn.Module:
    """`model.eval()`; the module of an exported program refuses it and is already as exported."""
    try:
        return model.eval()
    except NotImplementedError:
        return model


def program_module(program: torch.export.ExportedProgram) -> fx.GraphModule:
    """The program as a module without its input-shape guards, so it can be exported again for
    other shapes (a program saved with a static batch still compiles for batch 1 and the train
    batch, unless its ops baked that batch in)."""
    gm = program.module()
    for node in [n for n in gm.graph.nodes if n.op == "call_module" and not n.users]:
        gm.graph.erase_node(node)  # export's input guards (`_guards_fn`): nothing reads them
    gm.recompile()
    return gm


def export_graph(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """The model as an FX graph of ATen ops, parameters as `get_attr` of their state-dict names."""
    with torch.no_grad():
        try:
            program = torch.export.export(inference_mode(model), (example,))
        except Exception as err:  # e.g. a program whose ops baked in the batch or length it was exported with
            raise ValueError(f"cannot export the model for input shape {list(example.shape)}: "
                             f"{str(err).splitlines()[0]} (an exported program needs dynamic batch and "
                             "length dimensions to compile for other shapes)") from err
    return program_module(program)


def _param_nodes(gm: fx.GraphModule) -> dict[str, fx.Node]:
    params = dict(gm.named_parameters())
    return {n.target: n for n in gm.graph.nodes if n.op == "get_attr" and n.target in params}


def _module_of(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def default_trainable(gm: fx.GraphModule) -> list[str]:
    """The parameters of the last linear layer that runs (its weight and bias)."""
    params = _param_nodes(gm)
    by_node = {node: name for name, node in params.items()}
    linear = [n for n in gm.graph.nodes if n.op == "call_function" and n.target in LINEAR_OPS
              and any(a in by_node for a in n.args)]
    if not linear:
        raise ValueError("the model has no linear layer to train by default: name the trainable parameters")
    return [by_node[a] for a in linear[-1].args if a in by_node]


def trainable_from(gm: fx.GraphModule, module: str) -> list[str]:
    """Parameters of `module` and all first used after `module` begins, in execution order."""
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    starts = [i for i, n in enumerate(nodes) if _module_of(n) == module or _module_of(n).startswith(module + ".")]
    if not starts:
        modules = sorted({path for n in nodes for path, _ in (n.meta.get("nn_module_stack") or {}).values()} - {""})
        raise ValueError(f"unknown cut module {module!r}; the model runs: {', '.join(modules)}")
    first_use: dict[str, int] = {}
    for name, node in _param_nodes(gm).items():
        uses = [i for i, n in enumerate(nodes) if node in n.all_input_nodes]
        if uses:
            first_use[name] = min(uses)
    names = [name for name, i in first_use.items() if i >= starts[0]]
    if not names:
        raise ValueError(f"no parameter is used from module {module!r} on: nothing would train")
    return names


def check_names(model: nn.Module, names: Sequence[str]) -> list[str]:
    """`names` in state-dict order; ValueError naming an unknown name or a buffer."""
    params = [n for n, _ in model.named_parameters()]
    buffers = {n for n, _ in model.named_buffers()}
    for name in names:
        if name in buffers:
            raise ValueError(f"{name!r} is a buffer, not a parameter: it cannot train")
        if name not in params:
            shown = ", ".join(params[:6]) + (", ..." if len(params) > 6 else "")
            raise ValueError(f"unknown trainable parameter {name!r}; the model's parameters are: {shown}")
    if not names:
        raise ValueError("the trainable parameter list is empty")
    return [n for n in params if n in set(names)]


def _descendants(seeds: Sequence[fx.Node]) -> set[fx.Node]:
    seen, todo = set(seeds), list(seeds)
    while todo:
        for user in todo.pop().users:
            if user not in seen:
                seen.add(user)
                todo.append(user)
    return seen


def _ancestors(nodes: set[fx.Node], stop: fx.Node) -> set[fx.Node]:
    """`nodes` and what they read, not looking past `stop`."""
    seen, todo = set(nodes), list(nodes)
    while todo:
        for parent in todo.pop().all_input_nodes:
            if parent not in seen and parent is not stop:
                seen.add(parent)
                todo.append(parent)
    return seen


def split_graph(gm: fx.GraphModule, trainable_names: Sequence[str]) -> GraphSplit:
    """Splits the exported graph at the single activation that feeds the trainable region."""
    params = _param_nodes(gm)
    (inp,) = [n for n in gm.graph.nodes if n.op == "placeholder"]
    output = next(n for n in gm.graph.nodes if n.op == "output")
    outs = output.args[0]
    if not isinstance(outs, (tuple, list)) or len(outs) != 1:
        raise ValueError(f"the model must return one tensor (the logits), it returns {len(outs)}")
    (logits,) = outs
    trained = _descendants([params[n] for n in trainable_names]) - {output}
    if logits not in trained:
        raise ValueError("the logits do not depend on the trainable parameters")
    activations = _descendants([inp])
    boundary = [n for n in gm.graph.nodes if n in activations and n not in trained
                and any(u in trained for u in n.users)]
    if len(boundary) != 1:
        raise ValueError(f"the trainable parameters read {len(boundary)} activations of the frozen part "
                         f"({', '.join(n.name for n in boundary)}): choose parameters after a point where one "
                         "tensor flows (e.g. a whole block or the head)")
    (cut,) = boundary

    forward_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op != "output":
            env[node] = forward_graph.node_copy(node, env.__getitem__)
    forward_graph.output((env[logits], env[cut]))

    # The trainable part: the cut as input, the trained nodes and whatever constants they read.
    needed = _ancestors(trained, stop=cut)
    suffix = fx.Graph()
    env = {cut: suffix.placeholder("cut")}
    for node in gm.graph.nodes:
        if node in needed:
            env[node] = suffix.node_copy(node, env.__getitem__)
    suffix.output(env[logits])
    trainable = fx.GraphModule(gm, suffix)
    frozen_inside = [n for n, _ in trainable.named_parameters() if n not in set(trainable_names)]
    for name in frozen_inside:  # frozen weights the head reads: constants of the trainable part
        owner, _, leaf = name.rpartition(".")
        module = trainable.get_submodule(owner)
        value = getattr(module, leaf).detach()
        delattr(module, leaf)
        module.register_buffer(leaf, value)
    first = next(n for n in gm.graph.nodes if n in trained and n.op == "call_function")
    return GraphSplit(fx.GraphModule(gm, forward_graph), trainable, _module_of(first) or first.name)


def embedding_rows(gm: fx.GraphModule) -> int | None:
    """Rows of the embedding the model input indexes directly: the bound of its token ids."""
    (inp,) = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for user in inp.users:
        if user.target == torch.ops.aten.embedding.default and user.args[1] is inp:
            return int(gm.get_parameter(user.args[0].target).shape[0])
    return None
