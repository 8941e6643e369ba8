"""ggml RPC backend (libggml-rpc): declared here because llama-cpp-python does not bind it."""

from __future__ import annotations

import ctypes
from typing import Any

from ..errors import RpcError
from .backend import _ggml_main_lib, backend_init
from .lib import load_side_library

__all__ = ["rpc_add_server", "rpc_device_memory", "rpc_lib", "rpc_start_server"]

_rpc: ctypes.CDLL | None = None


def rpc_lib() -> ctypes.CDLL:
    global _rpc
    if _rpc is None:
        lib = load_side_library("ggml-rpc")
        if lib is None:
            raise RpcError(
                "this llama.cpp build has no RPC backend (libggml-rpc): reinstall llama-cpp-python with "
                "CMAKE_ARGS=-DGGML_RPC=ON pip install --no-cache-dir --force-reinstall llama-cpp-python==0.3.36"
            )
        lib.ggml_backend_rpc_add_server.restype = ctypes.c_void_p
        lib.ggml_backend_rpc_add_server.argtypes = [ctypes.c_char_p]
        lib.ggml_backend_rpc_get_device_memory.restype = None
        lib.ggml_backend_rpc_get_device_memory.argtypes = [
            ctypes.c_char_p,
            ctypes.c_uint32,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.POINTER(ctypes.c_size_t),
        ]
        lib.ggml_backend_rpc_start_server.restype = None
        lib.ggml_backend_rpc_start_server.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_void_p),
        ]
        _rpc = lib
    return _rpc


def rpc_add_server(endpoint: str) -> list[int]:
    """Register an RPC worker; returns the ggml device handles it exposes."""
    backend_init()
    lib = rpc_lib()
    reg = lib.ggml_backend_rpc_add_server(endpoint.encode())
    if not reg:
        raise RpcError(f"cannot register RPC server {endpoint}")
    g = _ggml_main_lib()
    g.ggml_backend_reg_dev_count.restype = ctypes.c_size_t
    g.ggml_backend_reg_dev_count.argtypes = [ctypes.c_void_p]
    g.ggml_backend_reg_dev_get.restype = ctypes.c_void_p
    g.ggml_backend_reg_dev_get.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    n = int(g.ggml_backend_reg_dev_count(reg))
    return [int(g.ggml_backend_reg_dev_get(reg, i)) for i in range(n)]


def rpc_device_memory(endpoint: str, device: int = 0) -> tuple[int, int]:
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    rpc_lib().ggml_backend_rpc_get_device_memory(
        endpoint.encode(), device, ctypes.byref(free), ctypes.byref(total)
    )
    return int(free.value), int(total.value)


def rpc_start_server(endpoint: str, cache_dir: str | None, n_threads: int, devices: list[int]) -> None:
    """Serve the given devices over RPC. Blocks inside C for the life of the process."""
    lib = rpc_lib()
    arr: Any = (ctypes.c_void_p * max(len(devices), 1))(*devices)
    lib.ggml_backend_rpc_start_server(
        endpoint.encode(), cache_dir.encode() if cache_dir else None, n_threads, len(devices), arr
    )
