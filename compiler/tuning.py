"""MetaSchedule tuning of a Relax module, with a database per target that later builds reuse.

Tunes every fused TIR function of the module it is given, so the update module's gradient
kernels (conv2d data/weight gradients, matmul gradients) are tuned along with the forward ones.
A task already tuned with at least its share of the budget (kept in the database directory)
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import numpy as np
import tvm
import tvm_ffi
from tqdm import tqdm
from tvm import relax
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

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
class TuningResult:
    """A module ready for `tvm.compile` with the database's best schedules applied."""

    mod: tvm.IRModule
    trials: int          # candidates measured in this call (0: everything came from the database)
    failed_trials: int   # of those, the ones that failed to build or run
    tasks: int           # tunable TIR functions in the module
    tuned_tasks: int     # tasks that got new trials in this call
    seconds: float
    database_dir: Path


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


BUDGETS_FILE = "autlearn_budgets.json"  # per workload: the largest per-task budget already spent


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


def _record_budgets(database_dir: Path, task_mods: list[tvm.IRModule], per_task: int) -> None:
    budgets = _spent_budgets(database_dir)
    for mod in task_mods:
        key = _workload_key(mod)
        budgets[key] = max(per_task, budgets.get(key, 0))
    atomic_write_bytes(database_dir / BUDGETS_FILE, json.dumps(budgets, indent=0, sort_keys=True).encode())


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


def tune_module(mod: tvm.IRModule, target: tvm.target.Target, *, trials: int, database_dir: Path | None,
                progress: bool = True, device: RPCDevice | None = None) -> TuningResult:
    """Tunes `mod` for `target` with about `trials` candidates measured in all, then applies the database.

    The budget is spread evenly over the tasks (MetaSchedule otherwise spends it on the first
    ones). Records go to `database_dir` (a JSON database, created if missing; None: the
    target's default, see `default_database_dir`); a task already tuned there with at least
    its share of the budget is skipped, so a rebuild with the same database tunes nothing new.
    Candidates build and run in worker processes, each under a timeout; with `device`, they are
    linked with its cross compiler and measured on its RPC server.
    """
    if trials < 0:
        raise ValueError(f"trials must be >= 0, got {trials}")
    if not isinstance(target, tvm.target.Target):
        raise ValueError(f"target must be a tvm.target.Target, got {type(target).__name__}")
    triple = target.attrs.get("mtriple") or ""
    if trials and device is None and triple and not triple.startswith(os.uname().machine):
        raise ValueError(f"cannot measure {triple} candidates on this {os.uname().machine} machine: tune through "
                         "a device's TVM RPC server (linux-arm64: `autlearn emulator setup` provides one)")
    start = time.perf_counter()
    target = with_num_cores(target)
    # Runner processes inherit this; without it TVM measures candidates on 1 thread here.
    os.environ.setdefault("TVM_NUM_THREADS", str(target.attrs.get("num-cores") or 1))
    database_dir = Path(database_dir) if database_dir is not None else default_database_dir(target)
    database_dir.mkdir(parents=True, exist_ok=True)
    import_tensor_intrinsics()

    prepared = prepare_for_tuning(mod, target)
    tasks = ms.relax_integration.extract_tasks(prepared, target)
    per_task = max(1, math.ceil(trials / len(tasks))) if tasks else 0
    # A task is done once a budget this large was spent on it: small search spaces give fewer
    # distinct candidates than the budget, so counting records would retune them forever.
    spent = _spent_budgets(database_dir)
    pending = [t for t in tasks if trials > 0 and spent.get(_workload_key(t.dispatched[0]), 0) < per_task]

    measured = failed = 0
    with staged_database(database_dir) as database:
        if pending:
            measured, failed = _tune_tasks(pending, per_task, database, database_dir, progress, device)
            _record_budgets(database_dir, [t.dispatched[0] for t in pending], per_task)
        with target, database:
            tuned = relax.transform.MetaScheduleApplyDatabase()(prepared)
    return TuningResult(mod=tuned, trials=measured, failed_trials=failed, tasks=len(tasks),
                        tuned_tasks=len(pending), seconds=time.perf_counter() - start,
                        database_dir=database_dir)


def _tune_tasks(pending: list, per_task: int, database: ms.database.Database, database_dir: Path,
                progress: bool, device: RPCDevice | None) -> tuple[int, int]:
    """Runs MetaSchedule on `pending` tasks, `per_task` trials each, measured here or on `device`;
    (trials measured, failed)."""
    # The per-task tables go to database_dir/logs; the console gets the progress bar.
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    with _foreign_handlers_detached():
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            pending, work_dir=str(database_dir), strategy=search_strategy(per_task), seed=0)
    budget = per_task * len(pending)
    builder = PersistentPoolBuilder(max_workers=min(2, os.cpu_count() or 1),
                                    cross_compiler=device.cross_compiler if device is not None else None)
    runner = rpc_runner(device) if device is not None else ms.runner.LocalRunner(timeout_sec=30)
    if device is not None:
        tqdm.write(f"tuning: candidates are measured on {device.description}", file=sys.stderr)
    with tqdm(total=budget, unit="trial", desc=f"tuning {len(pending)} tasks",
              disable=None if progress else True) as bar:
        counter = _TrialProgress(bar)
        try:
            ms.tune_tasks(
                tasks=contexts, task_weights=weights, work_dir=str(database_dir),
                max_trials_global=budget, max_trials_per_task=per_task,
                builder=builder, runner=runner, database=database,
                cost_model="xgb", measure_callbacks=ms.MeasureCallback.create("default") + [counter])
        finally:
            builder.close()
        return counter.trials, counter.failed
