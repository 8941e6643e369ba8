"""Router swap time: with ``--models-max 1``, how long a request for the other model takes to its
first token (unload the loaded model + load the requested one + prefill + first token), against
the first token of a model that is already loaded.

Starts ``llamabind serve --models-dir DIR --models-max 1`` on loopback over a temporary directory
holding two links to the default model (SmolLM2-135M Q4_1, or ``--model``), then alternates
streamed one-token chat requests between them.

    python benchmarks/router_swap.py --rounds 6 --engine process
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def first_token_seconds(client: httpx.Client, model: str) -> float:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 1,
        "temperature": 0.0,
        "stream": True,
    }
    t0 = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    return time.perf_counter() - t0
    raise RuntimeError("no token came")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF to swap (default: the embedded default model)")
    ap.add_argument("--rounds", type=int, default=6, help="swaps measured")
    ap.add_argument("--engine", choices=["process", "thread"], default="process")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.model:
        src = Path(args.model)
    else:
        from llamabind import default_model_path

        src = default_model_path()
    with tempfile.TemporaryDirectory() as d:
        for name in ("model-a.gguf", "model-b.gguf"):
            try:
                os.link(src, Path(d) / name)
            except OSError:
                shutil.copyfile(src, Path(d) / name)
        port = free_port()
        cmd = [
            sys.executable, "-m", "llamabind", "serve", "--models-dir", d, "--models-max", "1",
            "--port", str(port), "--engine", args.engine, "-np", "1", "-c", "1024",
            "-t", str(args.threads), "--no-webui",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd)
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300)
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.1)
            cold = first_token_seconds(client, "model-a")
            warm = [first_token_seconds(client, "model-a") for _ in range(3)]
            swaps = []
            for i in range(args.rounds):
                swaps.append(first_token_seconds(client, "model-b" if i % 2 == 0 else "model-a"))
            loads = [m["meta"].get("load_seconds") for m in client.get("/v1/models").json()["data"]]
        finally:
            t_stop = time.perf_counter()
            proc.terminate()
            proc.wait(60)
            stop = time.perf_counter() - t_stop
    print(f"model {src.name}, engine {args.engine}, {args.threads} threads")
    print(f"cold load + first token     {cold * 1000:8.0f} ms")
    print(f"first token, model loaded   {statistics.median(warm) * 1000:8.0f} ms (median of 3)")
    print(
        f"swap + first token          {statistics.median(swaps) * 1000:8.0f} ms (median of {len(swaps)}; "
        f"min {min(swaps) * 1000:.0f}, max {max(swaps) * 1000:.0f})"
    )
    print(f"server stop                 {stop * 1000:8.0f} ms")
    print(f"last load times (server)    {', '.join(f'{x:.2f} s' for x in loads if x)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
