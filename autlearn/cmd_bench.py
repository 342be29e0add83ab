"""`autlearn` commands: bench compiler (`bench cache` is registered by cmd_device)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from autlearn.cli import CommandTree

GROUP_HELP = "benchmarks"
DEMO_PRESET = "demo"
NWP_DEMO_VOCAB = 10_002  # <pad>, <unk> and the 10,000 most frequent words
IMAGE_CLASSES = 62


def _demo_model(task: str):
    """The task's demo-sized model with random weights (enough for timing) and its label names."""
    from cloud_pretrain.models import build_model
    from cloud_pretrain.tasks import get_preset

    config = dict(get_preset(task, DEMO_PRESET).model)
    if task == "nwp":
        config["vocab_size"] = NWP_DEMO_VOCAB
        labels = ["<pad>", "<unk>"] + [f"word{i}" for i in range(NWP_DEMO_VOCAB - 2)]
    else:
        config["num_classes"] = IMAGE_CLASSES
        labels = [f"class{i}" for i in range(IMAGE_CLASSES)]
    return build_model(task, **config).eval(), labels


def _checkpoint_model(path: Path, task: str):
    from cloud_pretrain.checkpoint import load_checkpoint

    model, meta = load_checkpoint(path)
    if meta["task"] != task:
        raise ValueError(f"checkpoint {path} is for task {meta['task']!r}, not {task!r}")
    return model, list(meta.get("vocab") or meta["labels"])


def _bench_compiler(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    # TVM sizes its thread pool once, from this variable, when it first runs anything.
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    # PyTorch's OpenMP threads spin-wait by default; on a loaded 2-core machine that makes a
    # 0.4 ms eager step take 300 ms (measured), which would flatter the compiled side.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
    from compiler.bench import bench_compiler, write_report

    model, labels = _checkpoint_model(args.checkpoint, args.task) if args.checkpoint else _demo_model(args.task)
    json_path = args.json or Path("out") / "bench" / f"compiler-{args.task}.json"
    work_dir = args.work_dir or json_path.parent / f"compiler-{args.task}-bundles"
    result = bench_compiler(model, args.task, labels, work_dir, cut=args.cut, tune_trials=args.tune_trials,
                            tuning_db=args.tuning_db, threads=args.threads, repeats=args.repeats,
                            warmup=args.warmup)
    json_file, png = write_report(result, json_path)
    update, forward = result["update_ms"], result["forward_ms"]
    print(f"update step (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in update.items()))
    print(f"forward b1 (ms):  " + ", ".join(f"{k} {v:.3f}" for k, v in forward.items()))
    print(f"{result['compared']}: update x{result['update_speedup_vs_torch']:.2f} vs torch, "
          f"x{result['update_speedup_vs_ort']:.2f} vs ORT; forward x{result['forward_speedup_vs_torch']:.2f} "
          f"vs torch; {result['tuned_trials']} new tuning trials")
    print(f"wrote {json_file} and {png}")
    return 0


def register(tree: CommandTree) -> None:
    """Adds `bench compiler`."""
    p = tree.subcommand("bench", "compiler", group_help=GROUP_HELP,
                        help="compiled update step and forward vs PyTorch eager and ORT training, untuned and tuned")
    p.add_argument("--task", required=True, choices=["nwp", "image"])
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
    p.set_defaults(func=_bench_compiler)
