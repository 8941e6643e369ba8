"""``llamabind rpc-server``: serve this machine's devices to remote llamabind/llama.cpp clients."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ...rpc import serve
from ..common import positive_int


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "rpc-server",
        help="run a ggml RPC worker (offload target for --rpc)",
        description="Serve this machine's devices (GPUs, else the CPU) over llama.cpp's ggml RPC protocol. "
        "Clients use --rpc HOST:PORT. The protocol is UNAUTHENTICATED: by default only loopback addresses "
        "are allowed; --allow-remote binds other addresses (trusted networks only). Stops on Ctrl-C/SIGTERM.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("-p", "--port", type=positive_int, default=50052, help="port (default 50052)")
    p.add_argument("-t", "--threads", type=positive_int, default=None, help="CPU threads for the CPU device")
    p.add_argument("-d", "--device", action="append", default=[], help="device name to serve (repeatable)")
    p.add_argument("-c", "--cache", metavar="DIR", default=None, help="cache received tensors in DIR")
    p.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    p.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's own log lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(
        f"WARNING: the ggml RPC protocol is unauthenticated; anyone who can reach {args.host}:{args.port} "
        "can use this worker. Serve on trusted networks only.",
        file=sys.stderr,
    )
    print(f"llamabind rpc-server listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
    serve(
        args.host,
        args.port,
        threads=args.threads,
        cache_dir=args.cache,
        devices=args.device,
        allow_remote=args.allow_remote,
    )
    print("llamabind rpc-server stopped", file=sys.stderr)
    return 0
