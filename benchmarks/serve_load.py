"""Load benchmark for ``llamabind serve`` (loopback only, bounded in requests and time).

Starts its own server (a ``llamabind serve`` subprocess, so client and server do not share a GIL)
and measures, with streaming chat requests of ``--tokens`` greedy tokens (``ignore_eos``):

* for 1, 4 and 8 concurrent clients: aggregate generated tokens/s, TTFT p50/p95 and per-stream
  tokens/s, and the ratio of the 8-client aggregate to the 1-client one;
* TTFT for a ~2 000-token system prompt followed by a new user message: cold (a system prompt the
  server has never seen) versus cached (the same system prompt again);
* single-client tokens/s versus ``llamabind complete`` (the plain Generator, no server) on the same
  model and threads, measured in the same run.

    python benchmarks/serve_load.py                 # the embedded SmolLM2-135M-Instruct
    python benchmarks/serve_load.py -m model.gguf --json

Figures depend on the machine and on what else runs on it: the load average is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

LEVELS = (1, 4, 8)
SYSTEM_SENTENCE = (
    "You are a meticulous assistant for a public library: you answer questions about opening hours, "
    "lending rules, reading rooms, events and the catalogue, politely and precisely. "
)
TOPICS = [
    "the history of paper",
    "how lighthouses work",
    "the life of honeybees",
    "why the sky is blue",
    "the first railways",
    "how bread rises",
    "volcanoes",
    "the invention of the telescope",
    "coral reefs",
    "the water cycle",
    "ancient libraries",
    "how clocks keep time",
    "migrating birds",
    "the printing press",
    "glaciers",
    "the story of tea",
]


# user_message(0) as SmolLM2's template renders it: `complete` decodes the very same tokens
COMPLETE_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nRequest 0: write a long, detailed essay about the history of paper.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@dataclass
class StreamResult:
    ttft: float  # seconds from sending the request to the first content token
    tokens: int  # completion tokens (from the usage chunk)
    gen_seconds: float  # first to last content token
    wall: float

    @property
    def tps(self) -> float:
        return (self.tokens - 1) / self.gen_seconds if self.tokens > 1 and self.gen_seconds > 0 else 0.0


@dataclass
class LevelResult:
    clients: int
    wall: float
    streams: list[StreamResult] = field(default_factory=list)

    @property
    def aggregate_tps(self) -> float:
        return sum(s.tokens for s in self.streams) / self.wall if self.wall > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        ttfts = sorted(s.ttft for s in self.streams)
        return {
            "clients": self.clients,
            "requests": len(self.streams),
            "generated_tokens": sum(s.tokens for s in self.streams),
            "wall_s": round(self.wall, 2),
            "aggregate_tok_s": round(self.aggregate_tps, 2),
            "ttft_p50_ms": round(1000 * percentile(ttfts, 50), 1),
            "ttft_p95_ms": round(1000 * percentile(ttfts, 95), 1),
            "per_stream_tok_s_mean": round(statistics.mean(s.tps for s in self.streams), 2),
        }


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def stream_chat(
    base: str, messages: list[dict[str, str]], max_tokens: int, *, ignore_eos: bool = True
) -> StreamResult:
    """One streaming chat request over a raw loopback connection.

    A deliberately lean client (no HTTP library, no JSON parsing per chunk): on this 2-core machine
    every CPU cycle the client spends is taken from the server it measures.
    """
    body = json.dumps(
        {
            "model": "bench",
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": ignore_eos,
        }
    ).encode()
    host, _, port = base.removeprefix("http://").partition(":")
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: "
        + host.encode()
        + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"HTTP error: {status.decode().strip()} {(await reader.read(500)).decode()}")
    first = last = 0.0
    tokens = 0
    buf = b""
    done = False
    while not done:
        data = await reader.read(65536)
        if not data:
            break
        now = time.perf_counter()
        buf += data
        while True:
            i = buf.find(b"\n\n")  # SSE events end with a blank line (chunk framing aside)
            if i < 0:
                break
            event, buf = buf[:i], buf[i + 2 :]
            if b'"content":"' in event and b'"content":""' not in event:
                if not first:
                    first = now
                last = now
            elif b'"usage":{' in event:
                j = event.index(b"data: ")
                tokens = int(json.loads(event[j + 6 :])["usage"]["completion_tokens"])
            elif b"data: [DONE]" in event:
                done = True
            elif b'"error"' in event:
                raise RuntimeError(event.decode(errors="replace"))
    writer.close()
    end = time.perf_counter()
    if not first:
        first = last = end
    return StreamResult(ttft=first - t0, tokens=tokens, gen_seconds=last - first, wall=end - t0)


def user_message(i: int) -> list[dict[str, str]]:
    topic = TOPICS[i % len(TOPICS)]
    return [{"role": "user", "content": f"Request {i}: write a long, detailed essay about {topic}."}]


async def run_level(base: str, clients: int, per_client: int, tokens: int, deadline: float) -> LevelResult:
    counter = iter(range(10**6))

    async def client() -> list[StreamResult]:
        out = []
        for _ in range(per_client):
            if time.monotonic() > deadline:
                break
            out.append(await stream_chat(base, user_message(next(counter)), tokens))
        return out

    t0 = time.perf_counter()
    results = await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return LevelResult(clients, wall, [s for r in results for s in r])


async def run_prefix(base: str, system_tokens: int, repeats: int, deadline: float) -> dict[str, Any]:
    """TTFT of a long system prompt + new user message: cold (never seen) vs cached (seen before)."""
    n_sentences = max(1, round(system_tokens / 29))  # ~29 tokens per sentence with SmolLM2's tokenizer
    async with httpx.AsyncClient(base_url=base, timeout=600.0) as http:

        def long_system() -> str:
            return f"[session {uuid.uuid4().hex}] " + SYSTEM_SENTENCE * n_sentences

        async def ttft(system: str, question: str) -> tuple[float, int, int]:
            body = {
                "model": "bench",
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
                "max_tokens": 1,
                "temperature": 0,
            }
            t0 = time.perf_counter()
            r = await http.post("/v1/chat/completions", json=body)
            dt = time.perf_counter() - t0
            r.raise_for_status()
            usage = r.json()["usage"]
            return dt, int(usage["prompt_tokens"]), int(usage["prompt_tokens_details"]["cached_tokens"])

        cold: list[float] = []
        cached: list[float] = []
        prompt_tokens = cached_tokens = 0
        for i in range(repeats):
            if time.monotonic() > deadline:
                break
            system = long_system()
            dt, prompt_tokens, _ = await ttft(system, f"When does the library open on day {i}?")
            cold.append(dt)
            dt, _, cached_tokens = await ttft(system, f"Can I renew a book online, question {i}?")
            cached.append(dt)
    cold_ms = 1000 * statistics.median(cold) if cold else 0.0
    cached_ms = 1000 * statistics.median(cached) if cached else 0.0
    return {
        "prompt_tokens": prompt_tokens,
        "cached_tokens_reused": cached_tokens,
        "cold_ttft_ms": round(cold_ms, 1),
        "cached_ttft_ms": round(cached_ms, 1),
        "cached_over_cold_pct": round(100 * cached_ms / cold_ms, 2) if cold_ms else None,
        "runs": len(cold),
    }


def run_complete(args: argparse.Namespace, tokens: int) -> dict[str, Any]:
    """``llamabind complete`` (the Generator, no server) on the same model, threads and prompt shape."""
    cmd = [
        sys.executable,
        "-m",
        "llamabind",
        "complete",
        "-p",
        COMPLETE_PROMPT,
        "-n",
        str(tokens),
        "--ignore-eos",
        "--temp",
        "0",
        "--json",
        *model_args(args),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    data = json.loads(out.stdout)
    return {
        "generated_tokens": data["completion_tokens"],
        "tok_s": data["timings"]["generation_tokens_per_second"],
        "ttft_ms": data["timings"]["ttft_ms"],
    }


def model_args(args: argparse.Namespace) -> list[str]:
    out = []
    if args.model:
        out += ["-m", args.model]
    if args.threads:
        out += ["-t", str(args.threads)]
    return out


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not become healthy in time")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", help="GGUF model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--tokens", type=int, default=128, help="tokens per reply (default 128)")
    p.add_argument("--per-client", type=int, default=2, help="requests per client per level run (default 2)")
    p.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs per level and single-stream pairs; the best is kept (default 2)",
    )
    p.add_argument("--system-tokens", type=int, default=2000, help="long system prompt size (default 2000)")
    p.add_argument("--prefix-repeats", type=int, default=3, help="cold/cached TTFT pairs (default 3)")
    p.add_argument("--max-seconds", type=float, default=900, help="stop starting new requests after this")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()

    deadline = time.monotonic() + args.max_seconds
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    parallel = max(LEVELS)
    per_slot = args.system_tokens + 512
    server_cmd = [
        sys.executable,
        "-m",
        "llamabind",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--parallel",
        str(parallel),
        "--ctx-size",
        str(parallel * per_slot),
        "--max-queue",
        "64",
        "--temp",
        "0",
        "--model-alias",
        "bench",
        *model_args(args),
    ]
    load_before = os.getloadavg()
    proc = subprocess.Popen(server_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "cpus": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "tokens_per_reply": args.tokens,
    }
    try:
        wait_healthy(base, proc, 300)
        asyncio.run(run_level(base, 1, 1, 8, deadline))  # warm-up
        best: dict[int, LevelResult] = {}
        runs: dict[int, list[float]] = {}
        for clients in LEVELS:
            for _ in range(args.repeat):
                level = asyncio.run(run_level(base, clients, args.per_client, args.tokens, deadline))
                runs.setdefault(clients, []).append(round(level.aggregate_tps, 2))
                if clients not in best or level.aggregate_tps > best[clients].aggregate_tps:
                    best[clients] = level
                if not args.json:
                    print(json.dumps(level.summary()), file=sys.stderr)
        results["levels"] = [{**best[c].summary(), "aggregate_tok_s_all_runs": runs[c]} for c in LEVELS]
        one = best[1].aggregate_tps
        results["ratio_8_vs_1"] = round(best[8].aggregate_tps / one, 3) if one else None
        results["prefix_cache"] = asyncio.run(
            run_prefix(base, args.system_tokens, args.prefix_repeats, deadline)
        )
        # single stream vs `llamabind complete`, interleaved so both see the same machine; the
        # server idles (its engine thread waits) while `complete` runs
        server_runs: list[float] = []
        complete_runs: list[dict[str, Any]] = []
        for _ in range(args.repeat + 1):
            s = stream_chat_blocking(base, args.tokens)
            server_runs.append(s.tps)
            complete_runs.append(run_complete(args, args.tokens))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    server_best = max(server_runs)
    complete_best = max(c["tok_s"] for c in complete_runs)
    results["single_stream"] = {
        "server_tok_s_runs": [round(x, 2) for x in server_runs],
        "complete_tok_s_runs": [c["tok_s"] for c in complete_runs],
        "server_best_tok_s": round(server_best, 2),
        "complete_best_tok_s": complete_best,
        "server_vs_complete_pct": round(100 * server_best / complete_best, 1) if complete_best else None,
    }
    results["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"command: {results['command']}   cpus: {results['cpus']}   load avg before: {results['load_avg_before']}"
    )
    print(f"best of {args.repeat} runs per level, {args.tokens}-token greedy replies")
    print(
        f"{'clients':>7} {'reqs':>5} {'agg tok/s':>10} {'TTFT p50':>10} {'TTFT p95':>10} {'per-stream tok/s':>17}"
    )
    for lv in results["levels"]:
        print(
            f"{lv['clients']:>7} {lv['requests']:>5} {lv['aggregate_tok_s']:>10.2f} {lv['ttft_p50_ms']:>8.0f}ms "
            f"{lv['ttft_p95_ms']:>8.0f}ms {lv['per_stream_tok_s_mean']:>17.2f}   (all runs: {lv['aggregate_tok_s_all_runs']})"
        )
    print(f"aggregate 8 clients / 1 client: {results['ratio_8_vs_1']}x")
    pc = results["prefix_cache"]
    print(
        f"TTFT with a {pc['prompt_tokens']}-token prompt (median of {pc['runs']}): cold {pc['cold_ttft_ms']:.0f} ms, "
        f"cached {pc['cached_ttft_ms']:.0f} ms ({pc['cached_over_cold_pct']}% of cold, "
        f"{pc['cached_tokens_reused']} tokens reused)"
    )
    ss = results["single_stream"]
    print(
        f"single stream (best of {len(server_runs)}): server {ss['server_best_tok_s']} tok/s vs llamabind complete "
        f"{ss['complete_best_tok_s']} tok/s ({ss['server_vs_complete_pct']}%); runs: server {ss['server_tok_s_runs']}, "
        f"complete {ss['complete_tok_s_runs']}"
    )
    print(f"load avg after: {results['load_avg_after']}")
    return 0


def stream_chat_blocking(base: str, tokens: int) -> StreamResult:
    """The single-stream measurement: one blocking socket, no event loop in the client at all."""
    body = json.dumps(
        {
            "model": "bench",
            "messages": user_message(0),
            "max_tokens": tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        }
    ).encode()
    host, _, port = base.removeprefix("http://").partition(":")
    t0 = time.perf_counter()
    first = last = 0.0
    n_tokens = 0
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
            b"Connection: close\r\n\r\n" + body
        )
        chunks: list[bytes] = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            now = time.perf_counter()
            if b'"content":"' in data and (b'"content":""' not in data or data.count(b'"content":"') > 1):
                if not first:
                    first = now
                last = now
            chunks.append(data)
    raw = b"".join(chunks)
    if b" 200 " not in raw[: raw.find(b"\r\n")]:
        raise RuntimeError(raw[:300].decode(errors="replace"))
    i = raw.rfind(b'"usage":{')
    if i >= 0:
        j = raw.rfind(b"data: ", 0, i)
        n_tokens = int(json.loads(raw[j + 6 : raw.find(b"\n\n", i)])["usage"]["completion_tokens"])
    end = time.perf_counter()
    if not first:
        first = last = end
    return StreamResult(ttft=first - t0, tokens=n_tokens, gen_seconds=last - first, wall=end - t0)


if __name__ == "__main__":
    sys.exit(main())
