"""A tuned compile: trials really run, are reported in the bundle, and a recompile reuses them."""
import json

import numpy as np
import pytest

from compiler import compile_bundle
from compiler.api import TUNING_SUMMARY
from conftest import TINY_TRAIN_BATCH, tiny_nwp_inputs, tiny_nwp_model
from device_runtime.bundle import load_bundle, verify_bundle


def _compile(out, db):
    return compile_bundle(tiny_nwp_model(), out=out, **tiny_nwp_inputs((4,)), cut="fc",
                          train_batch=TINY_TRAIN_BATCH, tune_trials=TRIALS, tuning_db=db)


TRIALS = 8  # MIN_TASK_TRIALS: the largest task gets them all


@pytest.mark.slow  # about 2 minutes on 2 cores: two tuned compiles
def test_tuned_compile_reports_trials_and_a_recompile_reuses_the_database(tmp_path):
    db = tmp_path / "db"
    first_bundle = _compile(tmp_path / "a", db)
    first = json.loads((first_bundle / TUNING_SUMMARY).read_text())
    assert 0 < first["trials"] <= TRIALS == first["trials_requested"]  # the budget is kept
    assert first["tuned_tasks"] >= 1 and sum(t["budget"] for t in first["per_task"]) <= TRIALS
    # a module whose tuned build loses its end-to-end race ships the default build and no records
    if all(race["ships"] == "tuned" for race in first["end_to_end"].values()):
        assert first["records_shipped"] == sum(t["kept"] for t in first["per_task"])
    shipped = first_bundle / "tuning" / "database_tuning_record.json"
    assert len(shipped.read_text().splitlines()) == first["records_shipped"]  # not the whole database
    second_bundle = _compile(tmp_path / "b", db)
    second = json.loads((second_bundle / TUNING_SUMMARY).read_text())
    assert second["trials"] == 0 and second["tuned_tasks"] == 0  # everything came from the database
    verify_bundle(second_bundle)  # the summary and the database copy are hashed like every file
    bundle = load_bundle(second_bundle)
    assert bundle.manifest.params["trainable"] and (second_bundle / TUNING_SUMMARY).is_file()
    assert np.isfinite(np.load(second_bundle / "trainable.npz")["fc.weight"]).all()
