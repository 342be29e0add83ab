"""Makes this process look like a phone: the TVM runtime library only, and no torch.

`import tvm` loads the 250 MB compiler library and `tvm_ffi` imports torch when it is
installed (about 1 GB of RSS on a workstation). A device has neither, so the device commands
call `isolate_device_process()` before the first TVM import: TVM then loads
`libtvm_runtime.so` only, and importing torch, torchvision, cloud_pretrain or compiler fails.
"""
from __future__ import annotations

import importlib.abc
import os
import sys

# Packages a device process never has (ARCHITECTURE.md: device_runtime's dependencies).
FORBIDDEN_PACKAGES = ("torch", "torchvision", "cloud_pretrain", "compiler")


class _ForbiddenImportFinder(importlib.abc.MetaPathFinder):
    """Refuses the packages of the cloud side, so a stray import fails loudly."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, D102
        if fullname.split(".")[0] in FORBIDDEN_PACKAGES:
            raise ImportError(f"{fullname} is not available in a device process (device_runtime isolation)")
        return None


def isolate_device_process() -> None:
    """Runtime-only TVM and no cloud-side packages for the rest of this process.

    Raises RuntimeError when TVM or torch was loaded before: isolation must come first.
    A second call in an isolated process does nothing.
    """
    if any(isinstance(f, _ForbiddenImportFinder) for f in sys.meta_path):
        return
    loaded = [name for name in ("tvm", *FORBIDDEN_PACKAGES) if name in sys.modules]
    if loaded:
        raise RuntimeError(f"cannot isolate the device process: {', '.join(loaded)} already imported")
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    os.environ["TVM_FFI_DISABLE_TORCH_C_DLPACK"] = "1"
    sys.meta_path.insert(0, _ForbiddenImportFinder())
