"""Multi-machine offload over llama.cpp's ggml RPC backend.

* Worker side: :func:`serve` (in :mod:`llamabind.rpc.worker`) exposes this machine's devices
  (CPU or GPUs) to remote clients.
* Client side: ``Model(path, rpc_servers=["host:50052", …], n_gpu_layers=99)`` offloads layers
  to the workers as if they were GPUs (see :mod:`llamabind.core.rpc`).

The RPC protocol is unauthenticated and unencrypted: bind workers to loopback or a trusted
network only.
"""

from __future__ import annotations

from .worker import check_endpoint, is_loopback, rpc_devices, serve, worker_devices

__all__ = ["check_endpoint", "is_loopback", "rpc_devices", "serve", "worker_devices"]
