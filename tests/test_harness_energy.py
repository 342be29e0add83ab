"""android_harness.energy: battery counters integrated over a run.

No phone battery exists here, so the counters come from a FakePhone (named as a fake): a
LocalTransport whose battery files answer from a script; its storage and module runs are real.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from android_harness.energy import (BATTERY_DIR, EnergyMeter, PowerSample, bench_energy, integrate_energy,
                                    read_power)
from android_harness.transports import LocalTransport

VOLTS_UV = 4_000_000


class FakePhone(LocalTransport):
    """FAKE battery counters over a real local device directory: current_ua(t, busy) in uA."""

    name = "fake-phone"

    def __init__(self, root: Path, current_ua: Callable[[float, bool], int], status: str = "Discharging") -> None:
        super().__init__(root)
        self.current_ua, self.status = current_ua, status
        self.busy = False
        self.reads = 0

    def read_files(self, remote: list[str]) -> list[str]:
        if remote == [f"{BATTERY_DIR}/current_now", f"{BATTERY_DIR}/voltage_now"]:
            self.reads += 1
            return [f"{self.current_ua(time.monotonic(), self.busy)}\n", f"{VOLTS_UV}\n"]
        if remote == [f"{BATTERY_DIR}/status"]:
            return [f"{self.status}\n"]
        return super().read_files(remote)

    def prepare(self, *args, **kwargs) -> "BusyWhileTimed":
        self.prepared = getattr(self, "prepared", 0) + 1
        return BusyWhileTimed(self, super().prepare(*args, **kwargs))


class BusyWhileTimed:
    """The FakePhone's current is high only while calls are being timed (a real timer inside)."""

    def __init__(self, phone: FakePhone, timer) -> None:
        self.phone, self.timer = phone, timer

    def time(self, **kwargs) -> list[float]:
        self.phone.busy = True
        try:
            return self.timer.time(**kwargs)
        finally:
            self.phone.busy = False


def test_trapezoid_arithmetic() -> None:
    samples = [PowerSample(0.0, 1.0, 4.0), PowerSample(1.0, -1.0, 4.0), PowerSample(3.0, 2.0, 4.0)]
    # 4 W for 1 s, then 4 W rising linearly to 8 W over 2 s: 4 + 12 = 16 J (sign of current ignored)
    assert integrate_energy(samples) == pytest.approx(16.0, rel=1e-12)
    with pytest.raises(ValueError, match="at least two"):
        integrate_energy(samples[:1])
    with pytest.raises(ValueError, match="increasing"):
        integrate_energy([samples[1], samples[0]])


def test_integration_is_clipped_to_the_timed_span() -> None:
    samples = [PowerSample(0.0, 1.0, 4.0), PowerSample(1.0, -1.0, 4.0), PowerSample(3.0, 2.0, 4.0)]
    # 4 W from 0.5 s to 1 s (2 J), then 4 W rising to 6 W at 2 s (5 J)
    assert integrate_energy(samples, 0.5, 2.0) == pytest.approx(7.0, rel=1e-12)
    assert integrate_energy(samples, 1.5, 1.5) == 0.0
    with pytest.raises(ValueError, match="not inside"):
        integrate_energy(samples, -1.0, 2.0)


def test_read_power_units_and_errors(tmp_path: Path) -> None:
    phone = FakePhone(tmp_path, lambda t, busy: -250_000)  # discharging phones report negative current
    sample = read_power(phone)
    assert (sample.current_a, sample.voltage_v, sample.power_w) == pytest.approx((-0.25, 4.0, 1.0))
    no_battery = tmp_path / "no-battery"
    with pytest.raises(RuntimeError, match=f"cannot read the battery counters in {no_battery}"):
        read_power(LocalTransport(tmp_path), str(no_battery))
    counters = tmp_path / "odd-battery"
    counters.mkdir()
    (counters / "current_now").write_text("n/a\n")
    (counters / "voltage_now").write_text("4000000\n")
    with pytest.raises(RuntimeError, match="not two integers"):
        read_power(LocalTransport(tmp_path), str(counters))


def test_meter_integrates_a_constant_and_a_ramp(tmp_path: Path) -> None:
    constant = FakePhone(tmp_path, lambda t, busy: 500_000)  # 0.5 A x 4 V = 2 W
    with EnergyMeter(constant, interval_s=0.02) as meter:
        time.sleep(0.3)
    report = meter.report()
    assert report.samples >= 5 and constant.reads == report.samples
    assert report.energy_j == pytest.approx(2.0 * report.duration_s, rel=1e-9)
    assert report.mean_power_w == pytest.approx(2.0, rel=1e-9)

    t0 = time.monotonic()
    ramp = FakePhone(tmp_path, lambda t, busy: round(1e6 * (t - t0)))  # current rises 1 A per second
    with EnergyMeter(ramp, interval_s=0.02) as meter:
        time.sleep(0.3)
    first, last = meter.samples[0].t_s - t0, meter.samples[-1].t_s - t0
    exact = 4.0 * (last ** 2 - first ** 2) / 2  # integral of 4 V x (t - t0) A
    assert meter.report().energy_j == pytest.approx(exact, rel=0.02)


