"""MetaSchedule tuning of a bundle's Relax modules, with a database per target that later builds reuse.

Tunes the fused TIR functions the device calls, so the update's gradient kernels (conv2d
data/weight gradients, matmul gradients) are tuned along with the forward ones. The budget is
one number for the bundle, spread by each task's measured share of the time; a tuned schedule
ships only where it beat the default one (compiler/schedules.py), and a tuned module only
where it beats the default build end to end (compiler/module_race.py), so tuning never makes a
bundle slower. A task already given at least its budget (kept in the database directory)
is not tuned again. A tuning run writes into a staging copy of the database and replaces the
database's files atomically only when it ends, so a killed or failed run leaves the database as
it was (MetaSchedule itself appends to its files as it goes).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import tvm
import tvm_ffi
from tqdm import tqdm
from tvm import relax
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

from compiler.module_race import ModuleRace, public_names, race_modules
from compiler.ms_builder import PersistentPoolBuilder, import_tensor_intrinsics
from device_runtime.files import atomic_write_bytes, cache_dir

# The RPC runner's session and argument functions reach its worker processes by value, so the
# workers never import this package (or torch through it).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class RPCDevice:
    """A TVM RPC server on a device that runs the candidates of a target this machine cannot run."""

    host: str
    port: int
    cross_compiler: str  # links each candidate into a shared object the device loads
    description: str  # where times are measured, said in the output


def _connect(host: str, port: int, rpc_config: ms.runner.RPCConfig):
    """In a runner worker: a session with the device's server (no tracker)."""
    from tvm import rpc

    return rpc.connect(host, port, session_timeout=rpc_config.session_timeout_sec)


def _alloc_arguments(session, device, args_info, alloc_repeat: int) -> list:
    """In a runner worker: candidate arguments made here and copied over (the device's runtime has
    no random_fill). Integers are zeros: a random label or index read out of bounds crashed a
    candidate (TVM_NOTES), and zeros are in range for every gather."""
    import tvm as worker_tvm

    rng = np.random.default_rng(0)

    def tensor(info) -> worker_tvm.runtime.Tensor:
        _, dtype, shape = info
        if "float" in dtype:
            value = rng.uniform(-1, 1, size=shape).astype(dtype)
        else:
            value = np.zeros(shape, dtype=dtype)
        return worker_tvm.runtime.tensor(value, device)

    return [[tensor(info) for info in args_info] for _ in range(alloc_repeat)]


@contextlib.contextmanager
def tuning_device(target_name: str) -> Iterator[RPCDevice | None]:
    """The device that measures a target's candidates: None for the host (this machine), the
    emulated arm64 device for linux-arm64 once `autlearn emulator setup` built it (its RPC
    server runs while the block does), else None (tune_module then refuses)."""
    if target_name != "linux-arm64":
        yield None
        return
    from android_harness.emulator import EmulatorRoot
    from android_harness.qemu import QemuTransport

    from compiler.targets import ARM64_LINUX_CC

    if not EmulatorRoot().is_ready():
        yield None
        return
    with QemuTransport() as emulated:
        host, port = emulated.start_rpc_server()
        yield RPCDevice(host, port, ARM64_LINUX_CC, f"{emulated.description} (emulated: the times rank candidates "
                                                    "against each other, they are not phone times)")


def rpc_runner(device: RPCDevice) -> ms.runner.RPCRunner:
    """MetaSchedule's RPC runner measuring on `device`, one candidate at a time (a device's server
    serves one session at a time)."""
    return ms.runner.RPCRunner(
        # RPCConfig insists on tracker fields; f_create_session connects to the server directly
        rpc_config=ms.runner.RPCConfig(tracker_host=device.host, tracker_port=device.port, tracker_key="direct",
                                       session_timeout_sec=120),
        evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=0),
        f_create_session=functools.partial(_connect, device.host, device.port),
        f_alloc_argument=_alloc_arguments, max_workers=1)


