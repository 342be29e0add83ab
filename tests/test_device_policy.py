"""Training policy providers: Linux sysfs from real files, Android from dumpsys text, 'always'.

No phone is attached here, so the Android shell is a stand-in callable (a fake, named so) that
answers with text in the format `dumpsys battery` / `dumpsys power` print on Android 13. A state
a provider cannot read must forbid training, with a one-line reason, never a traceback.
"""
import subprocess

import pytest

import device_runtime.policy
from autlearn.cli import main
from device_runtime.policy import (POLICIES, AlwaysProvider, AndroidShellProvider, DeviceState, LinuxSysfsProvider,
                                   ShellError, TrainingPolicy, auto_policy, local_shell, make_policy)

DUMPSYS_BATTERY = """Current Battery Service state:
  AC powered: {ac}
  USB powered: {usb}
  Wireless powered: false
  Dock powered: false
  Max charging current: 500000
  status: {status}
  level: 81
"""
DUMPSYS_POWER = """POWER MANAGER (dumpsys power)

Power Manager State:
  mDirty=0x0
  mWakefulness={wake}
  mWakefulnessChanging=false
"""


def fake_android_shell(ac="false", usb="false", status=3, wake="Awake", battery_answers=True,
                       sysfs_status="Charging"):
    """Stand-in for `adb shell` on a phone: returns what the phone would print."""
    calls = []

    def run(command: str) -> str:
        calls.append(command)
        if command == "dumpsys battery":
            return DUMPSYS_BATTERY.format(ac=ac, usb=usb, status=status) if battery_answers else ""
        if command == "dumpsys power":
            return DUMPSYS_POWER.format(wake=wake)
        if command == "cat /sys/class/power_supply/battery/status":
            return f"{sysfs_status}\n"
        return ""

    run.calls = calls
    return run


def fake_failing_shell(error: Exception, failing: str = "dumpsys"):
    """Stand-in shell whose commands starting with `failing` raise `error`; the rest answer as a charging,
    asleep phone."""
    answers = fake_android_shell(ac="true", wake="Asleep")

    def run(command: str) -> str:
        if command.startswith(failing):
            raise error
        return answers(command)

    return run


def write_supply(root, name, **files):
    d = root / name
    d.mkdir(parents=True)
    for key, value in files.items():
        (d / key).write_text(f"{value}\n")


@pytest.mark.parametrize("ac, usb, wake, may", [
    ("true", "false", "Asleep", True),
    ("false", "true", "Dozing", True),
    ("true", "false", "Awake", False),    # screen on: the user is using the phone
    ("false", "false", "Asleep", False),  # on battery
])
def test_android_policy(ac, usb, wake, may):
    policy = TrainingPolicy(AndroidShellProvider(fake_android_shell(ac=ac, usb=usb, wake=wake)))
    assert policy.may_train() is may
    assert policy.reason == ("" if may else "the screen is on" if wake == "Awake" else "not charging")


def test_android_falls_back_to_sysfs():
    shell = fake_android_shell(battery_answers=False, wake="Asleep")
    assert AndroidShellProvider(shell).read().charging is True
    assert "cat /sys/class/power_supply/battery/status" in shell.calls
    discharging = fake_android_shell(battery_answers=False, sysfs_status="Discharging")
    assert AndroidShellProvider(discharging).read().charging is False


def test_unparsable_android_output_is_unknown_and_forbids():
    garbage = AndroidShellProvider(lambda command: "Permission Denial: can't dump from pid 4242\n")
    state = garbage.read()
    assert state.charging is None and state.screen_on is None
    policy = TrainingPolicy(garbage, require_screen_off=False)
    assert not policy.may_train()
    assert policy.reason.startswith("device state unknown: neither `dumpsys battery` nor the sysfs battery status")
    no_screen = fake_android_shell(ac="true", wake="Asleep")
    policy = TrainingPolicy(AndroidShellProvider(lambda c: "" if c == "dumpsys power" else no_screen(c)))
    assert not policy.may_train() and "shows neither mWakefulness nor a Display Power state" in policy.reason


def test_a_shell_timeout_is_a_one_line_reason():
    timeout = subprocess.TimeoutExpired(["sh", "-c", "dumpsys power"], 30)
    policy = TrainingPolicy(AndroidShellProvider(fake_failing_shell(timeout, failing="dumpsys power")))
    assert policy.may_train() is False
    assert policy.reason == "device state unknown: `dumpsys power` timed out after 30 s"
    both = TrainingPolicy(AndroidShellProvider(fake_failing_shell(timeout, failing="")))  # every command
    assert not both.may_train() and "\n" not in both.reason
    assert "`dumpsys battery` timed out" in both.reason and "`cat /sys/class/power_supply" in both.reason


