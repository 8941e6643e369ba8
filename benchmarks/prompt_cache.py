"""Prompt-cache benchmark: more conversations than slots, each returning for a follow-up turn.

1. **Rotating conversations** (a ``llamabind serve`` subprocess, loopback only): ``--conversations``
   conversations (default 8) over ``--parallel`` slots (default 4), each with its own distinct
   history of about ``--history`` tokens (default 1 000). First turns in order, then a follow-up
   turn for each, in the same order: by then every conversation has lost its slot to another one.
   Reports the median time-to-first-token of first turns and follow-ups and their ratio, and the
   server's prompt-cache counters. ``--llama-server PATH`` runs the same workload against a
   llama-server binary (``--cache-ram`` as given) for comparison.
2. **Restore versus re-decode** (in process): for each of ``--sizes`` tokens (default
   1024,4096,16384), the time to decode that prompt into a sequence, to save its state
   (``llama_state_seq_get_data``) and to restore it (``llama_state_seq_set_data``), and the state's
   bytes per token (the memory a cached token costs).

    python benchmarks/prompt_cache.py                          # SmolLM2-135M-Instruct, defaults
    python benchmarks/prompt_cache.py --history 400 --sizes 1024,4096 --json
    python benchmarks/prompt_cache.py --llama-server ~/llama.cpp/build/bin/llama-server

Figures depend on the machine and on what else runs on it: the load average is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

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
]
FOLLOW_UP = "Thank you. Now summarise all of that in one short sentence."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def history(i: int, n_tokens: int) -> str:
    """A distinct user message of roughly ``n_tokens`` tokens (about 1.3 tokens per word)."""
    topic = TOPICS[i % len(TOPICS)]
    lines = [f"Conversation {i}. I am writing notes about {topic}."]
    k = 0
    while sum(len(line.split()) for line in lines) * 1.3 < n_tokens:
        k += 1
        lines.append(f"Note {i}.{k}: fact number {k * 7 + i} about {topic} is worth remembering.")
    lines.append(f"Please comment briefly on my notes about {topic}.")
    return "\n".join(lines)


def _start(cmd: list[str], base: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((proc.stderr.read() if proc.stderr else b"").decode()[-2000:])
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


def _chat(
    http: httpx.Client, messages: list[dict[str, str]], max_tokens: int
) -> tuple[float, str, dict[str, Any]]:
    """One streamed greedy chat turn: (TTFT seconds, reply text, usage)."""
    body = {
        "model": "m",
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft = None
    text: list[str] = []
    usage: dict[str, Any] = {}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            for ch in ev.get("choices") or []:
                piece = (ch.get("delta") or {}).get("content") or ""
                if piece and ttft is None:
                    ttft = time.perf_counter() - t0
                text.append(piece)
            if ev.get("usage"):
                usage = ev["usage"]
    return (ttft if ttft is not None else time.perf_counter() - t0), "".join(text), usage


def rotation(args: argparse.Namespace, cmd: list[str], base: str, label: str) -> dict[str, Any]:
    proc = _start(cmd, base)
    try:
        with httpx.Client(base_url=base, timeout=1800) as http:
            convs = [
                [{"role": "user", "content": history(i, args.history)}] for i in range(args.conversations)
            ]
            first, follow, cached, prompt_tokens = [], [], [], []
            for msgs in convs:
                ttft, reply, usage = _chat(http, msgs, args.max_tokens)
                first.append(ttft)
                prompt_tokens.append(usage.get("prompt_tokens", 0))
                msgs += [{"role": "assistant", "content": reply}, {"role": "user", "content": FOLLOW_UP}]
            for msgs in convs:
                ttft, _, usage = _chat(http, msgs, args.max_tokens)
                follow.append(ttft)
                cached.append((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0))
            metrics = {}
            for line in http.get("/metrics").text.splitlines():
                if line.startswith("llamabind_prompt_cache_") and " " in line:
                    name, value = line.rsplit(" ", 1)
                    metrics[name.removeprefix("llamabind_")] = float(value)
    finally:
        proc.terminate()
        proc.wait(60)
    f, u = statistics.median(first), statistics.median(follow)
    return {
        "server": label,
        "first_turn_prompt_tokens_median": statistics.median(prompt_tokens),
        "first_ttft_median_s": round(f, 3),
        "follow_up_ttft_median_s": round(u, 3),
        "follow_up_over_first": round(u / f, 4) if f else None,
        "follow_up_cached_tokens_median": statistics.median(cached),
        "prompt_cache_metrics": metrics,
    }


def restore_vs_decode(args: argparse.Namespace) -> list[dict[str, Any]]:
    import llamabind as lb

    model = lb.Model(args.model) if args.model else lb.Model(lb.default_model_path())
    out = []
    text = " ".join(history(i, 2000) for i in range(64))
    pool = model.tokenize(text)
    for n in args.sizes:
        toks = (pool * (n // len(pool) + 1))[:n]
        with lb.Context(model, n_ctx=2 * (n + 256), n_batch=512, n_seq_max=2, n_threads=args.threads) as ctx:
            batch = lb.Batch(512, 1)
            t0 = time.perf_counter()
            for i in range(0, n, 512):
                chunk = toks[i : i + 512]
                batch.clear()
                batch.add_sequence(chunk, i, 0, logits_last=i + 512 >= n)
                ctx.decode(batch)
            t_decode = time.perf_counter() - t0
            t0 = time.perf_counter()
            data = ctx.state.seq_to_bytes(0)
            t_save = time.perf_counter() - t0
            ctx.memory.remove(0, -1, -1)
            t0 = time.perf_counter()
            ctx.state.seq_from_bytes(data, 1)
            t_restore = time.perf_counter() - t0
        out.append(
            {
                "tokens": n,
                "decode_s": round(t_decode, 3),
                "save_s": round(t_save, 4),
                "restore_s": round(t_restore, 4),
                "restore_over_decode": round(t_restore / t_decode, 5),
                "state_bytes": len(data),
                "bytes_per_token": round(len(data) / n),
            }
        )
    model.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="GGUF model (default: the embedded SmolLM2)")
    ap.add_argument("--conversations", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=4, help="slots")
    ap.add_argument("--history", type=int, default=1000, help="tokens of each conversation's history")
    ap.add_argument("--max-tokens", type=int, default=16, help="tokens per reply")
    ap.add_argument("--ctx-per-slot", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument(
        "--cache-ram", type=int, default=-1, help="MiB for --cache-ram (-1: the server's default)"
    )
    ap.add_argument("--sizes", default="1024,4096,16384", help="restore-vs-decode sizes ('' to skip)")
    ap.add_argument("--no-server", action="store_true", help="skip the rotating-conversations run")
    ap.add_argument("--llama-server", metavar="PATH", help="also run the workload against llama-server")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.model is None:
        import llamabind as lb

        model_path = str(lb.default_model_path())
    else:
        model_path = args.model
    report: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "loadavg": os.getloadavg(),
        "runs": [],
    }
    ctx = str(args.parallel * args.ctx_per_slot)
    if not args.no_server:
        port = _free_port()
        cmd = [sys.executable, "-m", "llamabind", "serve", "-m", model_path, "--port", str(port)]
        cmd += ["--parallel", str(args.parallel), "--ctx-size", ctx, "--threads", str(args.threads)]
        if args.cache_ram >= 0:
            cmd += ["--cache-ram", str(args.cache_ram)]
        report["runs"].append(rotation(args, cmd, f"http://127.0.0.1:{port}", "llamabind"))
    if args.llama_server:
        port = _free_port()
        cmd = [args.llama_server, "-m", model_path, "--port", str(port), "--parallel", str(args.parallel)]
        cmd += ["-c", ctx, "-t", str(args.threads)]
        if args.cache_ram >= 0:
            cmd += ["--cache-ram", str(args.cache_ram)]
        report["runs"].append(rotation(args, cmd, f"http://127.0.0.1:{port}", "llama-server"))
    if args.sizes:
        report["restore_vs_decode"] = restore_vs_decode(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"load average {report['loadavg']}")
    for r in report["runs"]:
        print(
            f"{r['server']}: {args.conversations} conversations / {args.parallel} slots, "
            f"~{r['first_turn_prompt_tokens_median']:.0f}-token histories: first-turn TTFT "
            f"{r['first_ttft_median_s']} s, follow-up {r['follow_up_ttft_median_s']} s "
            f"({100 * (r['follow_up_over_first'] or 0):.1f} %), cached tokens "
            f"{r['follow_up_cached_tokens_median']:.0f}"
        )
        for k, v in r["prompt_cache_metrics"].items():
            print(f"    {k} {v:g}")
    for r in report.get("restore_vs_decode", []):
        print(
            f"{r['tokens']:>6} tokens: decode {r['decode_s']} s, save {r['save_s']} s, restore "
            f"{r['restore_s']} s ({100 * r['restore_over_decode']:.2f} % of decode), "
            f"{r['bytes_per_token']} B/token"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
