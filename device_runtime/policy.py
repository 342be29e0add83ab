"""When the device may train: a policy over device state (charging, screen off).

Providers read the state: `AndroidShellProvider` through a shell (`dumpsys`, sysfs) given as a
callable, so the same code serves `adb shell` on the harness side and a local shell on the
phone; `LinuxSysfsProvider` from /sys/class/power_supply (and the backlight for the screen);
`AlwaysProvider` for a workstation that may always train.
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

ShellRunner = Callable[[str], str]


@dataclasses.dataclass(frozen=True)
class DeviceState:
    """What the policy looks at. `screen_on` is None when the device cannot tell (counts as off)."""

    charging: bool
    screen_on: bool | None


class StateProvider(Protocol):
    def read(self) -> DeviceState: ...


class AlwaysProvider:
    """A workstation: always on power, nobody at the screen."""

    def read(self) -> DeviceState:
        return DeviceState(charging=True, screen_on=False)


class LinuxSysfsProvider:
    """Charging from /sys/class/power_supply, screen from /sys/class/backlight (bl_power 0 = on).

    A machine with no battery runs on mains, so it counts as charging.
    """

    def __init__(self, power_supply: Path = Path("/sys/class/power_supply"),
                 backlight: Path = Path("/sys/class/backlight")) -> None:
        self.power_supply = Path(power_supply)
        self.backlight = Path(backlight)

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text().strip()
        except OSError:
            return ""

    def read(self) -> DeviceState:
        supplies = sorted(self.power_supply.iterdir()) if self.power_supply.is_dir() else []
        batteries = [s for s in supplies if self._read(s / "type") == "Battery"]
        external_online = any(self._read(s / "online") == "1" for s in supplies
                              if self._read(s / "type") in ("Mains", "USB", "USB_C", "USB_PD", "Wireless"))
        battery_charging = any(self._read(b / "status") in ("Charging", "Full") for b in batteries)
        charging = external_online or battery_charging or not batteries
        lights = sorted(self.backlight.iterdir()) if self.backlight.is_dir() else []
        powers = [self._read(light / "bl_power") for light in lights]
        screen_on = any(p == "0" for p in powers) if any(powers) else None
        return DeviceState(charging=charging, screen_on=screen_on)


class AndroidShellProvider:
    """Android state through shell commands: `dumpsys battery`, `dumpsys power`, sysfs as fallback."""

    def __init__(self, run: ShellRunner) -> None:
        self.run = run

    def _charging(self) -> bool:
        battery = self.run("dumpsys battery")
        powered = re.findall(r"^\s*(?:AC|USB|Wireless|Dock) powered:\s*(true|false)", battery, re.M)
        if powered:
            return "true" in powered
        status = self.run("cat /sys/class/power_supply/battery/status").strip()
        if not status:
            raise RuntimeError("cannot read the charging state: neither `dumpsys battery` nor sysfs answered")
        return status in ("Charging", "Full")

    def _screen_on(self) -> bool | None:
        power = self.run("dumpsys power")
        wake = re.search(r"mWakefulness=(\w+)", power)
        if wake:
            return wake.group(1) == "Awake"
        display = re.search(r"Display Power: state=(\w+)", power)
        return display.group(1) == "ON" if display else None

    def read(self) -> DeviceState:
        return DeviceState(charging=self._charging(), screen_on=self._screen_on())


def local_shell(command: str) -> str:
    """Runs a command in this device's own shell (on the phone itself) and returns its stdout."""
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout


@dataclasses.dataclass
class TrainingPolicy:
    """May train when charging and (unless disabled) the screen is off."""

    provider: StateProvider
    require_screen_off: bool = True

    def may_train(self) -> bool:
        state = self.provider.read()
        return state.charging and not (self.require_screen_off and state.screen_on)


POLICIES = ("always", "linux", "android")


def make_policy(name: str, run: ShellRunner = local_shell) -> TrainingPolicy:
    """The policy for a provider name (`always`, `linux`, `android`)."""
    providers: dict[str, Callable[[], StateProvider]] = {
        "always": AlwaysProvider, "linux": LinuxSysfsProvider, "android": lambda: AndroidShellProvider(run)}
    if name not in providers:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    return TrainingPolicy(providers[name]())