@dataclass(frozen=True)
class TaskBudget:
    """One tuning task: its share of the measured time, its trials, and which schedule won."""

    name: str
    share: float         # of the called functions' time under the default schedules, weighted by calls
    default_us: float    # one call under compiler/schedules.py's default schedule
    budget: int          # trials it was given (0: too small a share to tune)
    trials: int          # candidates measured in this call
    succeeded: int       # of those, the ones that built and ran
    tuned_us: float | None  # the database's best, where it has one
    kept: bool           # the tuned schedule ships (it beat the default)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TuningResult:
    """Modules ready for `tvm.compile` with the tuned schedules that beat the defaults applied."""

    mods: dict[str, tvm.IRModule]
    tasks: list[TaskBudget]
    records: list[Any]   # the tuning records applied (what a bundle ships)
    seconds: float
    database_dir: Path
    races: dict[str, ModuleRace]  # per module tuning changed: default against tuned, end to end (module_race)

    @property
    def trials(self) -> int:
        return sum(t.trials for t in self.tasks)

    @property
    def failed_trials(self) -> int:
        return sum(t.trials - t.succeeded for t in self.tasks)

    @property
    def tuned_tasks(self) -> int:
        """Tasks that got successful trials in this call."""
        return sum(1 for t in self.tasks if t.succeeded)


def target_key(target: tvm.target.Target) -> str:
    """A directory-safe name for a target: kind, triple, cpu, features and core count."""
    attrs = target.attrs
    parts = [target.kind.name, attrs.get("mtriple") or "host", attrs.get("mcpu") or ""]
    parts += list(attrs.get("mattr") or [])
    if attrs.get("num-cores"):
        parts.append(f"{attrs['num-cores']}cores")
    return re.sub(r"[^A-Za-z0-9_.+]+", "_", "-".join(p for p in parts if p))


def default_database_dir(target: tvm.target.Target) -> Path:
    """`~/.cache/autlearn/tuning/<target key>/`; the environment variable AUTLEARN_CACHE moves the root."""
    return cache_dir() / "tuning" / target_key(target)


def with_num_cores(target: tvm.target.Target) -> tvm.target.Target:
    """MetaSchedule's CPU rules need `num-cores`; a CPU target without it gets this machine's count."""
    if "cpu" not in target.keys or target.attrs.get("num-cores"):
        return target
    config = {k: v for k, v in target.export().items() if k not in ("keys", "tag")}
    config["num-cores"] = os.cpu_count() or 1
    return tvm.target.Target(config)


