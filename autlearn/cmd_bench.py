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
    threads = _thread_counts(args.threads)
    from autlearn.bench_compiler import WAIT_POLICY, bench_compiler, write_report

    # TVM sizes its thread pool once, from this variable, when it first runs anything; the wait
    # policy (every side passive, see WAIT_POLICY) must also be set before any pool starts.
    os.environ["TVM_NUM_THREADS"] = str(max(threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(threads)))
    for key, value in WAIT_POLICY.items():
        os.environ.setdefault(key, value)
    model, inputs = bench_model(args.task, args.checkpoint)
    json_path = args.json or Path("out") / "bench" / f"compiler-{args.task}.json"
    work_dir = args.work_dir or json_path.parent / f"compiler-{args.task}-bundles"
    result = bench_compiler(model, inputs, work_dir, cut=args.cut, tune_trials=args.tune_trials,
                            tuning_db=args.tuning_db, threads=threads, repeats=args.repeats,
                            warmup=args.warmup, profile=args.profile, executorch=args.executorch)
    json_file, png = write_report(result, json_path)
    if args.markdown:
        import shlex
        import sys

        from autlearn.bench_compiler import markdown_tables, replace_section

        command = "autlearn " + " ".join(shlex.quote(a) for a in sys.argv[1:] if a)
        replace_section(args.markdown, f"bench compiler {args.task}", markdown_tables(result, command))
    for n, ms in result["ms"].items():
        print(f"{n} thread(s): update step (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in ms["update"].items()))
        print(f"{n} thread(s): forward b1 (ms):  " + ", ".join(f"{k} {v:.3f}" for k, v in ms["forward"].items()))
    for variant in ("untuned", "tuned"):
        for n, figures in result.get(variant, {}).items():
            peers = ", ".join(f"x{figures[f'update_speedup_vs_{p}']:.2f} vs {p}" for p in ("torch", "ort", "executorch")
                              if f"update_speedup_vs_{p}" in figures)
            print(f"{variant}, {n} thread(s): update {peers}; forward x{figures['forward_speedup_vs_torch']:.2f} "
                  f"vs torch; update {figures['update_gflops']:.1f} GFLOP/s")
    if result["executorch"] != "ran":
        print(f"ExecuTorch left out: {result['executorch']}")
    print(f"{result['tuned_trials']} new tuning trials in {result['tuning_seconds']:.0f} s")
    if args.profile:
        from autlearn.kernel_profile import KernelTime, format_profile

        for variant, modules in result["profile"].items():
            for module, rows in modules.items():
                print("\n" + format_profile(f"{variant} {module}: kernels by self time",
                                             [KernelTime(**row) for row in rows]))
    print(f"wrote {json_file} and {png}")
    return 0


def _thread_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--threads must be thread counts separated by commas, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise ValueError(f"--threads must be >= 1, got {text!r}")
    return counts


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
                   help="MetaSchedule candidates measured in all, over the bundle's modules, for the tuned "
                        "variant (0: untuned only)")
    p.add_argument("--tuning-db", type=Path, default=None,
                   help="tuning database directory (default: the per-target cache, reused across runs)")
    p.add_argument("--threads", default="1,2",
                   help="thread counts, comma-separated: every implementation is timed at each")
    p.add_argument("--no-executorch", dest="executorch", action="store_false",
                   help="leave ExecuTorch's training path out of the race")
    p.add_argument("--repeats", type=int, default=50, help="timed rounds (medians are reported)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before timing")
    p.add_argument("--work-dir", type=Path, default=None, help="where the compiled bundles go")
    p.add_argument("--profile", action="store_true",
                   help="also list each compiled module's kernels with their share of its time")
    p.add_argument("--markdown", type=Path, default=None,
                   help="also write the tables, with this command above them, into this file "
                        "(between <!-- bench compiler TASK --> markers, e.g. BENCHMARKS.md)")
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
