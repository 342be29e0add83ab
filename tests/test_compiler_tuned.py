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
                          train_batch=TINY_TRAIN_BATCH, tune_trials=3, tuning_db=db)


@pytest.mark.slow  # about 2 minutes on 2 cores: two tuned compiles
def test_tuned_compile_reports_trials_and_a_recompile_reuses_the_database(tmp_path):
    db = tmp_path / "db"
    first = json.loads((_compile(tmp_path / "a", db) / TUNING_SUMMARY).read_text())
    assert first["update"]["trials"] > 0 and first["forward"]["trials"] > 0
    assert all(run["trials"] <= run["tasks"] * 3 for run in first.values())
    second_bundle = _compile(tmp_path / "b", db)
    second = json.loads((second_bundle / TUNING_SUMMARY).read_text())
    assert sum(run["trials"] for run in second.values()) == 0  # everything came from the database
    verify_bundle(second_bundle)  # the summary and the database copy are hashed like every file
    bundle = load_bundle(second_bundle)
    assert bundle.manifest.params["trainable"] and (second_bundle / "tuning").is_dir()
    assert np.isfinite(np.load(second_bundle / "trainable.npz")["fc.weight"]).all()