def prepare_for_tuning(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Legalises and fuses `mod` as the static-shape tuning pipeline does, so keys match the database."""
    with target:
        return tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            relax.get_pipeline("zero"),
        ])(mod)


BUDGETS_FILE = "autlearn_budgets.json"  # per workload: the largest budget already spent on it
DEFAULTS_FILE = "autlearn_default_times.json"  # per workload: its default schedule's seconds
MIN_TASK_TRIALS = 8  # a smaller share of the budget is not worth a search: the task keeps its default
KEEP_MARGIN = 0.95  # a tuned schedule replaces the default only when measured 5% faster (noise is ~5%)


def _workload_key(task_mod: tvm.IRModule) -> str:
    return f"{tvm_ffi.structural_hash(task_mod):x}"


def _spent_budgets(database_dir: Path) -> dict[str, int]:
    path = database_dir / BUDGETS_FILE
    if not path.is_file():
        return {}
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not a tuning budget file ({err}); delete it to retune") from err


def _record_budgets(database_dir: Path, spent: dict[str, int]) -> None:
    budgets = _spent_budgets(database_dir)
    for key, budget in spent.items():
        budgets[key] = max(budget, budgets.get(key, 0))
    atomic_write_bytes(database_dir / BUDGETS_FILE, json.dumps(budgets, indent=0, sort_keys=True).encode())


def split_budget(trials: int, weights: list[float]) -> list[int]:
    """`trials` spread over tasks in proportion to `weights` (their measured time), largest first;
    a task whose share is under MIN_TASK_TRIALS gets none (what is left goes to the largest, which
    gets the whole budget when no share reaches the minimum); the sum is `trials` at most."""
    budgets = [0] * len(weights)
    total = sum(weights)
    if not weights or total <= 0 or trials < MIN_TASK_TRIALS:
        return budgets
    order = sorted(range(len(weights)), key=lambda i: -weights[i])
    for i in order:
        share = int(trials * weights[i] / total)
        if share < MIN_TASK_TRIALS:
            break
        budgets[i] = share
    budgets[order[0]] += trials - sum(budgets)  # rounding and the tasks too small to search
    return budgets


@derived_object
class _TrialProgress(PyMeasureCallback):
    """Counts measured candidates and advances a progress bar after each batch."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar
        self.trials = 0
        self.failed = 0

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        self.trials += len(runner_results)
        self.failed += sum(1 for b, r in zip(builder_results, runner_results)
                           if b.error_msg is not None or r.error_msg is not None)
        self.bar.update(len(runner_results))
        self.bar.set_postfix(failed=self.failed, refresh=False)


def search_strategy(per_task: int) -> ms.search_strategy.EvolutionarySearch:
    """MetaSchedule's evolutionary search with its population scaled to the per-task budget.

    The default population (512 sampled schedules, 4 generations) is meant for hundreds of
    trials a task; for a big fused LSTM cell it took 13 minutes here before measuring one
    candidate of a 1-trial budget. A few dozen schedules per trial keep the cost model useful.
    """
    population = min(512, max(64, 32 * per_task))
    return ms.search_strategy.EvolutionarySearch(
        population_size=population, init_min_unmeasured=min(50, population // 2),
        genetic_num_iters=4 if per_task >= 16 else 2)


@contextlib.contextmanager
def _foreign_handlers_detached():
    """MetaSchedule re-configures its logger with `dictConfig`, naming every handler already on
    it: a handler someone else attached (unnamed, or named outside its config) makes that raise.
    Detach those for the tuning run and put them back after."""
    logger = logging.getLogger(ms.logging.__name__.rsplit(".", 1)[0])
    foreign = [h for h in logger.handlers if not (h.get_name() or "").startswith(logger.name)]
    for handler in foreign:
        logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in foreign:
            logger.addHandler(handler)


DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")  # workloads first: records index them


@contextlib.contextmanager
def staged_database(database_dir: Path) -> Iterator[ms.database.JSONDatabase]:
    """A JSONDatabase over a staging copy of `database_dir`'s files; on a normal exit its files
    replace the database's, each atomically; on an exception (or a kill) the database is untouched."""
    for leftover in database_dir.glob(".staging-*"):  # of a run killed before it ended
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=database_dir))
    try:
        for name in DATABASE_FILES:
            if (database_dir / name).is_file():
                shutil.copyfile(database_dir / name, staging / name)
        yield ms.database.JSONDatabase(work_dir=str(staging))
        for name in DATABASE_FILES:
            if (staging / name).is_file():
                atomic_write_bytes(database_dir / name, (staging / name).read_bytes())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def tune_modules(mods: Mapping[str, tvm.IRModule], target: tvm.target.Target, *, trials: int,
                 database_dir: Path | None, progress: bool = True, device: RPCDevice | None = None,
                 called: Mapping[str, Sequence[str]] | None = None) -> TuningResult:
    """Tunes `mods` for `target` with `trials` candidates measured in all, then applies, task by
    task, the database's best schedule where it beats the default one (compiler/schedules.py).

    The budget goes to the tasks by their measured share of the time: every task's kernel is
    timed under its default schedule (where the candidates are measured) and weighted by how
    often the functions in `called` (per module key, the entry points a device runs; default:
    all) call it; tasks only other functions call get nothing. Records go to `database_dir` (a
    JSON database, created if missing; None: the target's default, see `default_database_dir`);
    a task already given at least its budget there is not tuned again, so a rebuild with the same
    database tunes nothing new. Candidates build and run in worker processes, each under a
    timeout; with `device`, they are linked with its cross compiler and measured on its RPC server.
    """
    if trials < 0:
        raise ValueError(f"trials must be >= 0, got {trials}")
    if not isinstance(target, tvm.target.Target):
        raise ValueError(f"target must be a tvm.target.Target, got {type(target).__name__}")
    triple = target.attrs.get("mtriple") or ""
    runs_here = not triple or triple.startswith(os.uname().machine)
    if trials and device is None and not runs_here:
        raise ValueError(f"cannot measure {triple} candidates on this {os.uname().machine} machine: tune through "
                         "a device's TVM RPC server (linux-arm64: `autlearn emulator setup` provides one)")
    start = time.perf_counter()
    target = with_num_cores(target)
    # Runner processes inherit this; without it TVM measures candidates on 1 thread here.
    os.environ.setdefault("TVM_NUM_THREADS", str(target.attrs.get("num-cores") or 1))
    database_dir = Path(database_dir) if database_dir is not None else default_database_dir(target)
    database_dir.mkdir(parents=True, exist_ok=True)
    import_tensor_intrinsics()

    prepared = {key: prepare_for_tuning(mod, target) for key, mod in mods.items()}
    tasks, weights, workloads = _called_tasks(prepared, target, called)
    builder = PersistentPoolBuilder(max_workers=min(2, os.cpu_count() or 1),
                                    cross_compiler=device.cross_compiler if device is not None else None)
    runner = rpc_runner(device) if device is not None else ms.runner.LocalRunner(timeout_sec=30)
    try:
        keys = [_workload_key(t.dispatched[0]) for t in tasks]
        default_s = _default_times(tasks, keys, target, builder, runner, database_dir)
        time_weights = [w * (t if math.isfinite(t) else 0.0) for w, t in zip(weights, default_s)]
        budgets = split_budget(trials, time_weights)
        spent = _spent_budgets(database_dir)
        todo = [b if b and spent.get(k, 0) < b else 0 for b, k in zip(budgets, keys)]
        with staged_database(database_dir) as database:
            outcomes = _tune_tasks(tasks, todo, database, database_dir, progress, device, builder, runner)
            _record_budgets(database_dir, {k: b for k, b in zip(keys, todo) if b})
            records, rows = _winners(tasks, database, default_s, outcomes, time_weights, budgets)
    finally:
        builder.close()
    winners = ms.database.MemoryDatabase()
    for record in records:
        winners.commit_workload(record.workload.mod)
        winners.commit_tuning_record(record)
    with target, winners:
        tuned = {key: relax.transform.MetaScheduleApplyDatabase()(mod) for key, mod in prepared.items()}
    races = race_modules(mods, tuned, target, called) if device is None and runs_here else {}
    tuned = {key: mods[key] if key in races and not races[key].tuned_wins else mod for key, mod in tuned.items()}
    shipped = set().union(*(workloads.get(key, set()) for key in tuned if key not in races or races[key].tuned_wins))
    records = [r for r in records if _workload_key(r.workload.mod) in shipped]
    return TuningResult(mods=tuned, tasks=rows, records=records, seconds=time.perf_counter() - start,
                        database_dir=database_dir, races=races)


