"""The ggml RPC worker side: serve this machine's devices to remote llamabind clients.

Multi-machine offload over llama.cpp's ggml RPC backend.

* Worker side: :func:`serve` exposes this machine's devices (CPU or GPUs) to remote clients.
* Client side: ``Model(path, rpc_servers=["host:50052", …], n_gpu_layers=99)`` offloads layers
  to the workers as if they were GPUs (see :mod:`llamabind.core.rpc`).

The RPC protocol is unauthenticated and unencrypted: bind workers to loopback or a trusted
network only.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from .._native import backend as nbackend
from .._native import rpc as nrpc
from ..core.rpc import check_endpoint, rpc_devices
from ..errors import RpcError

__all__ = ["check_endpoint", "is_loopback", "rpc_devices", "serve", "worker_devices"]


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise RpcError(f"cannot resolve {host!r}: {exc}") from exc
    return all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def worker_devices(names: Sequence[str] = ()) -> list[int]:
    """Devices a worker serves: the named ones, else accelerators, else the CPU."""
    devs = nbackend.devices()
    if names:
        by_name = {d.name: d for d in devs}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise RpcError(f"unknown device(s) {missing}; available: {sorted(by_name)}")
        return [by_name[n].handle for n in names]
    accel = [d.handle for d in devs if d.type in ("gpu", "igpu")]
    return accel or [d.handle for d in devs if d.type == "cpu"][:1]


def serve(
    host: str = "127.0.0.1",
    port: int = 50052,
    *,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    devices: Sequence[str] = (),
    allow_remote: bool = False,
    ready: threading.Event | None = None,
) -> None:
    """Serve this machine's devices over ggml RPC until SIGINT/SIGTERM.

    The native serve loop blocks inside C and never returns to the interpreter, so it runs in
    a daemon thread while the main thread waits for a signal; the process then exits cleanly.
    """
    if not 0 < port < 65536:
        raise RpcError(f"bad port {port}")
    if not allow_remote and not is_loopback(host):
        raise RpcError(
            f"refusing to bind RPC worker to non-loopback address {host!r}: the ggml RPC protocol is "
            "unauthenticated; pass allow_remote (--allow-remote) on a trusted network only"
        )
    # fail early (and clearly) when the port is taken
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise RpcError(f"cannot listen on {host}:{port}: {exc}") from exc
    nrpc.rpc_lib()
    devs = worker_devices(devices)
    from ..core.params import default_threads

    n_threads = threads or default_threads()
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    endpoint = f"{host}:{port}"
    stop = threading.Event()
    worker = threading.Thread(
        target=nrpc.rpc_start_server,
        args=(endpoint, str(cache_dir) if cache_dir else None, n_threads, devs),
        name="llamabind-rpc",
        daemon=True,
    )
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    worker.start()
    if ready is not None:
        ready.set()
    while not stop.is_set() and worker.is_alive():
        stop.wait(0.5)
    sys.stderr.flush()
