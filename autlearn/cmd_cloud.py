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
RESOURCES = ("flops", "step-flops", "params", "latency", "host-latency")  # cloud_pretrain.resources, torch-free
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
    pretrain.add_argument("--corpus", default=None,
                          help="text tasks: the public sources to pretrain on, comma-separated, from wordnet, "
                               "fortunes, kjv (default: the preset's, wordnet,fortunes: measured best)")
    pretrain.set_defaults(func=run_pretrain)

    prune = tree.command("prune", "budgeted compression search (NetAdapt: magnitude filter pruning and SVD "
                         "low-rank factorisation): a family of smaller models, judged on a held-out split, with "
                         "their compiled transfer-learning step timed on the target")
    _add_common_flags(prune, preset_help="search sizes (default: the checkpoint's pretraining preset)")
    prune.add_argument("--checkpoint", required=True, type=pathlib.Path, help="pretrained checkpoint.pt")
    _add_budget_flags(prune, default_budgets=None)
    prune.add_argument("--json", type=pathlib.Path, help="also copy the family table (family.json) to this file")
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
    from autlearn.target_latency import TRANSPORTS

    parser.add_argument("--resource", default="flops", choices=RESOURCES,
                        help="what a budget limits: FLOPs of an inference, step-flops (FLOPs of the device's "
                             "transfer-learning step: the last linear layer's forward and weight gradient), "
                             "parameter bytes, latency (ms of the compiled step plus "
                             "a batch-1 forward, timed on the target through --transport) or host-latency "
                             "(a PyTorch forward on this machine)")
    parser.add_argument("--budgets", required=default_budgets is None, default=default_budgets,
                        help="comma-separated; N%% is relative to the unpruned model, a plain number is "
                             "absolute (FLOPs, bytes or ms)")
    parser.add_argument("--no-factorise", action="store_true",
                        help="magnitude filter pruning only (no SVD low-rank factorisation)")
    parser.add_argument("--transport", default="local", choices=TRANSPORTS,
                        help="where compiled models are timed (the family's step times, --resource latency): "
                             "local (this machine), rpc, qemu (the emulated arm64 device) or adb (a phone)")
    parser.add_argument("--timing-target", default=None,
                        help="compile target of the timed models (default: host for local/rpc, linux-arm64 for "
                             "qemu, android-arm64 for adb)")
    parser.add_argument("--timing-runs", type=int, default=3,
                        help="independent side-by-side timings of the family's compiled steps; each speedup is "
                             "the median of the runs' ratios, and the table gives their range")
    parser.add_argument("--host", help="TVM RPC server host (rpc; default: start one on 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9090, help="TVM RPC server port (rpc)")
    parser.add_argument("--serial", help="adb device serial (adb; default: the only attached device)")
    parser.add_argument("--emulator-root", type=pathlib.Path, help="emulator root (qemu)")


def _set_threads(args: argparse.Namespace) -> None:
    import torch

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)


def run_pretrain(args: argparse.Namespace) -> None:
    from cloud_pretrain.pretrain import pretrain

    _set_threads(args)
    corpus = tuple(c.strip() for c in args.corpus.split(",")) if args.corpus else None
    path = pretrain(args.task, args.preset, args.out, seed=args.seed, restart=args.restart, epochs=args.epochs,
                    lr=args.lr, batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch, corpus=corpus)
    print(f"checkpoint: {path}")


def _print_family(rows: list[dict], out: pathlib.Path) -> dict:
    """Prints the table and both choices; returns the one made on the search split (what `build`
    compiles: the held-out split only reports)."""
    from cloud_pretrain.family import ACCURACY_TOLERANCE, best_within_tolerance

    print((out / "table.md").read_text(), end="")
    points = f"{ACCURACY_TOLERANCE * 100:.0f} point"
    picked = best_within_tolerance(rows, key="search_accuracy")
    best = best_within_tolerance(rows)
    print(f"fastest within {points} of accuracy: {picked['model']} (search split; held-out accuracy "
          f"{picked['accuracy']:.4f}, {picked['step_ms']:.3f} ms per compiled step, {picked['step_speedup']:.2f}x "
          f"the unpruned model's speed)")
    print(f"fastest within {points} on the held-out split: {best['model']} ({best['step_speedup']:.2f}x)")
    return picked


def _prune(args: argparse.Namespace, checkpoint: pathlib.Path, out: pathlib.Path) -> list[dict]:
    """The search with its compiled models timed on the chosen transport."""
    import tempfile

    from autlearn.target_latency import DEFAULT_TARGET, TargetClock, open_transport
    from cloud_pretrain.family import prune_family

    if args.timing_runs < 1:
        raise ValueError(f"--timing-runs must be at least 1, got {args.timing_runs}")
    target = args.timing_target or DEFAULT_TARGET[args.transport]
    if args.transport == "local":  # this machine is the device: TVM gets the same threads as torch
        from autlearn.bench_compiler import set_threads

        set_threads(args.threads)
    with open_transport(args.transport, host=args.host, port=args.port, serial=args.serial,
                        emulator_root=args.emulator_root) as (transport, dest), \
            tempfile.TemporaryDirectory(prefix="autlearn-timing-") as workdir:
        clock = TargetClock(transport, dest, target, pathlib.Path(workdir))
        return prune_family(args.task, checkpoint, args.resource, args.budgets, out, preset=args.preset,
                            seed=args.seed, factorise=not args.no_factorise,
                            step_timer=lambda models: clock.step_times(models, args.task, args.timing_runs),
                            latency_meter=clock.latency,
                            context={"transport": args.transport, "target": target,
                                     "checkpoint": str(checkpoint)})


def run_prune(args: argparse.Namespace) -> None:
    import shutil

    _set_threads(args)
    rows = _prune(args, args.checkpoint, args.out)
    _print_family(rows, args.out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.out / "family.json", args.json)
        print(f"family table: {args.json}")


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
    from cloud_pretrain.pretrain import pretrain
    from compiler import compile_bundle

    _set_threads(args)
    checkpoint = pretrain(args.task, args.preset, args.out / "pretrain", seed=args.seed)
    rows = _prune(args, checkpoint, args.out / "prune")
    best = _print_family(rows, args.out / "prune")
    chosen = checkpoint if best["model"] == "unpruned" else args.out / "prune" / best["model"] / "checkpoint.pt"
    model, inputs = checkpoint_inputs(chosen, args.lengths)
    bundle = compile_bundle(model, out=args.out / "bundle", **inputs, **compile_options(args))
    print(f"bundle: {bundle}")
    print_tuning(bundle)
