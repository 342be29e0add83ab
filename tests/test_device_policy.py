"""Training policy providers: Linux sysfs from real files, Android from dumpsys text, 'always'.

No phone is attached here, so the Android shell is a stand-in callable (a fake, named so) that
answers with text in the format `dumpsys battery` / `dumpsys power` print on Android 13.
"""
import pytest

from device_runtime.policy import (AlwaysProvider, AndroidShellProvider, LinuxSysfsProvider, TrainingPolicy,
                                   make_policy)

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


def fake_android_shell(ac="false", usb="false", status=3, wake="Awake", battery_answers=True):
    """Stand-in for `adb shell` on a phone: returns what the phone would print."""
    calls = []

    def run(command: str) -> str:
        calls.append(command)
        if command == "dumpsys battery":
            return DUMPSYS_BATTERY.format(ac=ac, usb=usb, status=status) if battery_answers else ""
        if command == "dumpsys power":
            return DUMPSYS_POWER.format(wake=wake)
        if command == "cat /sys/class/power_supply/battery/status":
            return "Charging\n"
        return ""

    run.calls = calls
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


def test_android_falls_back_to_sysfs():
    shell = fake_android_shell(battery_answers=False, wake="Asleep")
    assert AndroidShellProvider(shell).read().charging is True
    assert "cat /sys/class/power_supply/battery/status" in shell.calls


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
    assert LinuxSysfsProvider(supply, tmp_path / "none").read().charging is True
    empty = tmp_path / "empty"
    empty.mkdir()
    state = LinuxSysfsProvider(empty, tmp_path / "none").read()
    assert state.charging is True and state.screen_on is None  # a server on mains


def test_always_and_factory():
    assert TrainingPolicy(AlwaysProvider()).may_train()
    assert isinstance(make_policy("linux").provider, LinuxSysfsProvider)
    assert isinstance(make_policy("android", run=fake_android_shell()).provider, AndroidShellProvider)
    with pytest.raises(ValueError, match="unknown policy 'sometimes'"):
        make_policy("sometimes")
