"""The AutLearn training compiler: any PyTorch model or ONNX file -> forward / loss / update modules.

`compile_bundle` (compiler/api.py) is the entry point; ARCHITECTURE.md fixes its contract.
"""
from compiler.api import compile_bundle

__all__ = ["compile_bundle"]
