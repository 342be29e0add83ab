"""`autlearn eval accuracy` and `eval cost`: the paper's experiments (figures 7 and 8)."""
from __future__ import annotations

import argparse
from pathlib import Path

from autlearn.cli import CommandTree

GROUP_HELP = "the paper's experiments: personalised accuracy by mode, and the cost of training"


def _print_goals(goals: dict[str, bool]) -> None:
    for goal, met in goals.items():
        print(f"  {'met ' if met else 'MISS'}  {goal}")


def _eval_accuracy(args: argparse.Namespace) -> int:
    from autlearn.eval_accuracy import eval_accuracy, plot_accuracy, write_report

    if not args.checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
    report = eval_accuracy(args.task, args.checkpoint, args.work or Path("out") / "eval" / f"accuracy-{args.task}",
                           users=args.users, epochs=args.epochs, seed=args.seed)
    json_path = write_report(report, args.json or Path("out") / "eval" / f"accuracy-{args.task}.json")
    plot = plot_accuracy(report, args.plot or json_path.with_suffix(".png"))
    for mode in ("pretrained", "autlearn", "autlearn_no_augmentation", "cloudtrain", "cloudcustomize", "fedavg",
                 "online_pretrained", "online"):
        print(f"{mode:>25}: {report[mode]['mean']:6.2f} +- {report[mode]['ci95']:.2f} points")
    print(f"augmentation gain {report['augmentation_gain']:+.2f}, online gain {report['online_gain']:+.2f} points "
          f"({report['users']} users)")
    _print_goals(report["goals"])
    print(f"wrote {json_path} and {plot}")
    return 0


def register(tree: CommandTree) -> None:
    """Adds `eval accuracy` and `eval cost`."""
    p = tree.subcommand("eval", "accuracy", group_help=GROUP_HELP,
                        help="personalised accuracy of pretrained, AutLearn (on the device path), CloudTrain, "
                             "CloudCustomize, FedAvg (Flower) and online learning, over the top 10%% of users")
    p.add_argument("--task", required=True, help="a task recipe of cloud_pretrain/recipes.py")
    p.add_argument("--checkpoint", required=True, type=Path, help="the pretrained checkpoint.pt")
    p.add_argument("--users", type=int, default=None, help="the first N of the top 10%% of users (default: all)")
    p.add_argument("--epochs", type=int, default=5, help="passes over each user's data in every mode")
    p.add_argument("--json", type=Path, default=None, help="report (default: out/eval/accuracy-TASK.json)")
    p.add_argument("--plot", type=Path, default=None, help="figure (default: next to the JSON, .png)")
    p.add_argument("--work", type=Path, default=None, help="bundle, user shards and states")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_eval_accuracy)
    register_cost(tree)


def _eval_cost(args: argparse.Namespace) -> int:
    import json

    from autlearn.eval_cost import eval_cost, plot_cost

    for path in [args.checkpoint, *([args.compressed] if args.compressed else [])]:
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
    report = eval_cost(args.task, args.checkpoint, args.work or Path("out") / "eval" / f"cost-{args.task}",
                       compressed=args.compressed, tune_trials=args.tune_trials, tuning_db=args.tuning_db,
                       threads=args.threads,
                       repeats=args.repeats, epochs=args.epochs)
    json_path = args.json or Path("out") / "eval" / f"cost-{args.task}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    plot = plot_cost(report, json_path.with_suffix(".png"))
    for config, ms in report["ms_per_sample"].items():
        days = report["days_at_120_min"].get(config)
        print(f"{config:>22}: {ms:8.4f} ms a sample" + (f", {days:.4f} days a user" if days is not None else ""))
    print(f"autlearn: x{report['speedup_vs_pytorch']:.2f} vs PyTorch eager, x{report['speedup_vs_ort']:.2f} vs ORT; "
          f"cache x{report['cache_speedup']:.2f}")
    _print_goals(report["goals"])
    print(f"wrote {json_path} and {plot}")
    return 0


def register_cost(tree: CommandTree) -> None:
    """Adds `eval cost`."""
    p = tree.subcommand("eval", "cost", group_help=GROUP_HELP,
                        help="training time per sample of AutLearn (compressed, compiled, tuned), without "
                             "compression, PyTorch eager, ONNX Runtime training, online with and without the cache")
    p.add_argument("--task", required=True, help="a task recipe of cloud_pretrain/recipes.py")
    p.add_argument("--checkpoint", required=True, type=Path, help="the unpruned pretrained checkpoint.pt")
    p.add_argument("--compressed", type=Path, default=None, help="a pruned checkpoint (default: none, the unpruned)")
    p.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials per module for both bundles")
    p.add_argument("--tuning-db", type=Path, default=None,
                   help="tuning database directory (default: the per-target cache, reused across runs)")
    p.add_argument("--threads", type=int, default=1, help="threads for every implementation")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds (medians)")
    p.add_argument("--epochs", type=int, default=5, help="offline epochs, for the days a user needs")
    p.add_argument("--json", type=Path, default=None, help="report (default: out/eval/cost-TASK.json)")
    p.add_argument("--work", type=Path, default=None, help="where the bundles go")
    p.set_defaults(func=_eval_cost)
