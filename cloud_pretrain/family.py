"""`autlearn prune`: a family of compressed models from one checkpoint, judged honestly.

The checkpoint's validation data are split (seeded) into a search split, the only data the
search sees (it scores proposals and members on it, and `build` picks its model on it), and a
held-out split that reports every accuracy and judges the 1-point rule. Writes, per budget,
`budget-<i>/checkpoint.pt` (and `vocab.txt` or `labels.txt`), then `table.csv`, `table.md`,
`family.json` (budget, resource, accuracies, the compiled transfer-learning step of each model
against the unpruned model's, timed side by side), `pruning.png` (held-out accuracy against
the resource), `steptime.png` and `tradeoff.png` (held-out accuracy against step speedup).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cloud_pretrain.checkpoint import load_checkpoint, save_checkpoint, write_names
from cloud_pretrain.models import StagedModel
from cloud_pretrain.plots import plot_bars, plot_lines
from cloud_pretrain.resources import LatencyMeter, count_flops, make_resource, parameter_bytes
from cloud_pretrain.search import Member, SearchConfig, netadapt, parse_budgets
from cloud_pretrain.tasks import get_preset, load_data
from cloud_pretrain.train import Buckets, count_examples, evaluate

# MobileNetV2 offers 18 groups to 3 for the LSTM, and each of its steps costs more:
# its proposals get fewer steps so that one iteration of the search costs about the same.
SEARCH_PRESETS = {
    "nwp": {"tiny": SearchConfig(step_fraction=0.25, short_steps=3, long_steps=10, eval_examples=200),
            "demo": SearchConfig(step_fraction=0.1, short_steps=20, long_steps=300, eval_examples=1000, align=8),
            "paper": SearchConfig(step_fraction=0.05, short_steps=100, long_steps=2000, eval_examples=5000,
                                  align=8)},
    "image": {"tiny": SearchConfig(step_fraction=0.25, short_steps=1, long_steps=5, eval_examples=100),
              "demo": SearchConfig(step_fraction=0.15, short_steps=4, long_steps=150, eval_examples=500, align=8),
              "paper": SearchConfig(step_fraction=0.05, short_steps=30, long_steps=2000, eval_examples=2500,
                                    align=8)},
}
ACCURACY_TOLERANCE = 0.01  # the figure's "no more than 1 point of accuracy lost"
HELD_OUT_FRACTION = 0.5
SPLIT_SEED = 1234  # the search/held-out split, apart from the pretraining seed's draws
COLUMNS = ("model", "budget", "resource", "search_accuracy", "accuracy", "param_bytes", "flops", "step_ms",
           "forward_ms", "step_speedup", "step_speedup_runs", "config")

# one dict per timing run: name -> {"update", "forward"} ms, every model timed side by side in each run
StepTimer = Callable[[dict[str, StagedModel]], list[dict[str, dict[str, float]]]]


def split_validation(val: Buckets, held_out_fraction: float = HELD_OUT_FRACTION,
                     seed: int = SPLIT_SEED) -> tuple[Buckets, Buckets]:
    """(search, held_out): each bucket's examples dealt by a seeded permutation, disjoint."""
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"the held-out fraction must lie in (0, 1), got {held_out_fraction}")
    g = torch.Generator().manual_seed(seed)
    search, held_out = {}, {}
    for key in sorted(val):
        x, y = val[key]
        perm = torch.randperm(len(y), generator=g)
        n = round(len(y) * held_out_fraction)
        if len(y) < 2:
            raise ValueError(f"bucket {key} has {len(y)} validation example(s): too few to split")
        n = min(max(n, 1), len(y) - 1)
        held_out[key], search[key] = (x[perm[:n]], y[perm[:n]]), (x[perm[n:]], y[perm[n:]])
    return search, held_out


def _row(name: str, budget: str, resource: float, search_accuracy: float, accuracy: float, model: StagedModel,
         task: str) -> dict[str, Any]:
    return {"model": name, "budget": budget, "resource": resource, "search_accuracy": search_accuracy,
            "accuracy": accuracy, "param_bytes": parameter_bytes(model), "flops": count_flops(model, task),
            "config": model.config}


def add_step_times(rows: list[dict[str, Any]], runs: list[dict[str, dict[str, float]]]) -> None:
    """Each row's step and forward ms (medians over the runs) and its speedup over the unpruned
    row: the median of the runs' ratios, each taken within one side-by-side run, and every run's."""
    for row in rows:
        name = row["model"]
        row["step_ms"] = statistics.median(run[name]["update"] for run in runs)
        row["forward_ms"] = statistics.median(run[name]["forward"] for run in runs)
        row["step_speedup_runs"] = [run["unpruned"]["update"] / run[name]["update"] for run in runs]
        row["step_speedup"] = statistics.median(row["step_speedup_runs"])


def write_table(rows: list[dict[str, Any]], out: Path, resource_name: str, unit: str) -> None:
    """`table.csv` and `table.md` with one row per model."""
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"| model | budget | {resource_name} ({unit}) | search acc. | held-out acc. | param bytes | FLOPs | "
             "step ms | forward ms | step speedup (range over timing runs) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['budget']} | {r['resource']:.4g} | {r['search_accuracy']:.4f} | "
              f"{r['accuracy']:.4f} | {r['param_bytes']} | {r['flops']} | {r['step_ms']:.3f} | {r['forward_ms']:.3f} | "
              f"{_speedups(r)} |" for r in rows]
    (out / "table.md").write_text("\n".join(lines) + "\n")


def _speedups(row: dict[str, Any]) -> str:
    """The median speedup, and the range over the timing runs when there were several."""
    runs = row["step_speedup_runs"]
    spread = f" ({min(runs):.2f}-{max(runs):.2f})" if len(runs) > 1 else ""
    return f"{row['step_speedup']:.2f}x{spread}"