def write_records(records: Sequence[Any], directory: Path) -> None:
    """The records as a JSON database of their own in `directory` (what a bundle ships)."""
    directory.mkdir(parents=True, exist_ok=True)
    database = ms.database.JSONDatabase(work_dir=str(directory))
    for record in records:
        database.commit_tuning_record(ms.database.TuningRecord(
            record.trace, database.commit_workload(record.workload.mod), record.run_secs, record.target,
            record.args_info))


def _called_tasks(prepared: Mapping[str, tvm.IRModule], target: tvm.target.Target,
                  called: Mapping[str, Sequence[str]] | None) -> tuple[list, list[float], dict[str, set[str]]]:
    """The distinct tasks of the entry points in `called`, how many calls reach each, and per
    module the workload keys of its tasks."""
    by_key: dict[str, Any] = {}
    weights: dict[str, float] = {}
    workloads: dict[str, set[str]] = {}
    for key, mod in prepared.items():
        entries = list(called[key]) if called is not None else None
        if entries is not None:
            if not entries:
                continue
            mod = _only_entries(mod, entries)  # task extraction follows the calls of what is left
        for task in ms.relax_integration.extract_tasks(mod, target):
            if _hand_scheduled(task.dispatched[0]):
                continue
            workload = _workload_key(task.dispatched[0])
            by_key.setdefault(workload, task)
            weights[workload] = weights.get(workload, 0.0) + float(task.weight)
            workloads.setdefault(key, set()).add(workload)
    return list(by_key.values()), [weights[k] for k in by_key], workloads


def _hand_scheduled(mod: tvm.IRModule) -> bool:
    """A kernel written with its schedule (compiler/lstm.py): there is nothing to search."""
    attrs = mod["main"].attrs
    return bool(attrs and attrs.get("tirx.is_scheduled"))


def _only_entries(mod: tvm.IRModule, entries: Sequence[str]) -> tvm.IRModule:
    """`mod` without the public functions not in `entries`."""
    out, public = tvm.IRModule(attrs=mod.attrs), set(public_names(mod))
    for gvar, func in mod.functions.items():
        if gvar.name_hint in public and gvar.name_hint not in entries:
            continue
        out[gvar] = func
    return out


