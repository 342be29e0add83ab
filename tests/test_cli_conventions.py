"""Conventions every `autlearn` command shares: --version, defaults in --help, --quiet, --debug,
and library warnings (Python and TVM's native ones) in the log file instead of on the screen.

Throwaway commands under `conventions` are registered through this module's `register`.
"""
from __future__ import annotations

import importlib.metadata
import io
import subprocess
import sys
import warnings

import pytest

from autlearn import cli
from autlearn.cli import CommandTree, main

BARS: list[bool] = []  # `disable` of each bar the `bar` command made


def register(tree: CommandTree) -> None:
    """Adds the throwaway commands."""
    for name, func in (("warn", _warn), ("fail", _fail), ("bar", _bar), ("tvm-take", _tvm_take)):
        tree.subcommand("conventions", name, name, "test commands").set_defaults(func=func)


def _warn(args) -> None:
    warnings.warn("a library's UserWarning", UserWarning)
    print("our result")


def _fail(args) -> None:
    raise KeyError("boom")


def _bar(args) -> None:
    from tqdm import tqdm

    with tqdm(range(3), disable=None) as bar:
        BARS.append(bool(bar.disable))


def _tvm_take(args) -> None:
    """Legalizing an embedding look-up: TVM's C++ topi.take logs "Fast mode segfaults ..." to std::cerr."""
    import torch
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    program = torch.export.export(torch.nn.Embedding(10, 4), (torch.tensor([[1, 2]]),))
    tvm.relax.transform.LegalizeOps()(from_exported_program(program))
    print("legalized")


@pytest.fixture
def log_file(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, __name__))
    return tmp_path / "logs" / "autlearn.log"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"autlearn {importlib.metadata.version('autlearn')}\n"


@pytest.mark.parametrize("argv, shown", [
    (["data", "export-user"], "(default: 10)"),
    (["data", "vocab"], "(default: 10000)"),
    (["bench", "compiler"], "(default: 50)"),
    (["bench", "latency"], "(default: 9090)"),
    ([], "(default: /cache/logs/autlearn.log)"),  # the log under $AUTLEARN_CACHE
])
def test_help_shows_defaults(argv, shown, capsys, monkeypatch):
    monkeypatch.setenv("AUTLEARN_CACHE", "/cache")
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert shown in out and "(default: None)" not in out and "(default: False)" not in out
    assert "(default 1" not in out  # no hand-written copy left


def test_quiet_turns_progress_bars_off(log_file, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    BARS.clear()
    assert main(["--log-file", str(log_file), "conventions", "bar"]) == 0  # not a terminal (pytest's capture)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert main(["--log-file", str(log_file), "conventions", "bar"]) == 0
    assert main(["--quiet", "--log-file", str(log_file), "conventions", "bar"]) == 0
    assert BARS == [True, False, True]


def test_python_warnings_go_to_the_log(log_file, capfd):
    assert main(["--log-file", str(log_file), "conventions", "warn"]) == 0
    out, err = capfd.readouterr()
    assert out == "our result\n" and "UserWarning" not in err
    assert "a library's UserWarning" in log_file.read_text()


def test_an_unexpected_error_is_one_line_with_the_traceback_in_the_log(log_file, capsys):
    assert main(["--log-file", str(log_file), "conventions", "fail"]) == 1
    err = capsys.readouterr().err
    assert err == "autlearn: error: KeyError: 'boom' (run with --debug for the traceback)\n"
    assert "Traceback" in log_file.read_text()

    assert main(["--debug", "--log-file", str(log_file), "conventions", "fail"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and "in _fail" in err
    assert err.endswith("autlearn: error: KeyError: 'boom'\n")


def test_tvm_native_warnings_go_to_the_log_and_stderr_comes_back(log_file, capfd):
    assert main(["--log-file", str(log_file), "conventions", "tvm-take"]) == 0
    out, err = capfd.readouterr()
    assert "legalized" in out and "Fast mode segfaults" not in err, err
    assert "Warning: Fast mode segfaults" in log_file.read_text()
    print("after", file=sys.stderr, flush=True)
    subprocess.run(["sh", "-c", "echo native-after >&2"], check=True)
    assert capfd.readouterr().err == "after\nnative-after\n"


def test_the_log_setup_imports_nothing_heavy(tmp_path):
    probe = (f"import sys; from autlearn.logs import library_output_to; from pathlib import Path\n"
             f"with library_output_to(Path({str(tmp_path / 'a.log')!r}), quiet=True): pass\n"
             f"heavy = {{'torch', 'tvm', 'onnxruntime', 'cloud_pretrain', 'compiler'}} & set(sys.modules)\n"
             f"assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
