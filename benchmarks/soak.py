"""Soak test of ``llamabind serve``: many clients × many mixed requests against a server it starts
(the default model), then a report of what must hold after any amount of traffic.

The mix, per request (seeded): chat completions streamed and not, with tools, with a
``json_schema`` response format, text completions, embeddings; 20 % of the streamed ones
disconnect mid-stream; 5 % are bad inputs (oversized, malformed, deeply nested, wrong content
type, colliding template variables, out-of-range fields) that must get a 4xx.

Reported: 5xx answers (must be 0), hangs (requests over ``--timeout``; must be 0), bad inputs
answered with something other than 4xx, slots idle at the end (all), server RSS after the first
``--rss-warmup`` requests vs at the end (< 2 % growth), p50/p99 latency of the good requests.

    python benchmarks/soak.py                      # 32 clients × 1000 requests (the issue's size)
    python benchmarks/soak.py --clients 8 --requests 50 --max-tokens 8   # a reduced run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
SCHEMA = {
    "type": "object",
    "properties": {"colour": {"type": "string"}, "n": {"type": "integer"}},
    "required": ["colour"],
}


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


@dataclass
class Tally:
    done: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    hangs: int = 0
    bad_not_4xx: list[str] = field(default_factory=list)
    good_refused: list[str] = field(default_factory=list)  # a good request answered 4xx
    busy: int = 0  # 503 server_busy (the queue bound doing its job)
    latencies: list[float] = field(default_factory=list)
    rss_at_warmup: float | None = None


def bad_request(rng: random.Random, model: str) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of one bad input."""
    js = {"content-type": "application/json"}
    msgs = [{"role": "user", "content": "hi"}]
    choice = rng.randrange(8)
    if choice == 0:
        return "/v1/chat/completions", b'{"model": "x", "messages": [', js
    if choice == 1:
        deep = "[" * 50_000 + "]" * 50_000
        return "/v1/chat/completions", f'{{"model": "{model}", "messages": {deep}}}'.encode(), js
    if choice == 2:
        body = {"model": model, "max_tokens": 4, "messages": msgs}
        return "/v1/messages", json.dumps(body).encode(), {"content-type": "text/plain"}
    if choice == 3:
        body = {"model": model, "messages": msgs, "chat_template_kwargs": {"messages": []}}
        return "/v1/chat/completions", json.dumps(body).encode(), js
    if choice == 4:
        body = {"model": model, "messages": msgs, "repeat_last_n": 2**31 - 1}
        return "/v1/chat/completions", json.dumps(body).encode(), js
    if choice == 5:
        body = {"model": model, "messages": msgs, "stop": [str(i) for i in range(5000)]}
        return "/v1/chat/completions", json.dumps(body).encode(), js
    if choice == 6:
        body = {"model": model, "prompt": "hi", "max_tokens": 0}
        return "/v1/completions", json.dumps(body).encode(), js
    body = {"model": model, "messages": msgs, "dry_sequence_breakers": ["x"] * 3000}
    return "/v1/chat/completions", json.dumps(body).encode(), js


async def one(client: httpx.AsyncClient, rng: random.Random, model: str, max_tokens: int, t: Tally) -> None:
    roll = rng.random()
    msgs = [{"role": "user", "content": f"Say something about the number {rng.randrange(1000)}."}]
    if roll < 0.05:
        path, raw, headers = bad_request(rng, model)
        r = await client.post(path, content=raw, headers=headers)
        t.kinds["bad"] = t.kinds.get("bad", 0) + 1
        if r.status_code >= 500:
            t.server_errors.append(f"{path} (bad input) → {r.status_code} {r.text[:200]}")
        elif not 400 <= r.status_code < 500:
            t.bad_not_4xx.append(f"{path} → {r.status_code}")
        return
    base: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": rng.randrange(1 << 30),
    }
    if roll < 0.15:
        kind, path, body = "embeddings", "/v1/embeddings", {"model": model, "input": msgs[0]["content"]}
    elif roll < 0.25:
        kind, path, body = "completion", "/v1/completions", {**base, "prompt": msgs[0]["content"]}
    elif roll < 0.35:
        kind, path, body = "tools", "/v1/chat/completions", {**base, "messages": msgs, "tools": TOOLS}
    elif roll < 0.45:
        rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
        kind, path, body = (
            "json_schema",
            "/v1/chat/completions",
            {**base, "messages": msgs, "response_format": rf},
        )
    elif roll < 0.7:
        kind, path, body = "chat", "/v1/chat/completions", {**base, "messages": msgs}
    else:
        kind, path, body = "stream", "/v1/chat/completions", {**base, "messages": msgs, "stream": True}
    t.kinds[kind] = t.kinds.get(kind, 0) + 1
    t0 = time.monotonic()
    if kind == "stream":
        disconnect = rng.random() < 0.2
        async with client.stream("POST", path, json=body) as r:
            if r.status_code >= 500:
                text = (await r.aread()).decode(errors="replace")
                if r.status_code == 503 and "server_busy" in text:
                    t.busy += 1
                else:
                    t.server_errors.append(f"{kind} → {r.status_code} {text[:200]}")
                return
            n = 0
            async for line in r.aiter_lines():
                if '"error"' in line and line.startswith("data:"):
                    t.server_errors.append(f"{kind} stream error: {line[:200]}")
                n += 1
                if disconnect and n == 3:
                    t.kinds["disconnected"] = t.kinds.get("disconnected", 0) + 1
                    return
    else:
        r = await client.post(path, json=body)
        if r.status_code == 503 and "server_busy" in r.text:
            t.busy += 1
            return
        if r.status_code >= 500:
            t.server_errors.append(f"{kind} → {r.status_code} {r.text[:200]}")
            return
        if r.status_code >= 400:
            t.good_refused.append(f"{kind} → {r.status_code} {r.text[:200]}")
            return
    t.latencies.append(time.monotonic() - t0)


