"""A device process loads the TVM runtime library only and cannot import torch or the cloud side."""
import subprocess
import sys

import pytest

from device_runtime.isolation import isolate_device_process

PROBE = """
import sys
from device_runtime.isolation import isolate_device_process
isolate_device_process()
import tvm
from tvm.runtime.vm import VirtualMachine
import device_runtime.offline, device_runtime.online, device_runtime.inference
assert tvm.base._RUNTIME_ONLY, "TVM compiler library loaded"
assert "torch" not in sys.modules, "torch was imported"
for name in ("torch", "compiler", "cloud_pretrain"):
    try:
        __import__(name)
    except ImportError as err:
        assert "device process" in str(err)
    else:
        raise AssertionError(name + " imported in a device process")
print("isolated")
"""


def test_device_process_has_no_torch_and_no_compiler():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "isolated"


def test_isolation_after_tvm_is_refused():
    import tvm  # noqa: F401  (this test process already has TVM)

    with pytest.raises(RuntimeError, match="already imported"):
        isolate_device_process()
