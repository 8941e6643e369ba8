"""Process-wide backend: init (idempotent), logging, system info, devices, native library info."""

from __future__ import annotations

from .._native import backend as nbackend
from .._native import lib as nlib

__all__ = [
    "DeviceInfo",
    "backend_init",
    "devices",
    "library_info",
    "supports_gpu_offload",
    "supports_mlock",
    "supports_mmap",
    "supports_rpc",
    "system_info",
]

DeviceInfo = nbackend.DeviceInfo
backend_init = nbackend.backend_init
system_info = nbackend.system_info
devices = nbackend.devices
supports_gpu_offload = nbackend.supports_gpu_offload
supports_mmap = nbackend.supports_mmap
supports_mlock = nbackend.supports_mlock
supports_rpc = nbackend.supports_rpc


def library_info() -> dict[str, str]:
    """Where the llama.cpp libraries came from and which ggml revision they are."""
    return {
        "lib_dir": str(nlib.lib_dir()),
        "ggml_version": nlib.ggml_version(),
        "ggml_commit": nlib.ggml_commit(),
        "llama_cpp_python": nlib.REQUIRED_LLAMA_CPP_PYTHON,
    }
