"""Where library output goes while a command runs: a log file, so the screen keeps our own output.

Python `warnings` (torch's `_flat_weights` UserWarning) and every library logger reach the log
through the root logger. TVM's C++ `LOG(WARNING)` (topi.take's "Fast mode segfaults when there
are out-of-bounds indices", once per embedding look-up legalized) writes to `std::cerr` with no
level control (TVM_LOG_DEBUG gates only DLOG and VLOG), and onnxruntime's native logger does too,
so file descriptor 2 itself points at the log; `sys.stderr` keeps the screen, and with it our
error lines and tqdm's progress bars.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

from device_runtime.files import cache_dir

ORT_ERROR_SEVERITY = 3  # onnxruntime: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def default_log_file() -> Path:
    """`$AUTLEARN_CACHE/logs/autlearn.log`, else `~/.cache/autlearn/logs/autlearn.log`."""
    return cache_dir() / "logs" / "autlearn.log"


@contextlib.contextmanager
def library_output_to(log_file: Path, quiet: bool = False) -> Iterator[None]:
    """Library warnings, logs and native stderr go to `log_file` until the block ends.

    `quiet`: no progress bars (tqdm bars made with `disable=None` see no terminal). A log that
    cannot be written costs one warning line, not the command.
    """
    with contextlib.ExitStack() as stack:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_logging_to(log_file))
            stack.enter_context(_native_stderr_to(log_file))
        except OSError as err:
            print(f"autlearn: warning: cannot write the log file ({err}); library output stays on the screen",
                  file=sys.stderr)
        stack.enter_context(_after_import("onnxruntime", _quiet_onnxruntime))
        stack.enter_context(_after_import("torch", _torch_logs_to_root))
        if quiet:
            stack.enter_context(_replaced_stderr(_NoTerminal(sys.stderr)))
        yield


@contextlib.contextmanager
def _logging_to(log_file: Path) -> Iterator[None]:
    """The root logger, at INFO, and Python warnings into `log_file`."""
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.setLevel(level)
        root.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def _native_stderr_to(log_file: Path) -> Iterator[None]:
    """Points fd 2 (C/C++ libraries, child processes) at `log_file`; a `sys.stderr` that wrote
    to fd 2 is moved to a duplicate of the old fd 2, so Python-level writes stay on the screen."""
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (sys.stderr, sys.__stderr__):
        if stream is not None:
            stream.flush()
    screen = os.dup(2)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    old = sys.stderr
    moved = _fileno(old) == 2
    if moved:
        # The new stream owns `screen`: a bar still holding it after the block keeps a valid fd.
        sys.stderr = open(screen, "w", buffering=1, encoding=getattr(old, "encoding", None) or "utf-8",
                          errors="backslashreplace")
    try:
        yield
    finally:
        for stream in (sys.stderr, sys.__stderr__):
            if stream is not None:
                stream.flush()
        os.dup2(screen, 2)
        if not moved:
            os.close(screen)
        sys.stderr = old


def _fileno(stream: object) -> int | None:
    try:
        return stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # pytest's capture streams have none
        return None


class _NoTerminal:
    """`sys.stderr` that says it is no terminal, so tqdm's `disable=None` turns bars off (--quiet)."""

    def __init__(self, stream: object) -> None:
        self._stream = stream

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _replaced_stderr(stream: object) -> Iterator[None]:
    old, sys.stderr = sys.stderr, stream
    try:
        yield
    finally:
        sys.stderr = old


def _quiet_onnxruntime(ort: ModuleType) -> None:
    ort.set_default_logger_severity(ORT_ERROR_SEVERITY)


def _torch_logs_to_root(torch: ModuleType) -> None:
    """torch gives its loggers their own sys.stderr handler and no propagation (so root's handler
    never sees "No CUDA runtime is found ..."): hand them back to the root, for the process."""
    from torch._logging._internal import _clear_handlers, log_registry

    for name in log_registry.get_log_qnames():
        logger = logging.getLogger(name)
        _clear_handlers(logger)
        logger.propagate = True


def _run_hook(hook: Callable[[ModuleType], None], module: ModuleType) -> None:
    try:
        hook(module)
    except Exception:  # a library's private API moved: its output may reach the screen, never fail
        logging.getLogger(__name__).exception("could not redirect %s's output", module.__name__)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `hook(module)` once `name` is first imported: setting a library up costs no import now.

    It stays on sys.meta_path until that import: `importlib.util.find_spec(name)` alone (onnxruntime
    asks it about torch) finds a spec that is never loaded."""

    def __init__(self, name: str, hook: Callable[[ModuleType], None]) -> None:
        self.name, self.hook = name, hook

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, D102
        if fullname != self.name:
            return None
        later = sys.meta_path[sys.meta_path.index(self) + 1:]
        spec = next((s for f in later if (s := f.find_spec(fullname, path, target)) is not None), None)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_then_hook(module: ModuleType) -> None:
                exec_module(module)
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                _run_hook(self.hook, module)

            spec.loader.exec_module = exec_then_hook  # type: ignore[method-assign]
        return spec


@contextlib.contextmanager
def _after_import(name: str, hook: Callable[[ModuleType], None]) -> Iterator[None]:
    """`hook(module)` now if `name` is imported, else right after its import inside the block."""
    if name in sys.modules:
        _run_hook(hook, sys.modules[name])
        yield
        return
    finder = _AfterImport(name, hook)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