def test_a_failing_shell_falls_back_or_forbids():
    missing = ShellError("exit status 127: sh: 1: dumpsys: not found")
    shell = fake_failing_shell(missing, failing="dumpsys battery")
    assert AndroidShellProvider(shell).read() == DeviceState(True, False, "`dumpsys battery` failed: exit status "
                                                                        "127: sh: 1: dumpsys: not found")
    policy = TrainingPolicy(AndroidShellProvider(fake_failing_shell(OSError("adb: device offline"))))
    assert not policy.may_train() and "`dumpsys power` failed: adb: device offline" in policy.reason


def test_local_shell_reports_exit_status_and_timeout():
    assert local_shell("echo on") == "on\n"
    with pytest.raises(ShellError, match="exit status 3: oops"):
        local_shell("echo oops >&2; exit 3")
    with pytest.raises(subprocess.TimeoutExpired):
        local_shell("sleep 5", timeout=0.2)
    policy = TrainingPolicy(AndroidShellProvider(lambda command: local_shell("sleep 5", timeout=0.2)))
    assert not policy.may_train() and "`dumpsys battery` timed out after 0.2 s" in policy.reason


def test_linux_sysfs_from_real_files(tmp_path):
    supply, backlight = tmp_path / "power_supply", tmp_path / "backlight"
    write_supply(supply, "BAT0", type="Battery", status="Discharging")
    write_supply(supply, "AC", type="Mains", online=0)
    write_supply(backlight, "intel_backlight", bl_power=4)  # 4: powered down
    provider = LinuxSysfsProvider(supply, backlight)
    assert provider.read().charging is False
    (supply / "AC" / "online").write_text("1\n")
    state = provider.read()
    assert state.charging is True and state.screen_on is False
    assert TrainingPolicy(provider).may_train()
    (backlight / "intel_backlight" / "bl_power").write_text("0\n")
    assert not TrainingPolicy(provider).may_train()
    assert TrainingPolicy(provider, require_screen_off=False).may_train()


def test_linux_battery_status_and_no_battery(tmp_path):
    supply = tmp_path / "ps"
    write_supply(supply, "BAT1", type="Battery", status="Full")
    write_supply(supply, "hidpp_battery_0", type="Battery", scope="Device", status="Discharging")  # a mouse
    assert LinuxSysfsProvider(supply, tmp_path / "none").read().charging is True
    empty = tmp_path / "empty"
    empty.mkdir()
    state = LinuxSysfsProvider(empty, tmp_path / "none").read()
    assert state == DeviceState(charging=True, screen_on=False)  # a server on mains, without a screen


def test_unreadable_sysfs_is_unknown_and_forbids(tmp_path):
    missing = TrainingPolicy(LinuxSysfsProvider(tmp_path / "no_power_supply", tmp_path / "none"))
    assert not missing.may_train() and missing.reason == f"device state unknown: no {tmp_path / 'no_power_supply'}"
    supply, backlight = tmp_path / "ps", tmp_path / "bl"
    write_supply(supply, "BAT0", type="Battery")  # no status file
    policy = TrainingPolicy(LinuxSysfsProvider(supply, backlight))
    assert not policy.may_train() and "battery status unreadable or unknown" in policy.reason
    (supply / "BAT0" / "status").write_text("Unknown\n")
    assert not policy.may_train() and "['Unknown']" in policy.reason
    (supply / "BAT0" / "status").write_text("Charging\n")
    write_supply(backlight, "acpi_video0")  # no bl_power
    assert not policy.may_train() and policy.reason == f"device state unknown: unreadable bl_power under {backlight}"
    assert TrainingPolicy(LinuxSysfsProvider(supply, backlight), require_screen_off=False).may_train()


def test_auto_fits_the_device(tmp_path, monkeypatch):
    supply = tmp_path / "ps"
    write_supply(supply, "AC", type="Mains", online=1)
    assert auto_policy(android=False, power_supply=supply) == "always"  # a desktop on mains
    write_supply(supply, "hid-mouse-battery", type="Battery", scope="Device")
    assert auto_policy(android=False, power_supply=supply) == "always"
    write_supply(supply, "BAT0", type="Battery", status="Discharging")
    assert auto_policy(android=False, power_supply=supply) == "linux"
    assert auto_policy(android=True, power_supply=supply) == "android"
    assert auto_policy(android=False, power_supply=tmp_path / "none") == "always"
    monkeypatch.setattr(device_runtime.policy, "is_android", lambda: True)
    assert isinstance(make_policy("auto", run=fake_android_shell()).provider, AndroidShellProvider)


def test_always_and_factory():
    assert TrainingPolicy(AlwaysProvider()).may_train()
    assert isinstance(make_policy("linux").provider, LinuxSysfsProvider)
    assert isinstance(make_policy("android", run=fake_android_shell()).provider, AndroidShellProvider)
    with pytest.raises(ValueError, match="unknown policy 'sometimes'"):
        make_policy("sometimes")


def test_the_cli_defaults_to_auto_and_offers_every_policy(capsys):
    with pytest.raises(SystemExit):
        main(["device", "offline", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "{" + ",".join(POLICIES) + "}" in out and "(default: auto)" in out
    assert "auto picks android on Android, linux (sysfs) where /sys/class/power_supply shows a battery" in out
