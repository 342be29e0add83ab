"""MetaSchedule tuning really runs trials here, keeps them per target, and a rerun reuses them."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from compiler.graph import prepare_graph
from compiler.tuning import KEEP_MARGIN, default_database_dir, split_budget, target_key, tune_modules

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})


def weight_gradient_module(rows: int = 16, inputs: int = 32, outputs: int = 8) -> tvm.IRModule:
    """dW = x^T @ dy (a matmul gradient) followed by an SGD step: two small tunable kernels."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((rows, inputs), "float32"))
    dy = relax.Var("dy", relax.TensorType((rows, outputs), "float32"))
    w = relax.Var("w", relax.TensorType((inputs, outputs), "float32"))
    with bb.function("update", [x, dy, w]):
        with bb.dataflow():
            grad = bb.emit(relax.op.matmul(relax.op.permute_dims(x), dy))
            out = bb.emit_output(relax.op.subtract(w, relax.op.multiply(relax.const(0.1, "float32"), grad)))
        bb.emit_func_output(out)
    return bb.get()


def run(mod: tvm.IRModule, args: list[np.ndarray]) -> np.ndarray:
    vm = relax.VirtualMachine(tvm.compile(mod, target=TARGET), tvm.cpu())
    return vm["update"](*[tvm.runtime.tensor(a) for a in args]).numpy()


TRIALS = 8  # MIN_TASK_TRIALS: the largest task gets them all


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    database = tmp_path_factory.mktemp("tuning") / "db"  # missing on purpose: tuning creates it
    mod = weight_gradient_module()
    first = tune_modules({"update": mod}, TARGET, trials=TRIALS, database_dir=database, progress=False)
    second = tune_modules({"update": mod}, TARGET, trials=TRIALS, database_dir=database, progress=False)
    return mod, database, first, second


def test_tuning_runs_the_trials_it_was_given_and_writes_the_database(two_runs):
    _, database, first, _ = two_runs
    assert len(first.tasks) >= 1 and first.tuned_tasks >= 1
    assert 1 <= first.trials <= TRIALS  # the budget is the number measured in all
    assert sum(t.budget for t in first.tasks) <= TRIALS
    assert first.failed_trials < first.trials
    records = (database / "database_tuning_record.json").read_text().splitlines()
    assert len(records) >= first.trials - first.failed_trials


def test_a_tuned_schedule_ships_only_where_it_beats_the_default(two_runs, tmp_path):
    from compiler.tuning import write_records

    _, _, first, _ = two_runs
    for task in first.tasks:
        assert task.default_us > 0
        # the times are rounded to 0.01 us; the decision was taken on the unrounded ones
        if task.kept:
            assert task.tuned_us <= KEEP_MARGIN * task.default_us + 0.01
        else:
            assert task.tuned_us is None or task.tuned_us >= KEEP_MARGIN * task.default_us - 0.01
    race = first.races.get("update")
    shipped_tuned = race is None or race.tuned_wins
    assert len(first.records) == (sum(t.kept for t in first.tasks) if shipped_tuned else 0)
    write_records(first.records, tmp_path / "shipped")
    lines = (tmp_path / "shipped" / "database_tuning_record.json").read_text().splitlines()
    assert len(lines) == len(first.records)  # the winners only, not the whole database


def test_second_tune_reuses_the_database_and_matches_numerically(two_runs):
    mod, _, first, second = two_runs
    assert second.trials == 0 and second.tuned_tasks == 0
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s, dtype=np.float32) for s in ((16, 32), (16, 8), (32, 8))]
    expected = args[2] - 0.1 * (args[0].T @ args[1])
    for tuned in (first.mods["update"], second.mods["update"]):
        np.testing.assert_allclose(run(tuned, args), expected, rtol=1e-5, atol=1e-5)


def test_the_budget_follows_the_measured_time():
    budgets = split_budget(100, [6.0, 3.0, 1.0, 0.01])
    assert budgets[0] > budgets[1] > budgets[2] and budgets[3] == 0  # a tiny share is not worth a search
    assert sum(budgets) == 100
    assert split_budget(10, [1.0, 2.0]) == [0, 10]  # too few to search both: the larger gets them
    assert sum(split_budget(7, [1.0])) == 0  # under MIN_TASK_TRIALS: nothing to search
    assert split_budget(50, [0.0, 0.0]) == [0, 0]


