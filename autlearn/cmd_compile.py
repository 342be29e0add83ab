"""`autlearn compile`: a pretrained checkpoint -> a verified artifact bundle for a target."""
from __future__ import annotations

import argparse
import pathlib

from autlearn.cli import CommandTree

TARGETS = ("host", "android-arm64", "linux-arm64")
OPTIMIZERS = ("sgd", "momentum", "adam")


def _lengths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--seq-lengths wants comma-separated integers, got {text!r}") from err


def register(tree: CommandTree) -> None:
    """Adds `compile`."""
    cmd = tree.command("compile", "compile a checkpoint into forward/loss/update modules (a bundle), "
                                  "verified against PyTorch")
    cmd.add_argument("--task", required=True, choices=("nwp", "image"))
    cmd.add_argument("--checkpoint", required=True, type=pathlib.Path, help="checkpoint.pt (or its directory)")
    cmd.add_argument("--cut", default=None, help="first trainable stage (default: the last FC layer)")
    cmd.add_argument("--target", default="host", choices=TARGETS)
    cmd.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS)
    cmd.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    cmd.add_argument("--train-batch", type=int, default=16, help="training batch size (default 16)")
    cmd.add_argument("--seq-lengths", type=_lengths, default=(10,),
                     help="nwp length buckets, comma-separated (default 10)")
    cmd.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials (default 0: untuned)")
    cmd.add_argument("--tuning-db", type=pathlib.Path, default=None,
                     help="tuning database directory (default ~/.cache/autlearn/tuning/<target>)")
    cmd.add_argument("--out", required=True, type=pathlib.Path, help="bundle directory to write")
    cmd.set_defaults(func=run_compile)


def run_compile(args: argparse.Namespace) -> int:
    from cloud_pretrain.checkpoint import load_checkpoint
    from compiler import compile_bundle

    model, meta = load_checkpoint(args.checkpoint)
    if meta["task"] != args.task:
        raise ValueError(f"checkpoint {args.checkpoint} is a {meta['task']!r} model, not {args.task!r}")
    labels = meta["vocab"] if args.task == "nwp" else meta["labels"]
    out = compile_bundle(model, args.task, args.out, labels=labels, cut=args.cut, target=args.target,
                         optimizer=args.optimizer, lr=args.lr, train_batch=args.train_batch,
                         seq_lengths=args.seq_lengths, tune_trials=args.tune_trials,
                         tuning_db=args.tuning_db)
    print(f"bundle written to {out}")
    return 0
