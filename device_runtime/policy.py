"""When the device may train: a policy over device state (charging, screen off).

Providers read the state: `AndroidShellProvider` through a shell (`dumpsys`, sysfs) given as a
callable, so the same code serves `adb shell` on the harness side and a local shell on the
phone; `LinuxSysfsProvider` from /sys/class/power_supply (and the backlight for the screen);
`AlwaysProvider` for a workstation that may always train. A provider that cannot tell (files
missing, output it cannot parse, a shell that fails or times out) says so in the state instead
of raising, and the policy then forbids training: a guess could drain a battery mid-use.
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from device_runtime.bundle import is_android

ShellRunner = Callable[[str], str]
POWER_SUPPLY = Path("/sys/class/power_supply")
BACKLIGHT = Path("/sys/class/backlight")
SHELL_TIMEOUT_S = 30.0
_EXTERNAL_SUPPLIES = ("Mains", "USB", "USB_C", "USB_PD", "Wireless")
_CHARGING, _NOT_CHARGING = ("Charging", "Full"), ("Discharging", "Not charging")


@dataclasses.dataclass(frozen=True)
class DeviceState:
    """What the policy looks at. None is "could not tell"; `problem` says why, in one line."""

    charging: bool | None
    screen_on: bool | None
    problem: str = ""


class StateProvider(Protocol):
    def read(self) -> DeviceState: ...


class ShellError(subprocess.SubprocessError):
    """A shell command that exited non-zero."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


class AlwaysProvider:
    """A workstation: always on power, nobody at the screen."""

    def read(self) -> DeviceState:
        return DeviceState(charging=True, screen_on=False)


