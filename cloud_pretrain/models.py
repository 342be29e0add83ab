"""The two task models, each a named sequence of stages so any stage K can be the cut.

Contract with the compiler: `model.stages()` lists `(name, module)` pairs whose composition
is `model.forward`; `split_at(model, cut)` gives the frozen part (stages before `cut`) and the
trainable part (`cut` and after). Every stage takes and returns one tensor.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v2


class StagedModel(nn.Module):
    """A model that is the composition of its named stages."""

    def stages(self) -> list[tuple[str, nn.Module]]:
        raise NotImplementedError

    def stage_names(self) -> list[str]:
        return [name for name, _ in self.stages()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, stage in self.stages():
            x = stage(x)
        return x


class LSTMLayer(nn.Module):
    """One LSTM layer returning its whole output sequence (batch first)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


class LastStep(nn.Module):
    """Output at the last time step. A static index: TVM imports `x[:, -1]` wrongly (TVM_NOTES)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, x.shape[1] - 1]


class NextWordLSTM(StagedModel):
    """Embedding, two stacked LSTM layers, last step, FC over the vocabulary.

    Inputs are int64 token ids [batch, length], left-padded with id 0 inside a length bucket.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden_size: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm1 = LSTMLayer(embed_dim, hidden_size)
        self.lstm2 = LSTMLayer(hidden_size, hidden_size)
        self.last = LastStep()
        self.fc = nn.Linear(hidden_size, vocab_size)

    def stages(self) -> list[tuple[str, nn.Module]]:
        return [("embed", self.embed), ("lstm1", self.lstm1), ("lstm2", self.lstm2),
                ("last", self.last), ("fc", self.fc)]


class GlobalPool(nn.Module):
    """Global average pool and flatten: [B, C, H, W] -> [B, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class MobileNetV2Image(StagedModel):
    """torchvision MobileNetV2 for 28x28 grey images and 62 classes (FEMNIST).

    Input adaptation: the stem conv takes 1 channel with stride 1 instead of 3 channels with
    stride 2, so a 28x28 image keeps a 2x2 map at the last stage (an overall stride of 16)
    rather than shrinking to 1x1. Inputs are float32 [batch, 1, 28, 28] in [0, 1].
    """

    def __init__(self, num_classes: int = 62, width_mult: float = 0.5) -> None:
        super().__init__()
        net = mobilenet_v2(weights=None, num_classes=num_classes, width_mult=width_mult)
        stem = net.features[0][0]
        net.features[0][0] = nn.Conv2d(1, stem.out_channels, 3, stride=1, padding=1, bias=False)
        self.features = net.features
        self.pool = GlobalPool()
        self.classifier = net.classifier  # Dropout (a no-op in eval), Linear

    def stages(self) -> list[tuple[str, nn.Module]]:
        feats = [(f"features.{i}", layer) for i, layer in enumerate(self.features)]
        return feats + [("pool", self.pool), ("classifier", self.classifier)]


DEFAULT_CUT = {"nwp": "fc", "image": "classifier"}


def split_at(model: StagedModel, cut: str) -> tuple[nn.Sequential, nn.Sequential]:
    """(frozen, trainable): the stages before `cut`, and `cut` with every stage after it."""
    names = model.stage_names()
    if cut not in names:
        raise ValueError(f"unknown cut layer {cut!r}; the model's stages are: {', '.join(names)}")
    k = names.index(cut)
    stages = model.stages()
    return nn.Sequential(*[m for _, m in stages[:k]]), nn.Sequential(*[m for _, m in stages[k:]])
