"""Privacy: the device side learns with socket creation blocked, and its code imports no network
module, torch or cloud-side package.

In a fresh device process an audit hook refuses every socket operation (creating, connecting,
binding, resolving a name) and records it; offline learning, online learning and inference then
run through the CLI as a user runs them, and must succeed. The source of `device_runtime` and
`augment` is also read for imports of network modules: none may appear. (The TVM runtime imports
Python's `socket` module through `multiprocessing`; importing it opens nothing, and the audit
hook would see any use.)
"""
from __future__ import annotations

import ast
import contextlib
import io
import sys
from pathlib import Path
from typing import Any

from autlearn.reliability.workload import child_main, run_child, synthetic_user

NETWORK_MODULES = ("socket", "ssl", "http", "urllib", "requests", "httpx", "aiohttp", "asyncio", "ftplib",
                   "smtplib", "poplib", "imaplib", "telnetlib", "xmlrpc", "socketserver", "websocket", "grpc")
DEVICE_PACKAGES = ("device_runtime", "augment")
CLOUD_PACKAGES = ("torch", "torchvision", "cloud_pretrain", "compiler", "onnxruntime", "flwr")


def imports_of(package_dir: Path) -> dict[str, set[str]]:
    """The top-level modules each source file of a package imports, by file."""
    found: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[path.as_posix()] = names
    return found


def forbidden_imports() -> list[str]:
    """`file: module` for every network or cloud-side import in the device packages' source."""
    root = Path(__file__).resolve().parents[2]
    return [f"{Path(file).relative_to(root)}: {name}" for package in DEVICE_PACKAGES
            for file, names in imports_of(root / package).items()
            for name in sorted(names & set(NETWORK_MODULES + CLOUD_PACKAGES))]


def _learn_without_network(bundle: str, work: str) -> dict[str, Any]:
    from autlearn.cli import main

    attempts: list[str] = []

    def refuse_sockets(event: str, args: tuple) -> None:
        if event.startswith("socket."):
            attempts.append(event)
            raise PermissionError(f"network blocked by the privacy check: {event}")

    sys.addaudithook(refuse_sockets)
    work_dir = Path(work)
    user = synthetic_user(Path(bundle), work_dir / "user.npz", 32, 0)
    state, log = work_dir / "state", work_dir / "device.log"
    device = ["--quiet", "--log-file", str(log), "device"]
    commands = {"offline": ["offline", "--bundle", bundle, "--data", str(user), "--state", str(state),
                            "--augment-ratio", "0", "--policy", "always"],
                "online": ["online", "--bundle", bundle, "--data", str(user), "--state", str(state)],
                "infer": ["infer", "--bundle", bundle, "--input", str(user), "--state", str(state)]}
    codes = {}
    for name, argv in commands.items():
        with contextlib.redirect_stdout(io.StringIO()):
            codes[name] = main([*device, *argv])
    tried = list(attempts)
    try:  # the control: the hook really refuses a socket
        import socket

        socket.socket().close()
        hook_blocks = False
    except PermissionError:
        hook_blocks = True
    return {"exit_codes": codes, "socket_operations": tried, "hook_blocks_sockets": hook_blocks,
            "cloud_modules_loaded": sorted(m for m in sys.modules if m.split(".")[0] in CLOUD_PACKAGES)}


def check_privacy(bundle: Path, work: Path) -> dict[str, Any]:
    """Figures: the device commands' exit codes with sockets blocked, the socket operations they
    tried, the cloud-side modules loaded, and the forbidden imports in the device source."""
    Path(work).mkdir(parents=True, exist_ok=True)
    result = run_child("autlearn.reliability.privacy", {"bundle": str(bundle), "work": str(work)})
    result["forbidden_imports"] = forbidden_imports()
    result["private"] = (all(c == 0 for c in result["exit_codes"].values()) and result["hook_blocks_sockets"]
                         and not result["socket_operations"]
                         and not result["cloud_modules_loaded"] and not result["forbidden_imports"])
    return result


if __name__ == "__main__":
    child_main(_learn_without_network)
