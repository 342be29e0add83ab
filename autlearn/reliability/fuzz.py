"""Bad input, fuzzed with hypothesis at the device API and the device CLI, in an isolated device
process: arrays of any shape and dtype with NaN, Inf and out-of-range ids, bad labels, malformed
.npz/.npy/JSON files, and bad option values. Each case must end in a result or in one clear error
(ValueError or FileNotFoundError at the API, exit 2 with one line at the CLI), never another
exception, and must leave the model as it was (params in memory, the checkpoint on disk)."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from autlearn.reliability.workload import child_main, run_child, synthetic_user

DTYPES = ("float32", "float64", "int64", "int32", "uint8", "bool", "float16")


def _array_strategy(manifest: Any) -> Any:
    """Inputs near the valid ones: the bundle's dtype and shape most of the time, then anything."""
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    valid_shape = manifest.forward_functions[0]["input_shape"][1:]
    shapes = st.one_of(st.tuples(st.integers(0, 20), *[st.just(d) for d in valid_shape]),
                       hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=12))
    dtypes = st.sampled_from([manifest.input["dtype"]] * 3 + list(DTYPES))
    top = manifest.token_range or 1
    def elements(dtype: str) -> Any:
        if dtype.startswith("float"):
            return st.floats(width=16 if dtype == "float16" else 32, allow_nan=True, allow_infinity=True)
        if dtype == "bool":
            return st.booleans()
        if dtype == "uint8":
            return st.integers(0, 255)
        return st.integers(-3, top + 3) | st.integers(-(2 ** 31), 2 ** 31 - 1)
    return st.tuples(dtypes, shapes).flatmap(lambda ds: hnp.arrays(ds[0], ds[1], elements=elements(ds[0])))


def _file_strategy(manifest: Any) -> Any:
    """File contents: an .npz of fuzzed arrays under the right and wrong names, an .npy, JSON, junk."""
    from hypothesis import strategies as st

    arrays = _array_strategy(manifest)
    def npz(named: dict[str, np.ndarray]) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **named)
        return buffer.getvalue()
    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()
    keys = st.sampled_from(["x", "y", "test_x", "test_y", "vocab_sha256", "other"])
    return st.one_of(st.dictionaries(keys, arrays, max_size=4).map(npz), arrays.map(npy),
                     st.binary(max_size=300), st.text(max_size=200).map(str.encode),
                     st.recursive(st.none() | st.integers() | st.text(max_size=8),
                                  lambda c: st.lists(c) | st.dictionaries(st.text(max_size=8), c),
                                  max_leaves=10).map(lambda v: json.dumps(v).encode()),
                     st.binary(min_size=1, max_size=64).map(lambda b: npz({"x": np.zeros(3)})[:len(b)]))


class _Tally:
    """Cases tried and the crashes seen (a case that raised anything but a clear error)."""

    def __init__(self) -> None:
        self.cases: dict[str, int] = {}
        self.crashes: list[str] = []

    def run(self, kind: str, label: str, call: Callable[[], Any]) -> bool:
        """Runs one case; True when it raised a clear error, False when it returned."""
        self.cases[kind] = self.cases.get(kind, 0) + 1
        try:
            call()
            return False
        except (ValueError, FileNotFoundError) as err:
            if "\n" in str(err) or not str(err):
                self.crashes.append(f"{kind} {label}: an error without a one-line reason: {err!r}")
            return True
        except Exception as err:  # noqa: BLE001 - what the fuzzing is here to find
            self.crashes.append(f"{kind} {label}: {type(err).__name__}: {err}")
            return True


