"""The reliability suite (`autlearn bench reliability`), each section at a CI size on the tiny
bundles: the same functions the full run calls, with goals asserted."""
import json

import pytest

from autlearn.cli import main
from autlearn.reliability import goals_met
from autlearn.reliability.corruption import corruptions
from autlearn.reliability.disk import disk_full
from autlearn.reliability.fuzz import fuzz_inputs
from autlearn.reliability.kills import kill_trials
from autlearn.reliability.load import stream_load
from autlearn.reliability.privacy import check_privacy, forbidden_imports, imports_of


def test_kills_at_random_moments_are_all_survived(tiny_nwp_bundle, tmp_path):
    result = kill_trials(tiny_nwp_bundle, tmp_path, trials=4, seed=3)
    assert result["kills_survived"] == result["kill_trials"] == 4, result["kill_failures"]
    # the kills fell while training ran, not after it; a run a little faster than its reference
    # finishes before a kill drawn near the end of the reference's span (seen once in CI: 2 of 4)
    assert result["kills_landed"] >= 2
    assert all(span > 0 for span in result["training_span_s"].values())


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tiny_nwp_bundle, tmp_path):
    result = disk_full(tiny_nwp_bundle, tmp_path)
    assert result["disk_full_exit"] == 2 and result["disk_full_checkpoint_kept"], result
    assert result["disk_full_message"].startswith("autlearn: error: no space left on the device to write ")
    assert result["disk_full_message"].endswith("its previous content is kept; free some space and run again")
    assert result["disk_full_clear_error"] and result["disk_full_rerun_matches"]


@pytest.mark.parametrize("which", ["tiny_nwp_bundle", "tiny_image_bundle"])
def test_every_damaged_or_wrong_bundle_is_refused(which, request, tmp_path):
    result = corruptions(request.getfixturevalue(which), tmp_path, flips_per_file=2)
    assert result["corruptions_refused"] == result["corruptions_tried"] > 40, result["corruptions_missed"]


def test_corruption_needs_a_real_check(tiny_nwp_bundle, tmp_path, monkeypatch):
    """The count can fail: with the sha256 check gone, flipped bytes in .so files are accepted."""
    import autlearn.reliability.corruption as corruption

    from device_runtime.manifest import read_manifest

    monkeypatch.setattr(corruption, "verify_bundle", read_manifest)
    result = corruptions(tiny_nwp_bundle, tmp_path, flips_per_file=1)
    assert any("update.so: byte" in m and "accepted" in m for m in result["corruptions_missed"])


@pytest.mark.parametrize("which", ["tiny_nwp_bundle", "tiny_image_bundle"])
def test_fuzzed_input_never_crashes_nor_changes_the_model(which, request, tmp_path):
    result = fuzz_inputs(request.getfixturevalue(which), tmp_path, cases=140, seed=1)
    assert result["crashes"] == 0, result["crash_examples"]
    assert not result["model_changed_by_bad_input"]
    assert result["fuzz_cases"] >= 140 and set(result["fuzz_cases_by_kind"]) == {"api", "files", "cli"}


def test_learning_needs_no_network_and_the_device_code_imports_none(tiny_nwp_bundle, tmp_path):
    result = check_privacy(tiny_nwp_bundle, tmp_path)
    assert result["exit_codes"] == {"offline": 0, "online": 0, "infer": 0}
    assert result["hook_blocks_sockets"] and result["socket_operations"] == []
    assert result["cloud_modules_loaded"] == [] and result["forbidden_imports"] == []
    assert result["private"]


def test_the_import_scan_sees_a_network_import(tmp_path):
    (tmp_path / "leaky.py").write_text("import json\nfrom urllib.request import urlopen\nfrom . import sibling\n")
    assert imports_of(tmp_path) == {(tmp_path / "leaky.py").as_posix(): {"json", "urllib"}}
    assert forbidden_imports() == []


def test_a_long_stream_loses_no_sample_that_fits_and_stays_bounded(tiny_nwp_bundle):
    result = stream_load(tiny_nwp_bundle, events=6000, cache_size=64, mean_delay=48, missing=0.2, seed=2)
    assert result["samples_lost"] == 0 and result["memory_over_bound"] == 0
    assert result["labels_fitting"] > 3000 and result["labels_beyond_bound"] > 0  # both regimes met
    assert result["updates"] == (result["labels_fitting"]) // 4
    assert result["rss_max_during_mb"] - result["rss_start_mb"] < 50
    assert result["rss_end_mb"] - result["rss_after_first_tenth_mb"] < 5


def test_bench_reliability_writes_the_report_with_its_keys(tiny_nwp_bundle, tmp_path, capsys):
    out = tmp_path / "reliability.json"
    code = main(["--quiet", "bench", "reliability", "--bundle", str(tiny_nwp_bundle), "--json", str(out),
                 "--work", str(tmp_path / "work"), "--kill-trials", "2", "--fuzz-cases", "35", "--events", "2000"])
    report = json.loads(out.read_text())
    for key in ("kill_trials", "kills_survived", "corruptions_tried", "corruptions_refused", "fuzz_cases",
                "crashes", "events", "samples_lost", "peak_rss_mb"):
        assert key in report, key
    assert code == 0 and all(report["goals"].values()) and report["goals"] == goals_met(report)
    assert report["events"] == 2000 and report["peak_rss_mb"] > 50
    assert "kills survived 2/2" in capsys.readouterr().out
    assert main(["bench", "reliability", "--bundle", str(tmp_path / "none")]) == 2
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("keep me")
    assert main(["bench", "reliability", "--bundle", str(tiny_nwp_bundle), "--work", str(tmp_path / "precious")]) == 2
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "keep me"
