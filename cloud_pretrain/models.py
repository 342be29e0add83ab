"""The two task models, each a named sequence of stages so any stage K can be the cut.

Contract with the compiler: `model.stages()` lists `(name, module)` pairs whose composition
is `model.forward`; `split_at(model, cut)` gives the frozen part (stages before `cut`) and the
trainable part (`cut` and after). Every stage takes and returns one tensor.

Pruning contract: `prunable_groups()` maps each group of units that can be removed together
(the filters of a conv with every tensor that reads them; the hidden units of an LSTM with
their gate blocks) to its current size; `unit_norms(group)` ranks the units by the L2 norm of
their weights; `keep_units(group, idx)` rebuilds the affected layers smaller and records the
new size in `config`, so `build_model(task, **model.config)` makes a model of the same shape.

Low-rank contract (cloud_pretrain/lowrank.py): `rank_groups()` maps each layer that can be
factorised by truncated SVD to its current rank (min(in, out) while it is not factorised);
`set_rank(group, rank)` factorises it, or truncates its factors, and records the rank in
`config["ranks"]`. Pruning a group that feeds a factorised layer cuts the layer's first factor.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from cloud_pretrain import lowrank, surgery
from cloud_pretrain.lowrank import LowRankLinear


class StagedModel(nn.Module):
    """A model that is the composition of its named stages."""

    config: dict[str, Any]

    def stages(self) -> list[tuple[str, nn.Module]]:
        raise NotImplementedError

    def stage_names(self) -> list[str]:
        return [name for name, _ in self.stages()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, stage in self.stages():
            x = stage(x)
        return x

    def prunable_groups(self) -> dict[str, int]:
        raise NotImplementedError

    def unit_norms(self, group: str) -> torch.Tensor:
        raise NotImplementedError

    def keep_units(self, group: str, idx: torch.Tensor) -> None:
        raise NotImplementedError

    def rank_groups(self) -> dict[str, int]:
        return {}

    def set_rank(self, group: str, rank: int) -> None:
        raise NotImplementedError

    def check_rank_group(self, group: str) -> None:
        """Raises naming the factorisable layers when `group` is not one."""
        groups = self.rank_groups()
        if group not in groups:
            raise ValueError(f"unknown factorisable layer {group!r}; this model has: {', '.join(groups) or 'none'}")

    def _refit_ranks(self) -> None:
        """Factors wider than the rank pruning left them are refit at that rank: exact, since
        their product has no higher rank."""
        for group, stored in list(self.config.get("ranks", {}).items()):
            rank = self.rank_groups()[group]
            if rank < stored:
                self.set_rank(group, rank)

    def _apply_ranks(self, ranks: dict[str, int] | None) -> None:
        """Factorises the layers `ranks` names (a model rebuilt from its config); weights come later."""
        self.config["ranks"] = {}
        for group, rank in (ranks or {}).items():
            self.check_rank_group(group)
            self.set_rank(group, rank)

    def check_group(self, group: str) -> None:
        """Raises naming the valid groups when `group` is not one."""
        groups = self.prunable_groups()
        if group not in groups:
            raise ValueError(f"unknown prunable group {group!r}; this model has: {', '.join(groups)}")


class LSTMLayer(nn.Module):
    """One LSTM layer returning its whole output sequence (batch first).

    `project` (None until the input weights are factorised) is the bias-free first factor of
    W_ih: the LSTM then reads `project(x)`, of the factorisation's rank.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.project: nn.Linear | None = None
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)

    @property
    def input_size(self) -> int:
        return self.project.in_features if self.project is not None else self.lstm.input_size

    def input_rank(self) -> int:
        """The rank of the input weights: at most min(4h, in), and the projection's size."""
        full = min(surgery.LSTM_GATES * self.lstm.hidden_size, self.input_size)
        return full if self.project is None else min(self.project.out_features, full)

    def factorise_input(self, rank: int) -> None:
        self.project, self.lstm = lowrank.factorise_lstm_input(self.lstm, self.project, rank)

    def keep_inputs(self, idx: torch.Tensor) -> None:
        """Keeps input features `idx` (the previous layer's pruned units)."""
        if self.project is not None:
            self.project = surgery.linear_keep(self.project, in_idx=idx)
        else:
            self.lstm = surgery.lstm_keep(self.lstm, in_idx=idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.project is not None:
            x = self.project(x)
        return self.lstm(x)[0]


def linear_keep_inputs(layer: nn.Linear | LowRankLinear, idx: torch.Tensor) -> nn.Linear | LowRankLinear:
    """`layer` keeping input columns `idx`; a factorised layer's first factor is cut."""
    if isinstance(layer, LowRankLinear):
        layer.down = surgery.linear_keep(layer.down, in_idx=idx)
        return layer
    return surgery.linear_keep(layer, in_idx=idx)


class LastStep(nn.Module):
    """Output at the last time step. A static index: TVM imports `x[:, -1]` wrongly (TVM_NOTES)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, x.shape[1] - 1]


class NextWordLSTM(StagedModel):
    """Embedding, two stacked LSTM layers, last step, FC over the vocabulary.

    Inputs are int64 token ids [batch, length], left-padded with id 0 inside a length bucket.
    `hidden2_size` (default: `hidden_size`) lets pruning shrink the two LSTM layers apart.
    Prunable groups: `embed` (embedding dimensions, read by lstm1's input weights), `lstm1`
    and `lstm2` (hidden units: four gate rows each, read by the next layer's input columns).
    Factorisable layers (`ranks`): `lstm1` and `lstm2` (input weights W_ih), `fc` (the head).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden_size: int = 128,
                 hidden2_size: int | None = None, ranks: dict[str, int] | None = None) -> None:
        super().__init__()
        hidden2_size = hidden2_size or hidden_size
        self.config = {"vocab_size": vocab_size, "embed_dim": embed_dim, "hidden_size": hidden_size,
                       "hidden2_size": hidden2_size}
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm1 = LSTMLayer(embed_dim, hidden_size)
        self.lstm2 = LSTMLayer(hidden_size, hidden2_size)
        self.last = LastStep()
        self.fc: nn.Linear | LowRankLinear = nn.Linear(hidden2_size, vocab_size)
        self._apply_ranks(ranks)

    def stages(self) -> list[tuple[str, nn.Module]]:
        return [("embed", self.embed), ("lstm1", self.lstm1), ("lstm2", self.lstm2),
                ("last", self.last), ("fc", self.fc)]

    def prunable_groups(self) -> dict[str, int]:
        return {"embed": self.config["embed_dim"], "lstm1": self.config["hidden_size"],
                "lstm2": self.config["hidden2_size"]}

    def unit_norms(self, group: str) -> torch.Tensor:
        self.check_group(group)
        if group == "embed":
            return self.embed.weight.detach().norm(dim=0)
        return surgery.lstm_unit_norms(getattr(self, group).lstm)

    def keep_units(self, group: str, idx: torch.Tensor) -> None:
        self.check_group(group)
        if group == "embed":
            self.embed = surgery.embedding_keep(self.embed, idx)
            self.lstm1.keep_inputs(idx)
            self.config["embed_dim"] = len(idx)
        elif group == "lstm1":
            self.lstm1.lstm = surgery.lstm_keep(self.lstm1.lstm, hidden_idx=idx)
            self.lstm2.keep_inputs(idx)
            self.config["hidden_size"] = len(idx)
        else:
            self.lstm2.lstm = surgery.lstm_keep(self.lstm2.lstm, hidden_idx=idx)
            self.fc = linear_keep_inputs(self.fc, idx)
            self.config["hidden2_size"] = len(idx)
        self._refit_ranks()

    def rank_groups(self) -> dict[str, int]:
        return {"lstm1": self.lstm1.input_rank(), "lstm2": self.lstm2.input_rank(),
                "fc": lowrank.current_rank(self.fc)}

    def set_rank(self, group: str, rank: int) -> None:
        self.check_rank_group(group)
        if group == "fc":
            self.fc = lowrank.factorise(self.fc, rank)
        else:
            getattr(self, group).factorise_input(rank)
        self.config["ranks"][group] = rank


class GlobalPool(nn.Module):
    """Global average pool and flatten: [B, C, H, W] -> [B, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class MobileNetV2Image(StagedModel):
    """torchvision MobileNetV2 for 28x28 grey images and 62 classes (FEMNIST).

    Input adaptation: the stem conv takes 1 channel with stride 1 instead of 3 channels with
    stride 2, so a 28x28 image keeps a 2x2 map at the last stage (an overall stride of 16)
    rather than shrinking to 1x1. Inputs are float32 [batch, 1, 28, 28] in [0, 1].

    Prunable groups: `features.0` (stem filters, read by block 1's depthwise conv and its
    projection; not at widths where block 1 adds them to its output), `features.2`..`features.17` (the expanded channels inside an inverted
    residual block: expansion filters, their depthwise conv, the projection's inputs) and
    `features.18` (last 1x1 conv, read by the classifier). Block outputs are not prunable:
    residual additions tie them across blocks. `channels` holds the pruned group sizes.
    Factorisable layer (`ranks`): `classifier` (its Linear).
    """

    def __init__(self, num_classes: int = 62, width_mult: float = 0.5,
                 channels: dict[str, int] | None = None, ranks: dict[str, int] | None = None) -> None:
        super().__init__()
        net = mobilenet_v2(weights=None, num_classes=num_classes, width_mult=width_mult)
        stem = net.features[0][0]
        net.features[0][0] = nn.Conv2d(1, stem.out_channels, 3, stride=1, padding=1, bias=False)
        self.features = net.features
        self.pool = GlobalPool()
        self.classifier = net.classifier  # Dropout (a no-op in eval), Linear
        self.config = {"num_classes": num_classes, "width_mult": width_mult, "channels": {}}
        for group, size in (channels or {}).items():
            self.check_group(group)
            if not 0 < size <= self.prunable_groups()[group]:
                raise ValueError(f"channels[{group!r}] = {size} is outside 1..{self.prunable_groups()[group]}")
            self.keep_units(group, torch.arange(size))
        self._apply_ranks(ranks)

    def stages(self) -> list[tuple[str, nn.Module]]:
        feats = [(f"features.{i}", layer) for i, layer in enumerate(self.features)]
        return feats + [("pool", self.pool), ("classifier", self.classifier)]

    def _producer(self, group: str) -> nn.Sequential:
        """The Conv-BN-ReLU6 whose filters make the group's channels."""
        i = int(group.split(".")[1])
        return self.features[i] if i in (0, len(self.features) - 1) else self.features[i].conv[0]

    def prunable_groups(self) -> dict[str, int]:
        last = len(self.features) - 1
        stem = [] if self.features[1].use_res_connect else ["features.0"]  # narrow widths tie it to a residual
        names = stem + [f"features.{i}" for i in range(2, last)] + [f"features.{last}"]
        return {name: self._producer(name)[0].out_channels for name in names}

    def unit_norms(self, group: str) -> torch.Tensor:
        self.check_group(group)
        return self._producer(group)[0].weight.detach().flatten(1).norm(dim=1)

    def keep_units(self, group: str, idx: torch.Tensor) -> None:
        self.check_group(group)
        producer = self._producer(group)
        producer[0] = surgery.conv_keep(producer[0], out_idx=idx)
        producer[1] = surgery.batchnorm_keep(producer[1], idx)
        i = int(group.split(".")[1])
        if i == len(self.features) - 1:
            self.classifier[1] = linear_keep_inputs(self.classifier[1], idx)
        else:
            # The depthwise conv after the producer (block 1's own for the stem), then the projection.
            block = self.features[1] if i == 0 else self.features[i]
            dw, project = block.conv[0 if i == 0 else 1], block.conv[1 if i == 0 else 2]
            dw[0] = surgery.conv_keep(dw[0], out_idx=idx)
            dw[1] = surgery.batchnorm_keep(dw[1], idx)
            block.conv[1 if i == 0 else 2] = surgery.conv_keep(project, in_idx=idx)
        self.config["channels"][group] = len(idx)
        self._refit_ranks()

    def rank_groups(self) -> dict[str, int]:
        return {"classifier": lowrank.current_rank(self.classifier[1])}

    def set_rank(self, group: str, rank: int) -> None:
        self.check_rank_group(group)
        self.classifier[1] = lowrank.factorise(self.classifier[1], rank)
        self.config["ranks"][group] = rank


DEFAULT_CUT = {"nwp": "fc", "image": "classifier"}


def build_model(task: str, **config: Any) -> StagedModel:
    """A fresh model for `task` from its config (the keyword arguments of its class)."""
    from cloud_pretrain.recipes import get_task  # the recipes name each task's model class

    model_class = get_task(task).model
    try:
        return model_class(**config)
    except TypeError as err:
        raise ValueError(f"bad config for task {task!r}: {err}") from err


def example_input(task: str, model: StagedModel, batch: int = 1, length: int = 10,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """A random input in the model's input form: token ids [batch, length] (never pad or unk)
    for nwp, float32 [batch, 1, 28, 28] in [0, 1] for image."""
    if task == "nwp":
        return torch.randint(2, model.config["vocab_size"], (batch, length), generator=generator)
    if task == "image":
        return torch.rand(batch, 1, 28, 28, generator=generator)
    raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(DEFAULT_CUT)}")


def split_at(model: StagedModel, cut: str) -> tuple[nn.Sequential, nn.Sequential]:
    """(frozen, trainable): the stages before `cut`, and `cut` with every stage after it."""
    names = model.stage_names()
    if cut not in names:
        raise ValueError(f"unknown cut layer {cut!r}; the model's stages are: {', '.join(names)}")
    k = names.index(cut)
    stages = model.stages()
    return nn.Sequential(*[m for _, m in stages[:k]]), nn.Sequential(*[m for _, m in stages[k:]])
