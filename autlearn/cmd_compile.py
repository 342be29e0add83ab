"""`autlearn compile`: a pretrained checkpoint or an ONNX file -> a verified artifact bundle for a target."""
from __future__ import annotations

import argparse
import json
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
    cmd = tree.command("compile", "compile a checkpoint (verified against PyTorch) or an ONNX file (verified "
                                  "against ONNX Runtime) into forward/loss/update modules (a bundle)")
    cmd.add_argument("--task", required=True, choices=("nwp", "image"))
    source = cmd.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=pathlib.Path, help="checkpoint.pt (or its directory)")
    source.add_argument("--onnx", type=pathlib.Path, help="an ONNX classifier file (e.g. from `autlearn export`)")
    cmd.add_argument("--labels", type=pathlib.Path, default=None,
                     help="with --onnx: class names or vocabulary, one per line (default: the task's defaults)")
    cmd.add_argument("--cut", default=None, help="first trainable stage, or with --onnx the cut tensor's name "
                                                 "(default: the last FC layer, or its input tensor)")
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
    from compiler import compile_bundle

    if args.onnx is not None:
        model, labels = args.onnx, _onnx_labels(args)
    else:
        from cloud_pretrain.checkpoint import load_checkpoint

        if args.labels is not None:
            raise ValueError("--labels goes with --onnx: a checkpoint carries its own labels")
        model, meta = load_checkpoint(args.checkpoint)
        if meta["task"] != args.task:
            raise ValueError(f"checkpoint {args.checkpoint} is a {meta['task']!r} model, not {args.task!r}")
        labels = meta["vocab"] if args.task == "nwp" else meta["labels"]
    out = compile_bundle(model, args.task, args.out, labels=labels, cut=args.cut, target=args.target,
                         optimizer=args.optimizer, lr=args.lr, train_batch=args.train_batch,
                         seq_lengths=args.seq_lengths, tune_trials=args.tune_trials,
                         tuning_db=args.tuning_db)
    print(f"bundle written to {out}")
    if args.tune_trials:
        from compiler.api import TUNING_SUMMARY

        for key, run in json.loads((out / TUNING_SUMMARY).read_text()).items():
            print(f"tuned {key}: {run['trials']} trials run ({run['failed_trials']} failed), "
                  f"{run['tuned_tasks']} of {run['tasks']} tasks tuned in this run, {run['seconds']} s")
    return 0


def _onnx_labels(args: argparse.Namespace) -> list[str]:
    """--labels (one a line), else the task's defaults: the 62 FEMNIST classes for image; an nwp
    vocabulary depends on the pretraining run, so nwp needs the file (vocab.txt beside its checkpoint)."""
    from device_runtime.bundle import read_labels

    if args.labels is not None:
        if not args.labels.is_file():
            raise FileNotFoundError(f"--labels file {args.labels} does not exist")
        return read_labels(args.labels)
    if args.task == "nwp":
        raise ValueError("an nwp ONNX model needs --labels FILE: its vocabulary, one token a line "
                         "(vocab.txt beside its checkpoint)")
    from cloud_pretrain.data.fonts import FEMNIST_CLASSES

    return list(FEMNIST_CLASSES)
