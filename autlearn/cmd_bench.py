"""`autlearn` commands: bench compiler and bench reliability (`bench cache` is registered by cmd_device)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from autlearn.cli import CommandTree

GROUP_HELP = "benchmarks"


def bench_model(task: str, checkpoint: Path | None) -> tuple[Any, dict[str, Any]]:
    """A checkpoint's model, or the task's demo-sized model with random weights (enough for
    timing), with its compile inputs (no synonym table: benchmarks do not augment)."""
    from cloud_pretrain.recipes import get_task

    if checkpoint is None:
        model, meta = get_task(task).random_model()
    else:
        from cloud_pretrain.checkpoint import load_checkpoint

        if not checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
        model, meta = load_checkpoint(checkpoint)
        if meta["task"] != task:
            raise ValueError(f"checkpoint {checkpoint} is for task {meta['task']!r}, not {task!r}")
    return model, get_task(task).compile_inputs(model, meta, synonyms=False)


def _bench_compiler(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    # TVM sizes its thread pool once, from this variable, when it first runs anything.
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    # PyTorch's OpenMP threads spin-wait by default; on a loaded 2-core machine that makes a
    # 0.4 ms eager step take 300 ms (measured), which would flatter the compiled side.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from autlearn.bench_compiler import bench_compiler, write_report

    model, inputs = bench_model(args.task, args.checkpoint)
    json_path = args.json or Path("out") / "bench" / f"compiler-{args.task}.json"
    work_dir = args.work_dir or json_path.parent / f"compiler-{args.task}-bundles"
    result = bench_compiler(model, inputs, work_dir, cut=args.cut, tune_trials=args.tune_trials,
                            tuning_db=args.tuning_db, threads=args.threads, repeats=args.repeats,
                            warmup=args.warmup, profile=args.profile)
    json_file, png = write_report(result, json_path)
    update, forward = result["update_ms"], result["forward_ms"]
    print("update step (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in update.items()))
    print("forward b1 (ms):  " + ", ".join(f"{k} {v:.3f}" for k, v in forward.items()))
    print(f"{result['compared']}: update x{result['update_speedup_vs_torch']:.2f} vs torch, "
          f"x{result['update_speedup_vs_ort']:.2f} vs ORT; forward x{result['forward_speedup_vs_torch']:.2f} "
          f"vs torch; {result['tuned_trials']} new tuning trials")
    if args.profile:
        from autlearn.kernel_profile import KernelTime, format_profile

        for variant, modules in result["profile"].items():
            for module, rows in modules.items():
                print("\n" + format_profile(f"{variant} {module}: kernels by self time",
                                             [KernelTime(**row) for row in rows]))
    print(f"wrote {json_file} and {png}")
    return 0


def _bench_reliability(args: argparse.Namespace) -> int:
    import json

    from autlearn.reliability import run_reliability

    for name in ("kill_trials", "fuzz_cases", "events"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not Path(args.bundle).is_dir():
        raise FileNotFoundError(f"bundle directory {args.bundle} does not exist")
    report = run_reliability(Path(args.bundle), Path(args.work), kill_trials_n=args.kill_trials,
                             fuzz_cases=args.fuzz_cases, events=args.events, seed=args.seed)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"kills survived {report['kills_survived']}/{report['kill_trials']}, corruptions refused "
          f"{report['corruptions_refused']}/{report['corruptions_tried']}, fuzz cases {report['fuzz_cases']} "
          f"({report['crashes']} crashes), disk full: {report['disk_full_method'].split(' (')[0]}, "
          f"{report['events']} events ({report['samples_lost']} samples lost, {report['events_per_s']:.0f}/s), "
          f"peak RSS {report['peak_rss_mb']:.0f} MB")
    for goal, met in report["goals"].items():
        print(f"  {'met ' if met else 'MISS'}  {goal}")
    return 0 if all(report["goals"].values()) else 1


def register(tree: CommandTree) -> None:
    """Adds `bench compiler` and `bench reliability`."""
    p = tree.subcommand("bench", "compiler", group_help=GROUP_HELP,
                        help="compiled update step and forward vs PyTorch eager and ORT training, untuned and tuned")
    p.add_argument("--task", required=True, help="a task recipe of cloud_pretrain/recipes.py")
    p.add_argument("--json", type=Path, default=None,
                   help="result file (default: out/bench/compiler-TASK.json); the chart goes next to it as .png")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a checkpoint.pt to benchmark (default: the demo-sized model with random weights)")
    p.add_argument("--cut", default=None, help="cut layer (default: the last FC layer)")
    p.add_argument("--tune-trials", type=int, default=0,
                   help="MetaSchedule trials per module for the tuned variant (0: untuned only)")
    p.add_argument("--tuning-db", type=Path, default=None,
                   help="tuning database directory (default: the per-target cache, reused across runs)")
    p.add_argument("--threads", type=int, default=2, help="threads for every implementation")
    p.add_argument("--repeats", type=int, default=50, help="timed rounds (medians are reported)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before timing")
    p.add_argument("--work-dir", type=Path, default=None, help="where the compiled bundles go")
    p.add_argument("--profile", action="store_true",
                   help="also list each compiled module's kernels with their share of its time")
    p.set_defaults(func=_bench_compiler)

    p = tree.subcommand("bench", "reliability", group_help=GROUP_HELP,
                        help="the device side against kills, a full disk, damaged bundles, fuzzed input, the "
                             "network and a long stream; exit 1 when a goal is missed")
    p.add_argument("--bundle", required=True, help="the compiled bundle to prove")
    p.add_argument("--json", default=None, help="write the report to this JSON file")
    p.add_argument("--work", default="out/bench-reliability", help="scratch directory (emptied first)")
    p.add_argument("--kill-trials", type=int, default=20, help="SIGKILLs, alternating offline and online learning")
    p.add_argument("--fuzz-cases", type=int, default=1000, help="hypothesis examples in all, over the fuzzed entry points")
    p.add_argument("--events", type=int, default=100_000, help="samples streamed through online learning")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_bench_reliability)
