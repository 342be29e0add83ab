"""Where installed data lives, and the errors that name what is missing."""
from __future__ import annotations

import importlib.metadata
import os
import pathlib


def require_path(path: str | os.PathLike, what: str, remedy: str) -> pathlib.Path:
    """`path` if it exists; else a FileNotFoundError naming the data and how to get it."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path}: {remedy}")
    return path


def debian_data(path: str | os.PathLike, package: str, what: str) -> pathlib.Path:
    """A path shipped by a Debian package, or an error naming the package to install."""
    return require_path(path, what, f"install the Debian package {package} (make system-deps)")


def python_package_data(distribution: str, relative: str, install: str) -> pathlib.Path:
    """A data directory inside an installed PyPI distribution, found without importing it."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the PyPI package {distribution} is not installed: {install}") from None
    return require_path(pathlib.Path(str(dist.locate_file(relative))), f"{distribution} data '{relative}'", install)