def _default_times(tasks: list, keys: list[str], target: tvm.target.Target, builder, runner,
                   database_dir: Path) -> list[float]:
    """Each task's default-schedule time, measured once per workload and kept in the database
    directory: a rebuild splits the budget as the first build did, so it tunes nothing new."""
    path = database_dir / DEFAULTS_FILE
    known = json.loads(path.read_text()) if path.is_file() else {}
    missing = [i for i, k in enumerate(keys) if k not in known]
    for i, seconds in zip(missing, _measure_defaults([tasks[i] for i in missing], target, builder, runner)):
        if math.isfinite(seconds):
            known[keys[i]] = seconds
    atomic_write_bytes(path, json.dumps(known, indent=0, sort_keys=True).encode())
    return [known.get(k, math.inf) for k in keys]


def _measure_defaults(tasks: list, target: tvm.target.Target, builder, runner) -> list[float]:
    """Seconds per call of each task's kernel under the default schedule, measured as the
    candidates are (same builder and runner); inf where it failed."""
    from compiler.schedules import schedule_kernel

    inputs, funcs = [], []
    for task in tasks:
        func = task.dispatched[0]["main"]
        func = schedule_kernel(func, target) or func
        funcs.append(func)
        inputs.append(ms.builder.BuilderInput(tvm.IRModule({"main": func}), target))
    built = builder.build(inputs) if inputs else []
    seconds = [math.inf] * len(tasks)
    runnable = [(i, b) for i, b in enumerate(built) if b.error_msg is None]
    device_type = "cpu" if target.kind.name in ("llvm", "c") else target.kind.name
    futures = runner.run([ms.runner.RunnerInput(b.artifact_path, device_type,
                                                ms.arg_info.ArgInfo.from_prim_func(funcs[i]))
                          for i, b in runnable])
    for (i, _), future in zip(runnable, futures):
        result = future.result()
        if result.error_msg is None and result.run_secs:
            seconds[i] = float(np.median([float(t) for t in result.run_secs]))
    for _, b in runnable:
        shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
    return seconds


def _winners(tasks: list, database, default_s: list[float], outcomes: list[tuple[int, int]],
             weights: list[float], budgets: list[int]) -> tuple[list[Any], list[TaskBudget]]:
    """Per task, the database's best record where it beats the default schedule by KEEP_MARGIN; the table."""
    total = sum(weights) or 1.0
    records, rows = [], []
    for task, default, budget, (measured, succeeded), weight in zip(tasks, default_s, budgets, outcomes, weights):
        mod = task.dispatched[0]
        best = database.get_top_k(database.commit_workload(mod), 1) if database.has_workload(mod) else []
        tuned = float(np.median([float(t) for t in best[0].run_secs])) if best and best[0].run_secs else None
        kept = tuned is not None and tuned < KEEP_MARGIN * default
        if kept:
            records.append(best[0])
        rows.append(TaskBudget(name=task.task_name, share=round(weight / total, 4),
                               default_us=round(default * 1e6, 2) if math.isfinite(default) else float("inf"),
                               budget=budget, trials=measured, succeeded=succeeded,
                               tuned_us=round(tuned * 1e6, 2) if tuned is not None else None, kept=kept))
    return records, rows


def _tune_tasks(tasks: list, budgets: list[int], database: ms.database.Database, database_dir: Path,
                progress: bool, device: RPCDevice | None, builder, runner) -> list[tuple[int, int]]:
    """MetaSchedule on every task with a budget, each searched with its own budget, measured here
    or on `device`; per task (trials measured, of them succeeded)."""
    outcomes = [(0, 0)] * len(tasks)
    pending = [i for i, b in enumerate(budgets) if b]
    if not pending:
        return outcomes
    if device is not None:
        tqdm.write(f"tuning: candidates are measured on {device.description}", file=sys.stderr)
    with tqdm(total=sum(budgets), unit="trial", desc=f"tuning {len(pending)} tasks",
              disable=None if progress else True) as bar:
        for i in pending:
            counter = _TrialProgress(bar)
            # The per-task tables go to database_dir/logs; the console gets the progress bar. Each
            # logger set-up sets MetaSchedule's console level from its logger's, then that to DEBUG.
            logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
            with _foreign_handlers_detached():
                contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                    [tasks[i]], work_dir=str(database_dir), strategy=search_strategy(budgets[i]), seed=0)
            ms.tune_tasks(
                tasks=contexts, task_weights=weights, work_dir=str(database_dir),
                max_trials_global=budgets[i], max_trials_per_task=budgets[i],
                builder=builder, runner=runner, database=database,
                cost_model="xgb", measure_callbacks=ms.MeasureCallback.create("default") + [counter])
            outcomes[i] = (counter.trials, counter.trials - counter.failed)
    return outcomes