def _read(path: Path) -> str:
    """A sysfs attribute, "" when it is missing or unreadable."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def system_batteries(power_supply: Path = POWER_SUPPLY) -> list[Path]:
    """The supplies of type Battery that power the system (not a wireless mouse's: scope Device)."""
    supplies = sorted(power_supply.iterdir()) if power_supply.is_dir() else []
    return [s for s in supplies if _read(s / "type") == "Battery" and _read(s / "scope") != "Device"]


class LinuxSysfsProvider:
    """Charging from /sys/class/power_supply, screen from /sys/class/backlight (bl_power 0 = on).

    A machine with no battery runs on mains, so it counts as charging; one without a backlight
    has no screen to be on. A missing power_supply directory or an unreadable battery status
    is unknown.
    """

    def __init__(self, power_supply: Path = POWER_SUPPLY, backlight: Path = BACKLIGHT) -> None:
        self.power_supply = Path(power_supply)
        self.backlight = Path(backlight)

    def _charging(self, problems: list[str]) -> bool | None:
        if not self.power_supply.is_dir():
            problems.append(f"no {self.power_supply}")
            return None
        supplies = sorted(self.power_supply.iterdir())
        if any(_read(s / "type") in _EXTERNAL_SUPPLIES and _read(s / "online") == "1" for s in supplies):
            return True
        statuses = [_read(b / "status") for b in system_batteries(self.power_supply)]
        if not statuses or any(s in _CHARGING for s in statuses):
            return True
        if all(s in _NOT_CHARGING for s in statuses):
            return False
        problems.append(f"battery status unreadable or unknown under {self.power_supply}: {statuses}")
        return None

    def _screen_on(self, problems: list[str]) -> bool | None:
        lights = sorted(self.backlight.iterdir()) if self.backlight.is_dir() else []
        powers = [_read(light / "bl_power") for light in lights]
        if "0" in powers:
            return True
        if all(powers):
            return False
        problems.append(f"unreadable bl_power under {self.backlight}")
        return None

    def read(self) -> DeviceState:
        problems: list[str] = []
        try:
            charging, screen_on = self._charging(problems), self._screen_on(problems)
        except OSError as err:  # a directory that vanished or may not be listed
            return DeviceState(None, None, _one_line(f"cannot read sysfs: {err}"))
        return DeviceState(charging, screen_on, "; ".join(problems))


class AndroidShellProvider:
    """Android state through shell commands: `dumpsys battery`, `dumpsys power`, sysfs as fallback."""

    def __init__(self, run: ShellRunner) -> None:
        self.run = run

    def _ask(self, command: str, problems: list[str]) -> str | None:
        """The command's output; None (the failure noted in one line) when it fails or times out."""
        try:
            return self.run(command)
        except subprocess.TimeoutExpired as err:
            problems.append(f"`{command}` timed out after {err.timeout:g} s")
        except (OSError, subprocess.SubprocessError) as err:
            problems.append(_one_line(f"`{command}` failed: {err}"))
        return None

    def _charging(self, problems: list[str]) -> bool | None:
        battery = self._ask("dumpsys battery", problems) or ""
        powered = re.findall(r"^\s*(?:AC|USB|Wireless|Dock) powered:\s*(true|false)", battery, re.M)
        if powered:
            return "true" in powered
        status = (self._ask("cat /sys/class/power_supply/battery/status", problems) or "").strip()
        if status in _CHARGING + _NOT_CHARGING:
            return status in _CHARGING
        problems.append(f"neither `dumpsys battery` nor the sysfs battery status (got {status[:40]!r}) "
                        f"tells whether it charges")
        return None

    def _screen_on(self, problems: list[str]) -> bool | None:
        power = self._ask("dumpsys power", problems)
        if power is None:
            return None
        wake = re.search(r"mWakefulness=(\w+)", power)
        if wake:
            return wake.group(1) == "Awake"
        display = re.search(r"Display Power: state=(\w+)", power)
        if display:
            return display.group(1) == "ON"
        problems.append("`dumpsys power` shows neither mWakefulness nor a Display Power state")
        return None

    def read(self) -> DeviceState:
        problems: list[str] = []
        charging, screen_on = self._charging(problems), self._screen_on(problems)
        return DeviceState(charging, screen_on, "; ".join(problems))


def local_shell(command: str, timeout: float = SHELL_TIMEOUT_S) -> str:
    """Runs a command in this device's own shell (on the phone itself) and returns its stdout.

    Raises subprocess.TimeoutExpired past `timeout` and ShellError on a non-zero exit, so the
    provider can tell a failed command from one that printed nothing.
    """
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise ShellError(f"exit status {done.returncode}: {_one_line(done.stderr)[:200]}")
    return done.stdout


@dataclasses.dataclass
class TrainingPolicy:
    """May train when charging and (unless disabled) the screen is off; an unknown state forbids.

    `reason` is why the last `may_train` said no ("" when it said yes), one line for a status.
    """

    provider: StateProvider
    require_screen_off: bool = True
    reason: str = dataclasses.field(default="", init=False)

    def why_not(self, state: DeviceState) -> str:
        """The reason `state` forbids training; "" when it allows it."""
        if state.charging is None or (self.require_screen_off and state.screen_on is None):
            return f"device state unknown: {state.problem or 'the provider could not tell'}"
        if not state.charging:
            return "not charging"
        if self.require_screen_off and state.screen_on:
            return "the screen is on"
        return ""

    def may_train(self) -> bool:
        """Reads the state now: a device's state changes while it trains."""
        self.reason = self.why_not(self.provider.read())
        return not self.reason


POLICIES = ("auto", "always", "linux", "android")


def auto_policy(android: bool, power_supply: Path = POWER_SUPPLY) -> str:
    """The policy that fits this device: `android` on Android, `linux` where sysfs shows a
    system battery, else `always` (a machine on mains, which may train whenever it is idle)."""
    if android:
        return "android"
    return "linux" if system_batteries(power_supply) else "always"


def make_policy(name: str, run: ShellRunner = local_shell) -> TrainingPolicy:
    """The policy for a provider name (`auto`, `always`, `linux`, `android`)."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    if name == "auto":
        name = auto_policy(is_android())
    providers: dict[str, Callable[[], StateProvider]] = {
        "always": AlwaysProvider, "linux": LinuxSysfsProvider, "android": lambda: AndroidShellProvider(run)}
    return TrainingPolicy(providers[name]())