async def drive(base: str, args: argparse.Namespace, pid: int, key: str) -> Tally:
    t = Tally()
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=args.clients + 4)
    async with httpx.AsyncClient(base_url=base, timeout=None, headers=headers, limits=limits) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]

        async def worker(c: int) -> None:
            rng = random.Random(args.seed * 1000 + c)
            for _ in range(args.requests):
                try:
                    await asyncio.wait_for(one(client, rng, model, args.max_tokens, t), args.timeout)
                except asyncio.TimeoutError:
                    t.hangs += 1
                except httpx.HTTPError as exc:
                    t.server_errors.append(f"transport: {type(exc).__name__}: {exc}")
                t.done += 1
                if t.rss_at_warmup is None and t.done >= args.rss_warmup:
                    t.rss_at_warmup = rss_mib(pid)

        await asyncio.gather(*(worker(c) for c in range(args.clients)))
    return t


def wait_healthy(base: str, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited during startup")
        try:
            if httpx.get(base + "/health", timeout=1).json().get("status") == "ok":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise RuntimeError("the server did not become healthy")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    ap.add_argument("--requests", type=int, default=1000, help="requests per client (default 1000)")
    ap.add_argument("--max-tokens", type=int, default=16, help="max_tokens of each generation (default 16)")
    ap.add_argument("--parallel", type=int, default=4, help="server slots (default 4)")
    ap.add_argument("--max-queue", type=int, default=64, help="server queue (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="server threads (default 1)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds after which a request is a hang")
    ap.add_argument("--rss-warmup", type=int, default=1000, help="requests before the first RSS sample")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    total = args.clients * args.requests
    args.rss_warmup = min(args.rss_warmup, max(total // 5, 1))
    port = free_port()
    key = "soak-key"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "llamabind", "serve", "--port", str(port), "-np", str(args.parallel),
            "--max-queue", str(args.max_queue), "-t", str(args.threads), "--api-key", key,
            "--ctx-size", str(1024 * args.parallel),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, 180)
        t0 = time.monotonic()
        tally = asyncio.run(drive(base, args, proc.pid, key))
        elapsed = time.monotonic() - t0
        time.sleep(1.0)  # let cancelled streams reach their slots
        slots = httpx.get(base + "/slots", headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
        healthy = httpx.get(base + "/health", timeout=30).status_code == 200
        rss_end = rss_mib(proc.pid)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
    idle = sum(1 for s in slots if not s["is_processing"])
    lat = sorted(tally.latencies)
    p50 = statistics.median(lat) if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    rss0 = tally.rss_at_warmup or float("nan")
    growth = (rss_end - rss0) / rss0 * 100
    cmd = " ".join(sys.argv[1:])
    print(f"# `python benchmarks/soak.py {cmd}`")
    print(
        f"{args.clients} clients × {args.requests} requests = {total} in {elapsed:.0f} s (load average {os.getloadavg()[0]:.2f})"
    )
    print(f"mix: {dict(sorted(tally.kinds.items()))}; 503 server_busy: {tally.busy}\n")
    print("| check | result |\n|---|---|")
    print(f"| 5xx answers | {len(tally.server_errors)} |")
    print(f"| hangs (> {args.timeout:.0f} s) | {tally.hangs} |")
    print(f"| bad inputs not answered 4xx | {len(tally.bad_not_4xx)} |")
    print(f"| good requests refused (4xx) | {len(tally.good_refused)} |")
    print(f"| slots idle at the end | {idle} of {len(slots)} |")
    print(f"| server alive, /health ok | {alive and healthy} |")
    print(f"| RSS at request {args.rss_warmup} → end | {rss0:.1f} → {rss_end:.1f} MiB ({growth:+.2f} %) |")
    print(f"| latency p50 / p99 (good requests) | {p50 * 1000:.0f} / {p99 * 1000:.0f} ms |")
    for line in (tally.server_errors + tally.bad_not_4xx + tally.good_refused)[:10]:
        print("  ", line)
    ok = not (tally.server_errors or tally.hangs or tally.bad_not_4xx or tally.good_refused)
    ok = ok and idle == len(slots)
    return 0 if ok and alive and healthy else 1


if __name__ == "__main__":
    sys.exit(main())
