"""`autlearn prune`: a family of pruned models from one checkpoint, with its table and figures.

Writes into the output directory, per budget, `budget-<i>/checkpoint.pt` (and `vocab.txt`
or `labels.txt`), then `table.csv` and `table.md` (budget, resource, accuracy, sizes and the
transfer-learning step time against the unpruned model), `pruning.png` (accuracy against
resource) and `steptime.png`.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from cloud_pretrain.checkpoint import load_checkpoint, save_checkpoint, write_names
from cloud_pretrain.models import StagedModel
from cloud_pretrain.plots import plot_bars, plot_lines
from cloud_pretrain.resources import count_flops, make_resource, parameter_bytes
from cloud_pretrain.search import Member, SearchConfig, netadapt, parse_budgets
from cloud_pretrain.steptime import compare_step_times
from cloud_pretrain.tasks import get_preset, load_data
from cloud_pretrain.train import evaluate

# MobileNetV2 offers 18 groups to 3 for the LSTM, and each of its steps costs more:
# its proposals get fewer steps so that one iteration of the search costs about the same.
SEARCH_PRESETS = {
    "nwp": {"tiny": SearchConfig(step_fraction=0.25, short_steps=3, long_steps=10, eval_examples=200),
            "demo": SearchConfig(step_fraction=0.1, short_steps=20, long_steps=300, eval_examples=1000),
            "paper": SearchConfig(step_fraction=0.05, short_steps=100, long_steps=2000, eval_examples=5000)},
    "image": {"tiny": SearchConfig(step_fraction=0.25, short_steps=1, long_steps=5, eval_examples=100),
              "demo": SearchConfig(step_fraction=0.15, short_steps=4, long_steps=150, eval_examples=500),
              "paper": SearchConfig(step_fraction=0.05, short_steps=30, long_steps=2000, eval_examples=2500)},
}
ACCURACY_TOLERANCE = 0.01  # the figure's "no more than 1 point of accuracy lost"
COLUMNS = ("model", "budget", "resource", "accuracy", "param_bytes", "flops", "step_ms", "step_speedup", "config")


def _row(name: str, budget: str, resource: float, accuracy: float, model: StagedModel, task: str) -> dict[str, Any]:
    return {"model": name, "budget": budget, "resource": resource, "accuracy": accuracy,
            "param_bytes": parameter_bytes(model), "flops": count_flops(model, task), "config": model.config}


def write_table(rows: list[dict[str, Any]], out: Path, resource_name: str, unit: str) -> None:
    """`table.csv` and `table.md` with one row per model."""
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"| model | budget | {resource_name} ({unit}) | accuracy | param bytes | FLOPs | step ms | speedup |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['budget']} | {r['resource']:.4g} | {r['accuracy']:.4f} | {r['param_bytes']} | "
              f"{r['flops']} | {r['step_ms']:.3f} | {r['step_speedup']:.2f}x |" for r in rows]
    (out / "table.md").write_text("\n".join(lines) + "\n")


def best_within_tolerance(rows: list[dict[str, Any]], tolerance: float = ACCURACY_TOLERANCE) -> dict[str, Any]:
    """The fastest row whose accuracy is at most `tolerance` below the unpruned row (rows[0])."""
    floor = rows[0]["accuracy"] - tolerance
    return min((r for r in rows if r["accuracy"] >= floor), key=lambda r: r["step_ms"])


def prune_family(task: str, checkpoint: str | Path, resource_name: str, budgets: str, out: str | Path, *,
                 preset: str | None = None, seed: int = 0, step_repeats: int = 50) -> list[dict[str, Any]]:
    """Runs the budgeted search on a pretrained checkpoint; returns the table rows
    (the unpruned model first). The data are the checkpoint's own train/validation split."""
    model, meta = load_checkpoint(checkpoint)
    if meta["task"] != task:
        raise ValueError(f"{checkpoint} is a {meta['task']} checkpoint, not {task}")
    trained = meta["metrics"]
    if "preset" not in trained or "seed" not in trained:
        raise ValueError(f"{checkpoint} does not say which preset and seed pretrained it (metrics: {list(trained)})")
    data_preset = get_preset(task, trained["preset"])
    search_config = SEARCH_PRESETS[task][preset or trained["preset"]]
    resource = make_resource(resource_name, task)
    base_value = resource.measure(model)
    parsed = parse_budgets(budgets, base_value)
    data = load_data(task, data_preset, trained["seed"], vocab=meta.get("vocab"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = {"vocab": meta["vocab"]} if "vocab" in meta else {"labels": meta["labels"]}
    base_accuracy = evaluate(model, data.val)["accuracy"]
    print(f"unpruned: {resource.name} {base_value:g} {resource.unit}, accuracy {base_accuracy:.4f}")
    rows = [_row("unpruned", "-", base_value, base_accuracy, model, task)]
    members: dict[str, StagedModel] = {}

    def keep(member: Member) -> None:
        name = f"budget-{len(members) + 1}"
        members[name] = member.model
        metrics = {"preset": trained["preset"], "seed": trained["seed"], "val_accuracy": member.accuracy,
                   "pruned_from": str(checkpoint), "budget": member.budget.label, resource.name: member.resource}
        save_checkpoint(out / name / "checkpoint.pt", member.model, task, metrics=metrics, **names)
        write_names(out / name, **names)
        rows.append(_row(name, member.budget.label, member.resource, member.accuracy, member.model, task))

    try:
        netadapt(model, data.train, data.val, resource, parsed, data_preset.train, search_config, seed, on_member=keep)
    except RuntimeError as err:  # a budget out of reach: keep the table of the members found before it
        failure = err
    else:
        failure = None
    times = compare_step_times({"unpruned": model, **members}, task, repeats=step_repeats)
    for row in rows:
        row["step_ms"] = times[row["model"]]
        row["step_speedup"] = times["unpruned"] / times[row["model"]]
    write_table(rows, out, resource.name, resource.unit)
    plot_lines(out / "pruning.png", [r["resource"] for r in rows], {"validation accuracy": [r["accuracy"] for r in rows]},
               title=f"{task}: accuracy against {resource.name}", xlabel=f"{resource.name} ({resource.unit})",
               ylabel="top-1 accuracy")
    plot_bars(out / "steptime.png", {f"{r['model']}\n{r['accuracy']:.3f}": r["step_ms"] for r in rows},
              title=f"{task}: transfer-learning step (batch 16, default cut)", ylabel="ms per step (median)")
    if failure is not None:
        raise RuntimeError(f"{failure}; the {len(members)} model(s) before it and their table are in {out}")
    return rows
