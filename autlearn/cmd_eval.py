"""`autlearn eval accuracy` and `eval cost`: the paper's experiments (figures 7 and 8)."""
from __future__ import annotations

import argparse
from pathlib import Path

from autlearn.cli import CommandTree

GROUP_HELP = "the paper's experiments: personalised accuracy by mode, and the cost of training"


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
    for goal, met in report["goals"].items():
        print(f"  {'met ' if met else 'MISS'}  {goal}")
    print(f"wrote {json_path} and {plot}")
    return 0


def register(tree: CommandTree) -> None:
    """Adds `eval accuracy` (and `eval cost`)."""
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
