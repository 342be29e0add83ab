"""`autlearn` commands: cloud (`pretrain`, `prune`, `export`, `build`)."""
from __future__ import annotations

import argparse
import pathlib

from autlearn.cli import CommandTree

TASKS = ("nwp", "image")
PRESETS = ("tiny", "demo", "paper")
RESOURCES = ("flops", "params", "latency")


def register(tree: CommandTree) -> None:
    """Adds the cloud commands."""
    pretrain = tree.command("pretrain", "pretrain a task's model on public data (resumable; "
                            "runs data-parallel under torchrun --nproc_per_node N)")
    _add_task_flags(pretrain)
    pretrain.add_argument("--seed", type=int, default=0, help="seed of data split, init and batch order (default 0)")
    pretrain.add_argument("--epochs", type=int, help="override the preset's epochs")
    pretrain.add_argument("--lr", type=float, help="override the preset's learning rate")
    pretrain.add_argument("--batch-size", type=int, help="override the preset's batch size")
    pretrain.add_argument("--steps-per-epoch", type=int, help="cap the steps of each epoch")
    pretrain.add_argument("--restart", action="store_true", help="ignore a stopped run in --out, start over")
    pretrain.set_defaults(func=run_pretrain)


def _add_task_flags(parser: argparse.ArgumentParser, preset: bool = True) -> None:
    parser.add_argument("--task", required=True, choices=TASKS)
    if preset:
        parser.add_argument("--preset", default="demo", choices=PRESETS,
                            help="sizes and schedule: tiny (tests), demo (minutes on 2 cores), paper")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory")


def run_pretrain(args: argparse.Namespace) -> None:
    from cloud_pretrain.pretrain import pretrain

    path = pretrain(args.task, args.preset, args.out, seed=args.seed, restart=args.restart, epochs=args.epochs,
                    lr=args.lr, batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch)
    print(f"checkpoint: {path}")