def best_within_tolerance(rows: list[dict[str, Any]], tolerance: float = ACCURACY_TOLERANCE,
                          key: str = "accuracy") -> dict[str, Any]:
    """The fastest row whose `key` accuracy is at most `tolerance` below the unpruned row (rows[0])."""
    floor = rows[0][key] - tolerance
    return min((r for r in rows if r[key] >= floor), key=lambda r: r["step_ms"])


def family_summary(rows: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
    """family.json: the rows, the fastest within 1 point on the held-out split (the goal's
    figure) and the model picked on the search split (what `build` compiles) with its held-out result."""
    best = best_within_tolerance(rows)
    picked = best_within_tolerance(rows, key="search_accuracy")
    keys = ("model", "accuracy", "search_accuracy", "step_ms", "step_speedup", "step_speedup_runs")
    return {**context, "tolerance": ACCURACY_TOLERANCE, "models": rows,
            "best_within_1pt": {k: best[k] for k in keys}, "best_within_1pt_speedup": best["step_speedup"],
            "picked_on_search_split": {k: picked[k] for k in keys}}


def _plots(rows: list[dict[str, Any]], out: Path, task: str, resource_name: str, unit: str) -> None:
    plot_lines(out / "pruning.png", [r["resource"] for r in rows],
               {"held-out accuracy": [r["accuracy"] for r in rows],
                "search-split accuracy": [r["search_accuracy"] for r in rows]},
               title=f"{task}: accuracy against {resource_name}", xlabel=f"{resource_name} ({unit})",
               ylabel="top-1 accuracy")
    plot_bars(out / "steptime.png", {f"{r['model']}\n{r['accuracy']:.3f}": r["step_ms"] for r in rows},
              title=f"{task}: compiled transfer-learning step", ylabel="ms per update (median)")
    ordered = sorted(rows, key=lambda r: r["step_speedup"])
    floor = rows[0]["accuracy"] - ACCURACY_TOLERANCE
    plot_lines(out / "tradeoff.png", [r["step_speedup"] for r in ordered],
               {"held-out accuracy": [r["accuracy"] for r in ordered],
                "unpruned - 1 point": [floor] * len(ordered)},
               title=f"{task}: accuracy against compiled step speedup", xlabel="update speedup vs unpruned (x)",
               ylabel="top-1 accuracy (held-out split)")


def prune_family(task: str, checkpoint: str | Path, resource_name: str, budgets: str, out: str | Path, *,
                 step_timer: StepTimer, latency_meter: LatencyMeter | None = None, preset: str | None = None,
                 seed: int = 0, factorise: bool = True, context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Runs the budgeted search on a pretrained checkpoint; returns the table rows (the unpruned
    model first). `step_timer` times the compiled steps of all models side by side."""
    model, meta = load_checkpoint(checkpoint)
    if meta["task"] != task:
        raise ValueError(f"{checkpoint} is a {meta['task']} checkpoint, not {task}")
    trained = meta["metrics"]
    if "preset" not in trained or "seed" not in trained:
        raise ValueError(f"{checkpoint} does not say which preset and seed pretrained it (metrics: {list(trained)})")
    data_preset = get_preset(task, trained["preset"])
    search_config = SEARCH_PRESETS[task][preset or trained["preset"]]
    if not factorise:
        search_config = dataclasses.replace(search_config, factorise=False)
    resource = make_resource(resource_name, task, latency_meter)
    base_value = resource.measure(model)
    parsed = parse_budgets(budgets, base_value)
    data = load_data(task, data_preset, trained["seed"], vocab=meta.get("vocab"))
    search, held_out = split_validation(data.val)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = {"vocab": meta["vocab"]} if "vocab" in meta else {"labels": meta["labels"]}
    base = (evaluate(model, search)["accuracy"], evaluate(model, held_out)["accuracy"])
    print(f"unpruned: {resource.name} {base_value:g} {resource.unit}, accuracy {base[0]:.4f} search split, "
          f"{base[1]:.4f} held-out ({count_examples(search)} / {count_examples(held_out)} examples)")
    rows = [_row("unpruned", "-", base_value, *base, model, task)]
    members: dict[str, StagedModel] = {}

    def keep(member: Member) -> None:
        name = f"budget-{len(members) + 1}"
        members[name] = member.model
        accuracy = evaluate(member.model, held_out)["accuracy"]
        metrics = {"preset": trained["preset"], "seed": trained["seed"], "val_accuracy": accuracy,
                   "search_accuracy": member.search_accuracy, "pruned_from": str(checkpoint),
                   "budget": member.budget.label, resource.name: member.resource}
        save_checkpoint(out / name / "checkpoint.pt", member.model, task, metrics=metrics, **names)
        write_names(out / name, **names)
        rows.append(_row(name, member.budget.label, member.resource, member.search_accuracy, accuracy,
                         member.model, task))

    try:
        netadapt(model, data.train, search, resource, parsed, data_preset.train, search_config, seed, on_member=keep)
    except RuntimeError as err:  # a budget out of reach: keep the table of the members found before it
        failure = err
    else:
        failure = None
    add_step_times(rows, step_timer({"unpruned": model, **members}))
    write_table(rows, out, resource.name, resource.unit)
    summary = family_summary(rows, task=task, resource=resource.name, unit=resource.unit, **(context or {}),
                             search_examples=count_examples(search), held_out_examples=count_examples(held_out))
    (out / "family.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plots(rows, out, task, resource.name, resource.unit)
    if failure is not None:
        raise RuntimeError(f"{failure}; the {len(members)} model(s) before it and their table are in {out}")
    return rows
