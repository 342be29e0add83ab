"""`autlearn` commands: cloud (`pretrain`, `prune`, `export`, `build`).

`build` glues the cloud libraries to the compiler (pretrain, prune, compile), so it lives
here rather than in `cloud_pretrain`, which never imports the compiler.
"""
from __future__ import annotations

import argparse
import pathlib

from autlearn.cli import CommandTree
from autlearn.cmd_compile import add_compile_flags, checkpoint_inputs, compile_options, print_tuning

PRESETS = ("tiny", "demo", "paper")
RESOURCES = ("flops", "params", "latency")
BUILD_BUDGETS = "75%,50%,35%,25%"


def register(tree: CommandTree) -> None:
    """Adds the cloud commands."""
    pretrain = tree.command("pretrain", "pretrain a task's model on public data (resumable; "
                            "runs data-parallel under torchrun --nproc_per_node N)")
    _add_common_flags(pretrain)
    pretrain.add_argument("--epochs", type=int, help="override the preset's epochs")
    pretrain.add_argument("--lr", type=float, help="override the preset's learning rate")
    pretrain.add_argument("--batch-size", type=int, help="override the preset's batch size")
    pretrain.add_argument("--steps-per-epoch", type=int, help="cap the steps of each epoch")
    pretrain.add_argument("--restart", action="store_true", help="ignore a stopped run in --out, start over")
    pretrain.set_defaults(func=run_pretrain)

    prune = tree.command("prune", "budgeted magnitude-pruning search (NetAdapt): a family of smaller models "
                         "and a table of budget, resource and accuracy")
    _add_common_flags(prune, preset_help="search sizes (default: the checkpoint's pretraining preset)")
    prune.add_argument("--checkpoint", required=True, type=pathlib.Path, help="pretrained checkpoint.pt")
    _add_budget_flags(prune, default_budgets=None)
    prune.set_defaults(func=run_prune)

    export = tree.command("export", "export a checkpoint as torch.export programs (.pt2) and ONNX, "
                          "each ONNX file checked against PyTorch with onnxruntime")
    export.add_argument("--checkpoint", required=True, type=pathlib.Path, help="checkpoint.pt")
    export.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    export.add_argument("--seq-lengths", default="10", help="context lengths of a token model, comma-separated")
    export.set_defaults(func=run_export)

    build = tree.command("build", "pretrain, prune and compile in one command")
    _add_common_flags(build)
    _add_budget_flags(build, default_budgets=BUILD_BUDGETS)
    add_compile_flags(build)
    build.set_defaults(func=run_build)


def _add_common_flags(parser: argparse.ArgumentParser, preset_help: str = "") -> None:
    parser.add_argument("--task", required=True, help="a task recipe of cloud_pretrain/recipes.py")
    parser.add_argument("--preset", default=None if preset_help else "demo", choices=PRESETS,
                        help=preset_help or "sizes and schedule: tiny (tests), demo (minutes on 2 cores), "
                                            "paper (the paper's sizes)")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of data split, init and batch order")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per process (1 keeps timings stable on a shared machine)")


def _add_budget_flags(parser: argparse.ArgumentParser, default_budgets: str | None) -> None:
    parser.add_argument("--resource", default="flops", choices=RESOURCES,
                        help="what a budget limits: FLOPs, parameter bytes, or latency in ms")
    parser.add_argument("--budgets", required=default_budgets is None, default=default_budgets,
                        help="comma-separated; N%% is relative to the unpruned model, a plain number is "
                             "absolute (FLOPs, bytes or ms)")


def _set_threads(args: argparse.Namespace) -> None:
    import torch

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)


def run_pretrain(args: argparse.Namespace) -> None:
    from cloud_pretrain.pretrain import pretrain

    _set_threads(args)
    path = pretrain(args.task, args.preset, args.out, seed=args.seed, restart=args.restart, epochs=args.epochs,
                    lr=args.lr, batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch)
    print(f"checkpoint: {path}")


def _print_family(rows: list[dict], out: pathlib.Path) -> dict:
    from cloud_pretrain.family import ACCURACY_TOLERANCE, best_within_tolerance

    print((out / "table.md").read_text(), end="")
    best = best_within_tolerance(rows)
    print(f"fastest within {ACCURACY_TOLERANCE * 100:.0f} point of accuracy: {best['model']} "
          f"({best['step_ms']:.3f} ms per step, {best['step_speedup']:.2f}x the unpruned model's speed)")
    return best


def run_prune(args: argparse.Namespace) -> None:
    from cloud_pretrain.family import prune_family

    _set_threads(args)
    rows = prune_family(args.task, args.checkpoint, args.resource, args.budgets, args.out,
                        preset=args.preset, seed=args.seed)
    _print_family(rows, args.out)


def run_export(args: argparse.Namespace) -> None:
    from cloud_pretrain.checkpoint import load_checkpoint
    from cloud_pretrain.export import export_model

    model, meta = load_checkpoint(args.checkpoint)
    try:
        lengths = [int(n) for n in args.seq_lengths.split(",") if n.strip()]
    except ValueError:
        raise ValueError(f"--seq-lengths must be comma-separated integers, got {args.seq_lengths!r}") from None
    for path in export_model(model, meta["task"], args.out, lengths):
        print(path)


def run_build(args: argparse.Namespace) -> None:
    from cloud_pretrain.family import prune_family
    from cloud_pretrain.pretrain import pretrain
    from compiler import compile_bundle

    _set_threads(args)
    checkpoint = pretrain(args.task, args.preset, args.out / "pretrain", seed=args.seed)
    rows = prune_family(args.task, checkpoint, args.resource, args.budgets, args.out / "prune",
                        preset=args.preset, seed=args.seed)
    best = _print_family(rows, args.out / "prune")
    chosen = checkpoint if best["model"] == "unpruned" else args.out / "prune" / best["model"] / "checkpoint.pt"
    model, inputs = checkpoint_inputs(chosen, args.lengths)
    bundle = compile_bundle(model, out=args.out / "bundle", **inputs, **compile_options(args))
    print(f"bundle: {bundle}")
    print_tuning(bundle)
