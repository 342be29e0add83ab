"""Pretraining on public data: seeded, resumable, data-parallel under torchrun.

The output directory holds `checkpoint.pt` (the model after the last finished epoch, with
its per-epoch validation metrics), `train_state.pt` (what a resumed run needs: weights,
optimizer, epoch and step, RNG), `vocab.txt` or `labels.txt`, `metrics.json` and
`pretrain_accuracy.png`. Running the same command again resumes where it stopped; a
finished run is not retrained.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from cloud_pretrain.checkpoint import atomic_torch_save, save_checkpoint, write_names
from cloud_pretrain.distributed import World, join_world, leave_world
from cloud_pretrain.models import StagedModel, build_model
from cloud_pretrain.plots import plot_lines
from cloud_pretrain.tasks import Preset, TaskData, get_preset, load_data
from cloud_pretrain.train import batch_plan, evaluate, make_optimizer, run_steps

STATE_FILE = "train_state.pt"
CHECKPOINT_FILE = "checkpoint.pt"


def _log(world: World, message: str) -> None:
    if world.is_main:
        print(message, flush=True)


def _load_state(out: Path, task: str, preset: Preset, seed: int, world_size: int) -> dict[str, Any] | None:
    path = out / STATE_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    run = {"task": task, "preset": preset.name, "corpus": list(preset.corpus), "seed": seed, "world_size": world_size}
    if state["run"] != run:
        raise ValueError(f"{out} holds a run of {state['run']}, not {run}: use another --out, "
                         "or --restart to train again from scratch")
    return state


def _write_outputs(out: Path, model: StagedModel, data: TaskData, metrics: dict[str, Any]) -> Path:
    """Checkpoint, vocabulary/labels file, metrics.json and the accuracy figure."""
    ckpt = save_checkpoint(out / CHECKPOINT_FILE, model, data.task, vocab=data.vocab, labels=data.labels,
                           metrics=metrics)
    write_names(out, vocab=data.vocab, labels=data.labels)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    history = metrics["history"]
    plot_lines(out / "pretrain_accuracy.png", [h["epoch"] for h in history],
               {"validation": [h["val_accuracy"] for h in history]},
               title=f"{data.task} pretraining ({metrics['preset']} preset)", xlabel="epoch",
               ylabel="top-1 accuracy")
    return ckpt


def pretrain(task: str, preset_name: str, out: str | Path, *, seed: int = 0, restart: bool = False,
             **train_overrides: Any) -> Path:
    """Trains `task` on its public data; returns the checkpoint path (resumes a stopped run).

    `train_overrides` replace fields of the preset's TrainConfig (epochs, lr, ...).
    """
    out = Path(out)
    preset = get_preset(task, preset_name, **train_overrides)
    world = join_world()
    try:
        if world.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if restart:
                (out / STATE_FILE).unlink(missing_ok=True)
        world.barrier()
        state = _load_state(out, task, preset, seed, world.size)
        data = load_data(task, preset, seed, vocab=state["vocab"] if state else None)
        torch.manual_seed(seed)
        model = build_model(task, **data.model_config(preset)).to(world.device)
        trained = world.wrap(model)
        optimizer = make_optimizer(model, preset.train)
        epoch, step, history = 0, 0, []
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            epoch, step, history = state["epoch"], state["step"], state["history"]
            _log(world, f"{out} is already trained for {epoch} epoch(s)" if epoch >= preset.train.epochs
                 else f"resuming {out} at epoch {epoch + 1}, step {step}")
        _log(world, f"pretraining {task} ({preset.name}): {sum(len(y) for _, y in data.train.values())} "
                    f"training examples, {sum(p.numel() for p in model.parameters())} parameters, "
                    f"{world.size} process(es) on {world.device}")

        def save_state(next_epoch: int, next_step: int) -> None:
            if world.is_main:
                atomic_torch_save({"run": {"task": task, "preset": preset.name, "corpus": list(preset.corpus), "seed": seed,
                                           "world_size": world.size},
                                   "vocab": data.vocab, "model": model.state_dict(),
                                   "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                                   "epoch": next_epoch, "step": next_step, "history": history},
                                  out / STATE_FILE)

        while epoch < preset.train.epochs:
            plan = batch_plan(data.train, preset.train.batch_size, seed, epoch, world, preset.train.steps_per_epoch)

            def checkpoint_inside_epoch(done: int) -> None:
                if done % preset.train.checkpoint_every == 0 and done < len(plan):
                    save_state(epoch, done)

            started = time.perf_counter()
            loss = run_steps(trained, optimizer, data.train, plan, world, desc=f"epoch {epoch + 1}/{preset.train.epochs}",
                             after_step=checkpoint_inside_epoch, first_step=step)
            val = evaluate(model, data.val, world)
            history.append({"epoch": epoch + 1, "train_loss": loss, "val_loss": val["loss"],
                            "val_accuracy": val["accuracy"], "seconds": time.perf_counter() - started})
            _log(world, f"epoch {epoch + 1}/{preset.train.epochs}: train loss {loss:.4f}, "
                        f"val loss {val['loss']:.4f}, val accuracy {val['accuracy']:.4f}")
            epoch, step = epoch + 1, 0
            if world.is_main:
                metrics = {"preset": preset.name, "corpus": list(preset.corpus), "seed": seed, "world_size": world.size,
                           "val_accuracy": val["accuracy"], "val_loss": val["loss"], "history": history}
                _write_outputs(out, model, data, metrics)
            save_state(epoch, 0)
        world.barrier()
        return out / CHECKPOINT_FILE
    finally:
        leave_world(world)
