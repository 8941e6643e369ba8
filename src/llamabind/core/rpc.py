"""Attaching ggml RPC workers as devices for model offload."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from .._native import rpc as nrpc
from ..errors import RpcError

__all__ = ["check_endpoint", "rpc_devices"]

_registered: dict[str, list[int]] = {}


def check_endpoint(endpoint: str, timeout: float = 5.0) -> tuple[str, int]:
    """Parse ``host:port`` and check a worker listens there (clear error instead of a hang)."""
    host, sep, port_s = endpoint.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise RpcError(f"bad RPC endpoint {endpoint!r}: expected HOST:PORT")
    port = int(port_s)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise RpcError(f"RPC worker {endpoint} unreachable: {exc}") from exc
    return host, port


def rpc_devices(endpoints: Sequence[str]) -> list[int]:
    """Device handles of the given workers, registering each once per process."""
    out: list[int] = []
    for ep in endpoints:
        ep = ep.strip()
        if not ep:
            continue
        if ep not in _registered:
            check_endpoint(ep)
            _registered[ep] = nrpc.rpc_add_server(ep)
        out.extend(_registered[ep])
    return out
