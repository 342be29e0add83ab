"""`autlearn` commands: device (offline, online, infer, status) and `bench cache`.

Each handler first isolates the process as a phone would run it (runtime-only TVM, no torch:
device_runtime.isolation), then calls the device_runtime library.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from autlearn.cli import CommandTree

GROUP_HELP = "learn and infer on the device (TVM runtime and numpy only)"


def _isolate() -> None:
    from device_runtime.isolation import isolate_device_process

    isolate_device_process()


def _print_json(data: dict) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _offline(args: argparse.Namespace) -> int:
    _isolate()
    from tqdm import tqdm

    from device_runtime.offline import OfflineConfig, OfflineRun
    from device_runtime.policy import make_policy

    config = OfflineConfig(epochs=args.epochs, window_steps=args.window_steps, window_seconds=args.window_seconds,
                           checkpoint_every=args.checkpoint_every, augment_ratio=args.augment_ratio,
                           seed=args.seed, max_windows=args.max_windows)
    run = OfflineRun(args.bundle, args.data, args.state, config, make_policy(args.policy))
    bar = tqdm(total=run.status()["total_steps"], initial=run.progress.step, unit="step", desc="offline",
               disable=None)
    run.on_step = lambda progress, result: (bar.update(1), bar.set_postfix(loss=progress.last_loss))
    status = run.run()
    bar.close()
    status["test_accuracy"] = run.evaluate()
    _print_json(status)
    return 0


def _plot_curve(curve: list, path: Path) -> None:
    """Prequential accuracy against labelled samples, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([c[0] for c in curve], [c[1] for c in curve])
    ax.set_xlabel("labelled samples")
    ax.set_ylabel("prequential accuracy")
    ax.set_title("online learning: predict, then learn")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _online(args: argparse.Namespace) -> int:
    _isolate()
    from tqdm import tqdm

    from device_runtime.online import run_online

    with tqdm(unit="sample", desc="online", disable=None) as bar:
        status = run_online(args.bundle, args.text or args.data, args.state, batch=args.batch,
                            cache_size=args.cache_size, max_age_s=args.max_age, feedback_delay=args.feedback_delay,
                            use_cache=not args.no_cache, checkpoint_every=args.checkpoint_every,
                            on_sample=lambda i: bar.update(1), text=args.text is not None)
    if status["curve"] and importlib.util.find_spec("matplotlib") is not None:  # a phone has no matplotlib
        plot = Path(args.state) / "prequential.png"
        _plot_curve(status["curve"], plot)
        status["plot"] = str(plot)
    status["curve"] = f"{len(status['curve'])} points (status.json)"
    _print_json(status)
    return 0


def _infer(args: argparse.Namespace) -> int:
    _isolate()
    from device_runtime.inference import infer_file, infer_text

    if args.text is not None:
        result = infer_text(args.bundle, args.text, state_dir=args.state, top=args.top)
        if not args.json:
            print(" | ".join(f"{s['label']} ({s['p']:.3f})" for s in result["suggestions"]))
            return 0
    else:
        result = infer_file(args.bundle, args.input, state_dir=args.state, top=args.top)
    _print_json(result)
    return 0


def _status(args: argparse.Namespace) -> int:
    from device_runtime.state import read_status

    _print_json(read_status(args.state))
    return 0


def _bench_cache(args: argparse.Namespace) -> int:
    from autlearn.bench_cache import run_cache_benchmark, summary

    result = run_cache_benchmark(args.task, work=args.work or f"out/bench-cache/{args.task}", samples=args.samples,
                                 repeats=args.repeats, preset=args.preset, json_path=args.json)
    _print_json(result)
    print(summary(result))
    return 0


def register(tree: CommandTree) -> None:
    """Adds `device offline|online|infer|status` and `bench cache`."""
    p = tree.subcommand("device", "offline", "epochs over the user's history data, in windows the device may train",
                        GROUP_HELP)
    p.add_argument("--bundle", required=True, help="compiled bundle directory")
    p.add_argument("--data", required=True, help="user data .npz (x, y[, test_x, test_y])")
    p.add_argument("--state", required=True, help="state directory (checkpoints, status.json)")
    p.add_argument("--epochs", type=int, default=1)
    window = p.add_mutually_exclusive_group()
    window.add_argument("--window-steps", type=int, help="updates per training window")
    window.add_argument("--window-seconds", type=float, help="seconds per training window")
    p.add_argument("--max-windows", type=int, help="windows this invocation may use (default: until done)")
    p.add_argument("--checkpoint-every", type=int, default=50, help="updates between atomic checkpoints")
    p.add_argument("--policy", choices=("auto", "always", "linux", "android"), default="auto",
                   help="when the device may train (charging, screen off; an unknown state forbids): auto picks "
                        "android on Android, linux (sysfs) where /sys/class/power_supply shows a battery, "
                        "else always")
    p.add_argument("--augment-ratio", type=float, default=1.0, help="augmented copies per sample, at most 1")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_offline)

    p = tree.subcommand("device", "online", "simulated user stream: infer each sample, learn when its label comes",
                        GROUP_HELP)
    p.add_argument("--bundle", required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="user data .npz; its samples are the stream")
    source.add_argument("--text", help="a text file typed line by line: each word is predicted, then learned "
                                       "(a next-word model)")
    p.add_argument("--state", required=True)
    p.add_argument("--batch", type=int, default=16, help="labelled samples per update (a multiple of train_batch)")
    p.add_argument("--cache-size", type=int, default=256, help="most cached activations")
    p.add_argument("--max-age", type=float, default=600.0, help="seconds before a cached activation is stale")
    p.add_argument("--feedback-delay", type=int, default=0, help="samples between an inference and its label")
    p.add_argument("--no-cache", action="store_true", help="recompute the forward pass for every label")
    p.add_argument("--checkpoint-every", type=int, default=10, help="updates between atomic checkpoints")
    p.set_defaults(func=_online)

    p = tree.subcommand("device", "infer", "predict the inputs of an .npz (key x) or .npy file, or typed text",
                        GROUP_HELP)
    p.add_argument("--bundle", required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help=".npy array or .npz with x, in model-input form")
    source.add_argument("--text", help='typed text, e.g. "to be or not to": the next-word suggestions '
                                       "(a text classifier: its classes)")
    p.add_argument("--state", help="use the params learned in this state directory")
    p.add_argument("--top", type=int, default=3, help="classes (or words) to list per sample")
    p.add_argument("--json", action="store_true", help="with --text: the suggestions as JSON")
    p.set_defaults(func=_infer)

    p = tree.subcommand("device", "status", "progress, windows used and last checkpoint of a state directory",
                        GROUP_HELP)
    p.add_argument("--state", required=True)
    p.set_defaults(func=_status)

    p = tree.subcommand("bench", "cache", "online learning: the cache against recomputing the forward pass; "
                        "device peak RSS against PyTorch", "benchmarks")
    p.add_argument("--task", required=True, help="a task recipe of cloud_pretrain/recipes.py")
    p.add_argument("--preset", default="demo", help="the recipe's model sizes (random weights)")
    p.add_argument("--json", help="write the figures to this JSON file")
    p.add_argument("--work", help="model, bundle and stream directory (default out/bench-cache/TASK; reused)")
    p.add_argument("--samples", type=int, default=320, help="stream length per pass")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per mode (medians)")
    p.set_defaults(func=_bench_cache)
