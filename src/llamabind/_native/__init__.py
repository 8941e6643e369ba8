"""Layer 1: the only package that touches ctypes and llama-cpp-python's raw ``llama_cpp.llama_cpp``.

Everything here takes opaque integer handles and plain Python/numpy values; the safe core
(`llamabind.core`) owns the handles. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from .lib import LIB_DIR_ENV, REQUIRED_LLAMA_CPP_PYTHON, ggml_commit, ggml_version, lib_dir, ll

__all__ = ["LIB_DIR_ENV", "REQUIRED_LLAMA_CPP_PYTHON", "ggml_commit", "ggml_version", "lib_dir", "ll"]
