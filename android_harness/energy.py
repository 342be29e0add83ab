"""Energy from the phone's battery counters, integrated over a run.

Android exposes the battery's instantaneous current and voltage as
`/sys/class/power_supply/battery/current_now` (microamperes; negative while discharging on
many phones) and `voltage_now` (microvolts); `dumpsys battery` has the voltage but no
current, so the sysfs counters are what is read. A sampling thread reads both through the
transport (`cat` in the device's shell, or the TVM RPC server's file download) while the
workload runs; power |I| x V is integrated with the trapezoid rule over exactly the measured
span. The module and its arguments are loaded on the device once, before any measurement, so
the busy span holds only timed calls. The energy of a function is what the calls cost above the
idle power measured just before them, divided by the number of calls.

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
    """Reads current_now (uA) and voltage_now (uV) through the transport, in one round trip.

    The sample's time is the middle of the round trip (tens of ms over adb).
    """
    try:
        before = time.monotonic()
        texts = transport.read_files([f"{battery_dir}/current_now", f"{battery_dir}/voltage_now"])
        after = time.monotonic()
    except RuntimeError as err:
        raise RuntimeError(f"cannot read the battery counters in {battery_dir} on {transport.name}: {err}") from err
    out = " ".join(texts)
    fields = out.split()
    try:
        micro_amps, micro_volts = (int(v) for v in fields)
    except ValueError:
        raise RuntimeError(f"battery counters in {battery_dir} on {transport.name} are not two integers: {out!r}") from None
    return PowerSample((before + after) / 2, micro_amps * 1e-6, micro_volts * 1e-6)


def battery_status(transport: Transport, battery_dir: str = BATTERY_DIR) -> str:
    """The battery's `status`: Charging, Discharging, Not charging, Full or Unknown."""
    try:
        return transport.read_files([f"{battery_dir}/status"])[0].strip()
    except RuntimeError as err:
        raise RuntimeError(f"cannot read the battery status in {battery_dir} on {transport.name}: {err}") from err


def integrate_energy(samples: Sequence[PowerSample], start: float | None = None, end: float | None = None) -> float:
    """Joules: the trapezoid integral of |I| x V over the samples (at least two, in time order),
    only from `start` to `end` when given (power interpolated linearly at both ends)."""
    if len(samples) < 2:
        raise ValueError(f"energy needs at least two power samples, got {len(samples)}")
    if any(b.t_s <= a.t_s for a, b in zip(samples, samples[1:])):
        raise ValueError("power samples must be in strictly increasing time order")
    start = samples[0].t_s if start is None else start
    end = samples[-1].t_s if end is None else end
    if not samples[0].t_s <= start <= end <= samples[-1].t_s:
        raise ValueError(f"span [{start}, {end}] is not inside the samples' [{samples[0].t_s}, {samples[-1].t_s}]")
    times = np.array([s.t_s for s in samples])
    power = np.array([s.power_w for s in samples])
    inside = (times > start) & (times < end)
    t = np.concatenate([[start], times[inside], [end]])
    p = np.interp(t, times, power)
    return float(np.sum(np.diff(t) * (p[1:] + p[:-1]) / 2))


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

    def report(self, start: float | None = None, end: float | None = None) -> EnergyReport:
        """Energy over [start, end] (time.monotonic seconds inside the `with` block; default: all of it)."""
        samples = sorted(self.samples, key=lambda s: s.t_s)
        start = samples[0].t_s if start is None else start
        end = samples[-1].t_s if end is None else end
        return EnergyReport(end - start, integrate_energy(samples, start, end), len(samples))


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

    The module is loaded and its arguments copied to the device once, before measuring; then
    calls run in batches of `number` (plus each batch's warm-up call), and only the span from
    the first call to the last one is integrated. Refused while the battery charges, unless
    allow_charging.
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
    timer = transport.prepare(remote_path(dest, call.module), function, call.args)
    timer.time(number=1, repeat=1)  # first-call costs (page faults, thread pool start) stay outside

    with EnergyMeter(transport, interval_s=interval_s, battery_dir=battery_dir) as idle:
        idle_start = time.monotonic()
        time.sleep(idle_seconds)
        idle_end = time.monotonic()
    count = 0
    with EnergyMeter(transport, interval_s=interval_s, battery_dir=battery_dir) as busy:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            timer.time(number=number, repeat=1)
            count += number + 1  # time_evaluator's discarded warm-up call runs too
        end = time.monotonic()
    return FunctionEnergy(function, count, idle.report(idle_start, idle_end), busy.report(start, end))