def test_only_the_functions_a_device_calls_get_a_budget(tmp_path):
    mod = weight_gradient_module()
    result = tune_modules({"update": mod}, TARGET, trials=TRIALS, database_dir=tmp_path, progress=False,
                          called={"update": []})
    assert result.tasks == [] and result.trials == 0
    np.testing.assert_allclose(run(result.mods["update"], [np.ones((16, 32), "float32"), np.ones((16, 8), "float32"),
                                                           np.zeros((32, 8), "float32")]), -1.6, rtol=1e-6)


def test_database_location_follows_target_and_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTLEARN_CACHE", str(tmp_path))
    assert default_database_dir(TARGET) == tmp_path / "tuning" / target_key(TARGET)
    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-android", "mattr": ["+neon"]})
    assert target_key(arm) != target_key(TARGET) and "/" not in target_key(arm)


def test_bad_trial_count_is_refused(tmp_path):
    with pytest.raises(ValueError, match="trials must be >= 0"):
        tune_modules({"update": weight_gradient_module()}, TARGET, trials=-1, database_dir=tmp_path)


def test_a_handler_attached_by_someone_else_does_not_break_tuning(tmp_path):
    """MetaSchedule's logger set-up raises on an unnamed handler on its logger (seen when other
    code in the process had attached one); tuning detaches such handlers and restores them."""
    import logging

    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir

    from compiler.tuning import _foreign_handlers_detached

    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    stranger = logging.NullHandler()  # unnamed
    logger.addHandler(stranger)
    try:
        with pytest.raises(AttributeError):
            get_loggers_from_work_dir(str(tmp_path), ["task"])
        with _foreign_handlers_detached():
            get_loggers_from_work_dir(str(tmp_path), ["task"])
            assert stranger not in logger.handlers
        assert stranger in logger.handlers
    finally:
        logger.removeHandler(stranger)


def test_a_tuning_run_that_fails_leaves_the_database_as_it_was(tmp_path):
    """Records reach the database only when a run ends; a run killed or failed midway adds none."""
    from tvm import te

    from compiler.tuning import DATABASE_FILES, staged_database

    def workload(n: int) -> tvm.IRModule:
        a = te.placeholder((n,), name="a")
        return tvm.IRModule({"main": te.create_prim_func([a, te.compute((n,), lambda i: a[i] * 2, name="b")])})

    with staged_database(tmp_path) as database:
        database.commit_workload(workload(8))
    before = {name: (tmp_path / name).read_bytes() for name in DATABASE_FILES}
    assert before["database_workload.json"].count(b"\n") == 1
    with pytest.raises(RuntimeError, match="killed"):
        with staged_database(tmp_path) as database:
            database.commit_workload(workload(16))
            raise RuntimeError("killed")
    assert {name: (tmp_path / name).read_bytes() for name in DATABASE_FILES} == before
    assert not list(tmp_path.glob(".staging-*"))
    with staged_database(tmp_path) as database:
        assert len(database) == 0 and database.has_workload(workload(8))
        database.commit_workload(workload(16))
    assert (tmp_path / "database_workload.json").read_bytes().count(b"\n") == 2


def test_a_tuned_module_ships_only_where_it_beats_the_default_build_end_to_end(two_runs):
    """A "tuned" module whose kernels are naive loops loses to the default build and is dropped;
    tuning's own result ships whichever build its race measured faster."""
    from compiler.module_race import race_modules

    mod, _, first, _ = two_runs
    race = first.races.get("update")
    assert (race is not None) == any(t.kept for t in first.tasks)  # raced exactly where a record applies
    if race is not None:
        assert (first.mods["update"] is mod) == (not race.tuned_wins)
    bb = relax.BlockBuilder()
    x, w = relax.Var("x", relax.TensorType((16, 128), "float32")), relax.Var("w", relax.TensorType((1002, 128), "float32"))
    with bb.function("update", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(x, relax.op.permute_dims(w)))  # a linear layer: x @ W.T
        bb.emit_func_output(out)
    default = prepare_graph(bb.get())  # as tune_modules gets its modules
    naive = relax.transform.LegalizeOps()(default)
    for gvar, func in list(naive.functions.items()):
        if isinstance(func, tvm.tirx.PrimFunc):
            naive[gvar] = func.with_attr("tirx.is_scheduled", True)  # nothing will schedule it
    (lost,) = race_modules({"update": default}, {"update": naive}, TARGET, {"update": ["update"]}, rounds=3).values()
    assert lost.default_ms * 2 < lost.tuned_ms and not lost.tuned_wins  # scheduled: 10-25x the naive loops
    assert lost.to_json()["ships"] == "default"
    assert race_modules({"update": default}, {"update": default}, TARGET, None) == {}  # nothing tuned: no race
