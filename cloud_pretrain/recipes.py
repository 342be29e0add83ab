"""The demo tasks as recipes: one `Task` each (data, model, presets, input, augmentation).

Everything task-specific lives here and in the modules it names, so adding a task is one new
recipe. A recipe also says how its checkpoints compile: the example input, the class names, the
length buckets, and for text models the tokenizer and synonym table that travel in the bundle.
The compiler and the device never see a task name, only what these produce.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from cloud_pretrain import models, tasks
from device_runtime.tokenizer import PAD, UNK, Tokenizer


@dataclasses.dataclass(frozen=True)
class Task:
    """One task's recipe."""

    name: str
    model: type[models.StagedModel]
    presets: dict[str, tasks.Preset]
    data: Callable[..., tasks.TaskData]  # (preset, seed, vocab=None) -> TaskData
    classes_key: str  # the checkpoint key holding the class names: "vocab" or "labels"
    classes_arg: str  # the model's keyword for the number of classes
    placeholder_classes: Callable[[], list[str]]  # class names of a model built without data
    augmentation: str  # "text" or "images"
    users: str  # who the per-user data are, for people

    def random_model(self, preset: str = "demo") -> tuple[models.StagedModel, dict[str, Any]]:
        """A preset-sized model with random weights and checkpoint-like meta: enough for timing."""
        classes = self.placeholder_classes()
        model = self.model(**{**self.presets[preset].model, self.classes_arg: len(classes)}).eval()
        return model, {"task": self.name, self.classes_key: classes, "metrics": {"preset": preset}}

    def example_input(self, model: models.StagedModel, batch: int = 1, length: int = 10) -> torch.Tensor:
        return models.example_input(self.name, model, batch=batch, length=length)

    def compile_inputs(self, model: models.StagedModel, meta: dict[str, Any], preset: str | None = None,
                       lengths: tuple[int, ...] | None = None, synonyms: bool = True) -> dict[str, Any]:
        """`compile_bundle` keyword arguments for a checkpoint of this task (its model and meta)."""
        classes = list(meta[self.classes_key])
        if self.augmentation != "text":
            return {"example_input": self.example_input(model, batch=2), "labels": classes, "name": self.name,
                    "augmentation": self.augmentation}
        lengths = lengths or self.presets[preset or meta["metrics"].get("preset", "demo")].buckets
        table = None
        if synonyms:
            from augment.synonyms import build_synonym_table

            table = build_synonym_table(classes)
        return {"example_input": self.example_input(model, batch=2, length=max(lengths)), "labels": classes,
                "name": self.name, "lengths": tuple(lengths), "tokenizer": Tokenizer(classes), "synonyms": table,
                "augmentation": self.augmentation}


def _placeholder_vocab() -> list[str]:
    from cloud_pretrain.data.text import VOCAB_SIZE

    return [PAD, UNK] + [f"word{i}" for i in range(VOCAB_SIZE)]


def _femnist_classes() -> list[str]:
    from cloud_pretrain.data.fonts import FEMNIST_CLASSES

    return list(FEMNIST_CLASSES)


TASKS: dict[str, Task] = {
    "nwp": Task("nwp", models.NextWordLSTM, tasks.PRESETS["nwp"], tasks.nwp_data, "vocab", "vocab_size",
                _placeholder_vocab, "text", "Shakespeare speakers"),
    "image": Task("image", models.MobileNetV2Image, tasks.PRESETS["image"], tasks.image_data, "labels",
                  "num_classes", _femnist_classes, "images", "handwriting writers"),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]