def test_meter_fails_before_the_workload_without_counters(tmp_path: Path) -> None:
    ran = []
    with pytest.raises(RuntimeError, match="battery counters"):
        with EnergyMeter(LocalTransport(tmp_path), battery_dir=str(tmp_path / "none")):
            ran.append(True)
    assert not ran


def test_bench_energy_subtracts_idle_power(tmp_path: Path, tiny_nwp_bundle: Path) -> None:
    """Idle 0.25 A, 1.0 A while a module runs: the busy span costs more than idle, per call > 0."""
    phone = FakePhone(tmp_path / "phone", lambda t, busy: 1_000_000 if busy else 250_000)
    result = bench_energy(tiny_nwp_bundle, phone, "bundle", function="update", seconds=0.6,
                          idle_seconds=0.2, interval_s=0.02, number=200)
    assert result.idle.mean_power_w == pytest.approx(1.0, rel=1e-6)
    assert 1.0 < result.busy.mean_power_w <= 4.0
    assert result.calls >= 201 and result.calls % 201 == 0
    expected = (result.busy.energy_j - 1.0 * result.busy.duration_s) / result.calls
    assert result.joules_per_call == pytest.approx(expected) and result.joules_per_call > 0
    assert (tmp_path / "phone/bundle/update.so").is_file()
    assert phone.prepared == 1  # the module and its arguments were loaded once, outside the measurement
    assert result.busy.duration_s == pytest.approx(0.6, abs=0.3)
    with pytest.raises(ValueError, match="no function 'backward'"):
        bench_energy(tiny_nwp_bundle, phone, "bundle", function="backward")


def test_bench_energy_refuses_a_charging_phone(tmp_path: Path, tiny_nwp_bundle: Path) -> None:
    phone = FakePhone(tmp_path, lambda t, busy: 1_000_000, status="Charging")
    with pytest.raises(RuntimeError, match="'Charging'.*adb tcpip"):
        bench_energy(tiny_nwp_bundle, phone, "bundle")
    assert phone.reads == 0  # refused before measuring
    result = bench_energy(tiny_nwp_bundle, phone, "bundle", function="forward_b1_l6", seconds=0.1,
                          idle_seconds=0.05, interval_s=0.02, allow_charging=True)
    assert result.calls > 0


def test_cli_bench_energy_with_battery_files(tmp_path: Path, tiny_nwp_bundle: Path) -> None:
    """Counter files that never change (a FAKE battery directory): constant 1 W, so nothing above idle."""
    from autlearn.cli import main

    battery = tmp_path / "battery"
    battery.mkdir()
    (battery / "current_now").write_text("-250000\n")
    (battery / "voltage_now").write_text(f"{VOLTS_UV}\n")
    (battery / "status").write_text("Discharging\n")
    out = tmp_path / "energy.json"
    assert main(["bench", "energy", "--bundle", str(tiny_nwp_bundle), "--transport", "local", "--dest",
                 str(tmp_path / "dev"), "--battery", str(battery), "--function", "forward_b1_l6",
                 "--seconds", "0.3", "--idle-seconds", "0.1", "--interval", "0.05", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["function"] == "forward_b1_l6" and data["calls"] > 0
    assert data["idle_power_w"] == pytest.approx(1.0) and data["busy_power_w"] == pytest.approx(1.0)
    assert abs(data["joules_per_call"]) < 1e-9


def test_cli_bench_energy_over_the_rpc_transport(tmp_path: Path, tiny_nwp_bundle: Path) -> None:
    """A REAL TVM RPC server started here; the (FAKE, constant) counter files are read through its download."""
    from autlearn.cli import main

    battery = tmp_path / "battery"
    battery.mkdir()
    (battery / "current_now").write_text("500000\n")
    (battery / "voltage_now").write_text(f"{VOLTS_UV}\n")
    (battery / "status").write_text("Discharging\n")
    out = tmp_path / "energy.json"
    assert main(["bench", "energy", "--bundle", str(tiny_nwp_bundle), "--transport", "rpc", "--battery", str(battery),
                 "--function", "update", "--seconds", "0.3", "--idle-seconds", "0.1", "--interval", "0.05",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["transport"] == "rpc" and data["calls"] > 0
    assert data["busy_power_w"] == pytest.approx(2.0) and data["idle_power_w"] == pytest.approx(2.0)
