"""`autlearn bench reliability`: the device side proved against kills, full disks, damaged bundles,
bad input, the network and a long stream (one module per section; each runs the device code as a
phone runs it, in fresh isolated processes, on the bundle the user gives).

Goal: every kill survived, every corruption refused, no crash, no sample lost, nothing private.
"""
from __future__ import annotations

import resource
import shutil
from pathlib import Path
from typing import Any

from tqdm import tqdm

from autlearn.reliability.corruption import corruptions
from autlearn.reliability.disk import disk_full
from autlearn.reliability.fuzz import fuzz_inputs
from autlearn.reliability.kills import kill_trials
from autlearn.reliability.load import stream_load
from autlearn.reliability.privacy import check_privacy


WORK_MARKER = ".autlearn-reliability"  # only a directory this suite made is emptied


def goals_met(report: dict[str, Any]) -> dict[str, bool]:
    """Each goal of the suite and whether the report meets it."""
    return {"every kill survived": report["kills_survived"] == report["kill_trials"],
            "every corruption refused": report["corruptions_refused"] == report["corruptions_tried"],
            "a full disk keeps the checkpoint and says so": report["disk_full_clear_error"]
            and report["disk_full_rerun_matches"],
            "no crash on bad input": report["crashes"] == 0 and not report["model_changed_by_bad_input"],
            "no network, no cloud code": report["private"],
            "no sample lost, memory bounded": report["samples_lost"] == 0 and report["memory_over_bound"] == 0}


def run_reliability(bundle: Path, work: Path, *, kill_trials_n: int = 20, fuzz_cases: int = 1000,
                    events: int = 100_000, seed: int = 0) -> dict[str, Any]:
    """Every section on `bundle`, scratch files under `work` (emptied first); the flat report."""
    bundle, work = Path(bundle), Path(work)
    if work.exists() and any(work.iterdir()) and not (work / WORK_MARKER).is_file():
        raise ValueError(f"{work} is not empty and not a reliability scratch directory: refusing to empty it")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / WORK_MARKER).touch()
    sections = [("kills", lambda tick: kill_trials(bundle, work / "kills", trials=kill_trials_n, seed=seed,
                                                  on_trial=tick)),
                ("disk full", lambda tick: disk_full(bundle, work / "disk", seed=seed)),
                ("corruptions", lambda tick: corruptions(bundle, work / "corruptions", seed=seed)),
                ("fuzz", lambda tick: fuzz_inputs(bundle, work / "fuzz", cases=fuzz_cases, seed=seed)),
                ("privacy", lambda tick: check_privacy(bundle, work / "privacy")),
                ("load", lambda tick: stream_load(bundle, events=events, seed=seed))]
    report: dict[str, Any] = {"bundle": str(bundle)}
    with tqdm(total=kill_trials_n + len(sections) - 1, desc="reliability", unit="step") as bar:
        for name, section in sections:
            bar.set_postfix_str(name)
            result = section(bar.update)
            peak = result.pop("peak_rss_mb", None)
            if peak is not None:
                report[f"{name}_peak_rss_mb"] = peak
            report.update(result)
            if name != "kills":
                bar.update()
    # every device process was a child of this one: the largest of them
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    report["goals"] = goals_met(report)
    return report
