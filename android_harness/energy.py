"""Energy from the phone's battery counters, integrated over a run.

Android exposes the battery's instantaneous current and voltage as
`/sys/class/power_supply/battery/current_now` (microamperes; negative while discharging on
many phones) and `voltage_now` (microvolts); `dumpsys battery` has the voltage but no
current, so the sysfs counters are what is read. A sampling thread reads both through the
transport's shell while the workload runs; power |I| x V is integrated with the trapezoid
rule. The energy of a function is what the run costs above the idle power measured just
before it, divided by the number of calls.

A phone charging over USB measures the charger, not the workload, so a run is refused while
the battery's `status` says Charging or Full: unplug it and use adb over Wi-Fi
(`adb tcpip 5555`, `adb connect PHONE_IP:5555`).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from android_harness.latency import function_calls
from android_harness.push import push_bundle, read_intact_manifest, remote_path
from android_harness.transports import Transport

BATTERY_DIR = "/sys/class/power_supply/battery"


@dataclasses.dataclass(frozen=True)
class PowerSample:
    """One reading of the battery counters at time t_s (seconds, any fixed origin)."""

    t_s: float
    current_a: float
    voltage_v: float

    @property
    def power_w(self) -> float:
        return abs(self.current_a) * self.voltage_v


def read_power(transport: Transport, battery_dir: str = BATTERY_DIR) -> PowerSample:
    """Reads current_now (uA) and voltage_now (uV) through the transport's shell.

    The sample's time is the middle of the shell round trip (tens of ms over adb).
    """
    command = f"cat {battery_dir}/current_now {battery_dir}/voltage_now"
    try:
        before = time.monotonic()
        out = transport.shell(command)
        after = time.monotonic()
    except RuntimeError as err:
        raise RuntimeError(f"cannot read the battery counters in {battery_dir} on {transport.name}: {err}") from err
    fields = out.split()
    try:
        micro_amps, micro_volts = (int(v) for v in fields)
    except ValueError:
        raise RuntimeError(f"battery counters in {battery_dir} on {transport.name} are not two integers: {out!r}") from None
    return PowerSample((before + after) / 2, micro_amps * 1e-6, micro_volts * 1e-6)


def battery_status(transport: Transport, battery_dir: str = BATTERY_DIR) -> str:
    """The battery's `status`: Charging, Discharging, Not charging, Full or Unknown."""
    try:
        return transport.shell(f"cat {battery_dir}/status").strip()
    except RuntimeError as err:
        raise RuntimeError(f"cannot read the battery status in {battery_dir} on {transport.name}: {err}") from err


def integrate_energy(samples: Sequence[PowerSample]) -> float:
    """Joules: the trapezoid integral of |I| x V over the samples (at least two, in time order)."""
    if len(samples) < 2:
        raise ValueError(f"energy needs at least two power samples, got {len(samples)}")
    if any(b.t_s <= a.t_s for a, b in zip(samples, samples[1:])):
        raise ValueError("power samples must be in strictly increasing time order")
    return sum((b.t_s - a.t_s) * (a.power_w + b.power_w) / 2 for a, b in zip(samples, samples[1:]))


@dataclasses.dataclass
class EnergyReport:
    """Energy over one measured span."""

    duration_s: float
    energy_j: float
    samples: int

    @property
    def mean_power_w(self) -> float:
        return self.energy_j / self.duration_s


class EnergyMeter:
    """Samples the battery counters every interval_s in a thread while the `with` block runs."""

    def __init__(self, transport: Transport, *, interval_s: float = 0.2, battery_dir: str = BATTERY_DIR) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.transport, self.interval_s, self.battery_dir = transport, interval_s, battery_dir
        self.samples: list[PowerSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _read(self) -> None:
        self.samples.append(read_power(self.transport, self.battery_dir))

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                self._read()
        except BaseException as err:  # reported by __exit__ in the caller's thread
            self._error = err

    def __enter__(self) -> "EnergyMeter":
        self._read()  # unreadable counters fail here, before the workload starts
        self._thread = threading.Thread(target=self._loop, name="energy-meter", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        if exc_type is not None:  # the workload failed: its error is the one to see
            return
        if self._error is not None:
            raise RuntimeError(f"battery sampling failed: {self._error}") from self._error
        self._read()

    def report(self) -> EnergyReport:
        samples = sorted(self.samples, key=lambda s: s.t_s)
        return EnergyReport(samples[-1].t_s - samples[0].t_s, integrate_energy(samples), len(samples))


@dataclasses.dataclass
class FunctionEnergy:
    """Energy of one VM function on the device, above idle."""

    function: str
    calls: int
    idle: EnergyReport
    busy: EnergyReport

    @property
    def joules_per_call(self) -> float:
        return (self.busy.energy_j - self.idle.mean_power_w * self.busy.duration_s) / self.calls

    def to_json(self) -> dict[str, Any]:
        return {"function": self.function, "calls": self.calls, "joules_per_call": self.joules_per_call,
                "idle_power_w": self.idle.mean_power_w, "busy_power_w": self.busy.mean_power_w,
                "busy_seconds": self.busy.duration_s, "samples": self.idle.samples + self.busy.samples}


def bench_energy(bundle: Path, transport: Transport, dest: str, *, function: str = "update",
                 seconds: float = 10.0, idle_seconds: float = 5.0, interval_s: float = 0.2,
                 battery_dir: str = BATTERY_DIR, seed: int = 0, number: int = 20,
                 allow_charging: bool = False) -> FunctionEnergy:
    """Energy per call of `update` or a forward function: idle power first, then calls for `seconds`.

    Calls run in batches of `number` (one run_module each, plus its warm-up call). Refused
    while the battery charges, unless allow_charging.
    """
    status = battery_status(transport, battery_dir)
    if status in ("Charging", "Full") and not allow_charging:
        raise RuntimeError(f"battery status is {status!r} on {transport.name}: a charger feeds the battery, so its "
                           "counters would not measure the workload; unplug and use adb over Wi-Fi "
                           "(adb tcpip 5555; adb connect PHONE_IP:5555), or allow charging explicitly")
    manifest = read_intact_manifest(bundle)
    calls = {c.function: c for c in function_calls(bundle, manifest, np.random.default_rng(seed))}
    if function not in calls:
        raise ValueError(f"bundle has no function {function!r}; choose one of: {', '.join(calls)}")
    call = calls[function]
    push_bundle(bundle, transport, dest, names=[call.module])

    with EnergyMeter(transport, interval_s=interval_s, battery_dir=battery_dir) as idle:
        time.sleep(idle_seconds)
    count = 0
    start = time.monotonic()
    with EnergyMeter(transport, interval_s=interval_s, battery_dir=battery_dir) as busy:
        while time.monotonic() - start < seconds:
            transport.run_module(remote_path(dest, call.module), function, call.args, number=number, repeat=1)
            count += number + 1  # time_evaluator's discarded warm-up call runs too
    return FunctionEnergy(function, count, idle.report(), busy.report())
