"""Server memory over many requests: RSS of a ``llamabind serve`` process across N requests.

Starts its own server on loopback, sends ``--requests`` short chat requests (half streamed,
half not, 4 at a time, every 10th with a client that disconnects mid-stream), and samples the
server's resident set size (``/proc/PID/status`` VmRSS) along the way. A leak shows as steady
growth after warm-up; the spec asks for RSS flat over 1 000 requests.

    python benchmarks/serve_rss.py --requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def one(client: httpx.AsyncClient, i: int, model: str) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Request {i}: name a colour."}],
        "max_tokens": 8,
        "temperature": 0.7,
        "seed": i,
    }
    if i % 2:
        body["stream"] = True
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            n = 0
            async for _line in r.aiter_lines():
                n += 1
                if i % 10 == 1 and n == 3:
                    break  # a client that disconnects mid-stream
    else:
        r = await client.post("/v1/chat/completions", json=body)
        r.raise_for_status()


async def drive(base: str, total: int, pid: int, every: int) -> list[tuple[int, float]]:
    samples: list[tuple[int, float]] = [(0, rss_mib(pid))]
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        sem = asyncio.Semaphore(4)
        done = 0

        async def task(i: int) -> None:
            nonlocal done
            async with sem:
                await one(client, i, model)
            done += 1
            if done % every == 0:
                samples.append((done, rss_mib(pid)))

        await asyncio.gather(*(task(i) for i in range(total)))
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llamabind",
            "serve",
            "--port",
            str(port),
            "-np",
            "4",
            "-t",
            str(args.threads),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/health", timeout=1).json().get("status") == "ok":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.3)
        t0 = time.monotonic()
        samples = asyncio.run(drive(base, args.requests, proc.pid, max(args.requests // 10, 1)))
        elapsed = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"# `python benchmarks/serve_rss.py --requests {args.requests} --threads {args.threads}`")
    print(f"{args.requests} requests in {elapsed:.0f} s; load average {os.getloadavg()[0]:.2f}\n")
    print("| requests done | server RSS (MiB) |\n|---:|---:|")
    for n, mib in samples:
        print(f"| {n} | {mib:.1f} |")
    warm = [m for n, m in samples if n >= args.requests // 5]
    if len(warm) >= 2:
        print(f"\ngrowth after the first {args.requests // 5} requests: {warm[-1] - warm[0]:+.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
