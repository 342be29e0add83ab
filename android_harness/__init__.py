"""The Android harness: reach a device (`transports`: local directory, adb, TVM RPC), push a
bundle and verify it there (`push`), and measure it there (`latency`, `energy`).

It sits beside device_runtime (it reads bundles through `device_runtime.manifest`) and never
runs on the phone itself. The CLI is `autlearn push` and `autlearn bench latency|energy`.
"""