def _fuzz(bundle: str, work: str, cases: int, seed: int) -> dict[str, Any]:
    from hypothesis import HealthCheck, given, seed as hseed, settings, strategies as st

    from autlearn.cli import main
    from device_runtime.bundle import load_bundle
    from device_runtime.learner import Learner
    from device_runtime.model import DeviceModel
    from device_runtime.online import InferenceCache, OnlineLearner
    from device_runtime.userdata import load_user_data

    work_dir = Path(work)
    model = DeviceModel(load_bundle(bundle))
    manifest = model.manifest
    learner = Learner(model)
    online = OnlineLearner(model, learner, InferenceCache(64))
    snapshot = learner.state_arrays()
    tally, changed = _Tally(), []

    def unchanged(label: str) -> None:
        now = learner.state_arrays()
        if any(not np.array_equal(now[k], v) for k, v in snapshot.items()):
            changed.append(label)
            learner.load_state_arrays(snapshot)

    entry_points = 7  # predict, step, stream, user_file, manifest_field, cli_file, cli_flag
    share = settings(max_examples=max(1, cases // entry_points), database=None, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck), print_blob=False)
    arrays, files = _array_strategy(manifest), _file_strategy(manifest)

    @share
    @given(x=arrays)
    def predict(x: np.ndarray) -> None:
        tally.run("api", f"predict {x.dtype}{list(x.shape)}", lambda: model.predict(x))
        unchanged("predict")

    cut_shape = (learner.batch, *manifest.cut["shape"][1:])
    bad_cut = st.sampled_from(["nan", "inf", "huge", "shape", "dtype", "ok"])
    bad_label = st.sampled_from(["ok", "negative", "too big", "float", "shape"])

    @share
    @given(cut_kind=bad_cut, label_kind=bad_label, seed_=st.integers(0, 2 ** 16))
    def step(cut_kind: str, label_kind: str, seed_: int) -> None:
        rng = np.random.default_rng(seed_)
        cut = rng.standard_normal(cut_shape).astype(np.float32)
        labels = rng.integers(0, manifest.num_classes, size=learner.batch)
        if cut_kind in ("nan", "inf", "huge"):
            cut.flat[rng.integers(cut.size)] = {"nan": np.nan, "inf": np.inf, "huge": 3e38}[cut_kind]
        cut = cut[:, :1] if cut_kind == "shape" and cut.ndim > 1 else cut[:1] if cut_kind == "shape" else cut
        cut = cut.astype(np.float64) if cut_kind == "dtype" else cut
        labels = {"negative": labels - manifest.num_classes, "too big": labels + manifest.num_classes,
                  "float": labels.astype(np.float32), "shape": labels[:1], "ok": labels}[label_kind]
        result: list[Any] = []
        tally.run("api", f"step cut {cut_kind} labels {label_kind}",
                  lambda: result.append(learner.step(np.ascontiguousarray(cut), labels)))
        if cut_kind == label_kind == "ok" or (cut_kind == "huge" and result and not result[0].rolled_back):
            learner.load_state_arrays(snapshot)  # a good step changes the params, as it should
        unchanged(f"step cut {cut_kind} labels {label_kind}")

    @share
    @given(x=arrays, label=st.integers(-5, manifest.num_classes + 5) | st.integers(-(2 ** 62), 2 ** 62))
    def stream(x: np.ndarray, label: int) -> None:
        keys: list[Any] = []
        tally.run("api", f"online infer {x.dtype}{list(x.shape)}", lambda: keys.append(online.infer(x)[0]))
        tally.run("api", f"online feedback {label}", lambda: online.feedback(keys[0] if keys else "unknown", label))
        online.pending.clear()  # a batch of good feedback would train; the cases test refusals
        learner.load_state_arrays(snapshot)

    @share
    @given(content=files)
    def user_file(content: bytes) -> None:
        path = work_dir / "fuzzed.npz"
        path.write_bytes(content)
        tally.run("files", "user data", lambda: load_user_data(path, model))
        manifest_dir = work_dir / "manifest-only"
        manifest_dir.mkdir(exist_ok=True)
        (manifest_dir / "manifest.json").write_bytes(content)
        from device_runtime.manifest import read_manifest
        tally.run("files", "manifest", lambda: read_manifest(manifest_dir))

    intact = json.loads((Path(bundle) / "manifest.json").read_text())
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                               lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                               max_leaves=6)

    @share
    @given(key=st.sampled_from(sorted(intact)), value=json_values, nested=st.booleans())
    def manifest_field(key: str, value: Any, nested: bool) -> None:
        """A field of a real manifest set to any JSON value, fingerprint recomputed: the field checks must hold."""
        from device_runtime.manifest import manifest_fingerprint, read_manifest

        data = json.loads(json.dumps(intact))
        if nested and isinstance(data[key], dict) and data[key]:
            data[key][sorted(data[key])[0]] = value
        else:
            data[key] = value
        data["fingerprint"] = manifest_fingerprint(data)
        manifest_dir = work_dir / "manifest-only"
        manifest_dir.mkdir(exist_ok=True)
        (manifest_dir / "manifest.json").write_text(json.dumps(data))
        tally.run("files", f"manifest {key}={json.dumps(value)[:40]}", lambda: read_manifest(manifest_dir))

    state = work_dir / "state"
    good_user = synthetic_user(Path(bundle), work_dir / "good.npz", 2 * manifest.train_batch, seed)
    log = work_dir / "cli.log"
    cli = ["--quiet", "--log-file", str(log), "device"]
    main([*cli, "online", "--bundle", bundle, "--data", str(good_user), "--state", str(state),
          "--batch", str(manifest.train_batch)])
    checkpoint = (state / "checkpoint.npz").read_bytes()
    numbers = st.one_of(st.integers(-3, 3).map(str), st.sampled_from(["nan", "inf", "-1e9", "1e12", "x", ""]))

    def run_cli(argv: list[str]) -> None:
        tally.cases["cli"] = tally.cases.get("cli", 0) + 1
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exit_:  # argparse: a usage line and the error
                code = exit_.code
        lines = err.getvalue().strip().splitlines()
        if code not in (0, 2) or (code == 2 and not lines[-1:]) or (code == 2 and lines[-1].startswith("Trace")):
            tally.crashes.append(f"cli {' '.join(argv[len(cli):])}: exit {code}: {err.getvalue().strip()[-300:]}")
        if (state / "checkpoint.npz").read_bytes() != checkpoint:
            changed.append(f"cli {' '.join(argv[len(cli):])}")
            (state / "checkpoint.npz").write_bytes(checkpoint)

    @share
    @given(content=files, command=st.sampled_from(["infer", "offline", "online"]))
    def cli_file(content: bytes, command: str) -> None:
        path = work_dir / ("input.npy" if command == "infer" else "data.npz")
        path.write_bytes(content)
        source = ["--input" if command == "infer" else "--data", str(path)]
        run_cli([*cli, command, "--bundle", bundle, *source, "--state", str(state)]
                + (["--policy", "always"] if command == "offline" else []))

    @share
    @given(flag=st.sampled_from([("offline", "--epochs"), ("offline", "--checkpoint-every"),
                                 ("offline", "--augment-ratio"), ("offline", "--window-steps"),
                                 ("offline", "--window-seconds"), ("offline", "--max-windows"),
                                 ("online", "--batch"), ("online", "--cache-size"), ("online", "--max-age"),
                                 ("online", "--feedback-delay"), ("online", "--checkpoint-every"),
                                 ("infer", "--top")]), value=numbers)
    def cli_flag(flag: tuple[str, str], value: str) -> None:
        command, option = flag
        bad = work_dir / "unwritten-state"  # a run that a bad option lets through must not touch the real state
        shutil.rmtree(bad, ignore_errors=True)
        source = ["--input" if command == "infer" else "--data", str(good_user)]
        run_cli([*cli, command, "--bundle", bundle, *source, "--state", str(bad if command != "infer" else state),
                 option, value, *(["--policy", "always", "--max-windows", "1", "--window-steps", "1"]
                                  if command == "offline" and option not in ("--max-windows", "--window-steps",
                                                                              "--window-seconds") else [])])

    for case in (predict, step, stream, user_file, manifest_field, cli_file, cli_flag):
        hseed(seed)(case)()
    return {"fuzz_cases": sum(tally.cases.values()), "fuzz_cases_by_kind": tally.cases,
            "crashes": len(tally.crashes), "crash_examples": tally.crashes[:10],
            "model_changed_by_bad_input": changed[:10]}


def fuzz_inputs(bundle: Path, work: Path, *, cases: int, seed: int = 0) -> dict[str, Any]:
    """Runs the fuzzing in a fresh device process: about `cases` hypothesis examples in all, spread
    over the entry points (some examples make two calls; the report counts calls)."""
    Path(work).mkdir(parents=True, exist_ok=True)
    return run_child("autlearn.reliability.fuzz", {"bundle": str(bundle), "work": str(work), "cases": cases,
                                                   "seed": seed})


if __name__ == "__main__":
    child_main(_fuzz)
