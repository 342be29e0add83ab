"""`autlearn compile`: a checkpoint, a torch.export program or an ONNX file -> a verified bundle.

The compile flags are shared with `autlearn build` (`add_compile_flags`, `compile_options`), so
both commands compile the same way.
"""
from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

from autlearn.cli import CommandTree

TARGETS = ("host", "android-arm64", "linux-arm64")
OPTIMIZERS = ("sgd", "momentum", "adam")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"want comma-separated integers, got {text!r}") from err


def _name_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("want comma-separated parameter names")
    return names


def add_compile_flags(cmd: argparse.ArgumentParser) -> None:
    """What trains, where it runs and how it is tuned: the flags `compile` and `build` share."""
    what = cmd.add_mutually_exclusive_group()
    what.add_argument("--cut", default=None, help="train this module and everything after it (with --onnx: the "
                                                 "cut tensor); default: the last linear layer")
    what.add_argument("--trainable", type=_name_list, default=None,
                      help="comma-separated parameter names to train, as in the model's state dict")
    cmd.add_argument("--target", default="host", choices=TARGETS, help="where the bundle runs")
    cmd.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS, help="the step update.so applies")
    cmd.add_argument("--lr", type=float, default=0.05, help="learning rate")
    cmd.add_argument("--train-batch", type=int, default=16, help="training batch size")
    cmd.add_argument("--lengths", type=_int_list, default=None,
                     help="sizes of the input's axis 1 (token sequences) to compile, comma-separated "
                          "(default: a checkpoint's preset buckets, else the example's)")
    cmd.add_argument("--tune-trials", type=int, default=0,
                     help="MetaSchedule candidates measured in all, spread over the kernels the device calls "
                          "by their measured share of the time; 0: untuned")
    cmd.add_argument("--tuning-db", type=pathlib.Path, default=None,
                     help="tuning database directory (default: ~/.cache/autlearn/tuning/<target>)")


def compile_options(args: argparse.Namespace) -> dict[str, Any]:
    """`compile_bundle` keyword arguments from the shared flags."""
    return {"cut": args.cut, "trainable": args.trainable, "target": args.target, "optimizer": args.optimizer,
            "lr": args.lr, "train_batch": args.train_batch, "tune_trials": args.tune_trials,
            "tuning_db": args.tuning_db}


def register(tree: CommandTree) -> None:
    """Adds `compile`."""
    cmd = tree.command("compile", "compile a model into verified forward/loss/update modules (a bundle): a "
                                  "checkpoint or torch.export program (checked against PyTorch) or an ONNX file "
                                  "(checked against ONNX Runtime)")
    source = cmd.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=pathlib.Path, help="an `autlearn pretrain` checkpoint.pt (or its "
                                                                "directory); its task is read from it")
    source.add_argument("--exported", type=pathlib.Path, help="a torch.export program (.pt2, torch.export.save) "
                                                              "saved with an example input")
    source.add_argument("--onnx", type=pathlib.Path, help="an ONNX classifier file")
    cmd.add_argument("--labels", type=pathlib.Path, default=None,
                     help="with --exported or --onnx: class names, one a line (line i is class i)")
    cmd.add_argument("--vocab", type=pathlib.Path, default=None,
                     help="with --exported or --onnx: the tokenizer vocabulary of a text model, one token a line "
                          "(<pad>, <unk> first); it travels in the bundle with its WordNet synonym table")
    cmd.add_argument("--token-range", type=int, default=None,
                     help="bound of integer input ids (default: the rows of the embedding the input feeds)")
    add_compile_flags(cmd)
    cmd.add_argument("--out", required=True, type=pathlib.Path, help="bundle directory to write")
    cmd.set_defaults(func=run_compile)


def run_compile(args: argparse.Namespace) -> int:
    from compiler import compile_bundle

    if args.checkpoint is not None:
        model, inputs = checkpoint_inputs(args.checkpoint, args.lengths)
        if args.labels is not None or args.vocab is not None:
            raise ValueError("--labels and --vocab go with --exported or --onnx: a checkpoint carries its own")
    else:
        model, inputs = _file_inputs(args)
    out = compile_bundle(model, out=args.out, **inputs, **compile_options(args))
    print(f"bundle written to {out}")
    print_tuning(out)
    return 0


def checkpoint_inputs(path: pathlib.Path, lengths: tuple[int, ...] | None = None) -> tuple[Any, dict[str, Any]]:
    """The model of a checkpoint and its recipe's compile inputs (example, labels, tokenizer)."""
    from cloud_pretrain.checkpoint import load_checkpoint
    from cloud_pretrain.recipes import get_task

    model, meta = load_checkpoint(path)
    return model, get_task(meta["task"]).compile_inputs(model, meta, lengths=lengths)


def _file_inputs(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from device_runtime.bundle import read_labels
    from device_runtime.tokenizer import Tokenizer

    if args.labels is None:
        raise ValueError(f"--{'exported' if args.exported else 'onnx'} needs --labels FILE: the class names, one a line")
    for flag, path in (("--labels", args.labels), ("--vocab", args.vocab)):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{flag} file {path} does not exist")
    inputs: dict[str, Any] = {"labels": read_labels(args.labels), "lengths": args.lengths,
                              "token_range": args.token_range}
    if args.vocab is not None:
        from augment.synonyms import build_synonym_table

        inputs["tokenizer"] = Tokenizer(read_labels(args.vocab))
        inputs["synonyms"] = build_synonym_table(inputs["tokenizer"].vocab)  # text augmentation on the device
    if args.onnx is not None:
        return args.onnx, {**inputs, "example_input": None}
    return load_exported(args.exported), {**inputs, "example_input": None, "name": args.exported.stem}


def load_exported(path: pathlib.Path) -> Any:
    """A torch.export program file; one clear line when it is missing or not one."""
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"exported program {path} does not exist")
    try:
        program = torch.export.load(str(path))
    except Exception as err:  # torch raises a zoo of types for a file that is not a .pt2
        raise ValueError(f"{path} is not a torch.export program (.pt2): {str(err).splitlines()[0]}") from None
    if not program.example_inputs or len(program.example_inputs[0]) != 1:
        raise ValueError(f"{path}: the compiler needs a program of one input saved with its example input")
    return program


def print_tuning(bundle: pathlib.Path) -> None:
    """What tuning did, from the bundle's tuning summary (nothing for an untuned bundle)."""
    from compiler.api import TUNING_SUMMARY

    summary = bundle / TUNING_SUMMARY
    if not summary.is_file():
        return
    run = json.loads(summary.read_text())
    print(f"tuned: {run['trials']} of {run['trials_requested']} trials run ({run['failed_trials']} failed), "
          f"{run['tuned_tasks']} of {run['tasks']} tasks tuned in this run, {run['records_shipped']} tuned "
          f"schedules beat the defaults and ship, {run['seconds']} s")
    for key, race in run.get("end_to_end", {}).items():
        print(f"  {key}: default build {race['default_ms']} ms, tuned {race['tuned_ms']} ms: the {race['ships']} "
              "build ships")
