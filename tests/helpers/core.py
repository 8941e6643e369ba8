"""Helpers shared by the tests (greedy loops, subprocess runner, tiny LoRA writer, a free port)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

import llamabind as lb
from llamabind.batching import DoneEvent, ErrorEvent, SchedulerConfig, TokenEvent
from llamabind.generation.sampling import SamplingParams

PROMPT = "The capital of France is"
LONG_PROMPT = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman who told "
    "stories to the children every evening. One of his favourite stories was about"
)
THREADS = 1  # one thread: llama.cpp's spinning workers crawl when the 2 shared cores are busy
GREEDY = SamplingParams(temperature=0.0)
N_VOCAB = 49152  # SmolLM2's vocabulary


def scheduler_config(**kw: Any) -> SchedulerConfig:
    """A small Scheduler: 2 slots of 512 tokens, n_batch 256, one thread; ``kw`` overrides."""
    base: dict[str, Any] = {"parallel": 2, "ctx_per_slot": 512, "n_batch": 256, "n_threads": 1}
    base.update(kw)
    return SchedulerConfig(**base)


@contextmanager
def native_log_level(level: int) -> Iterator[None]:
    """Raise the ``llamabind.native`` logger to ``level`` (llama.cpp's chatter) for the block."""
    log = logging.getLogger("llamabind.native")
    old = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(old)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefill(ctx: lb.Context, tokens: Sequence[int], *, start: int = 0, seq: int = 0) -> None:
    """Decode ``tokens`` at positions start.. in n_batch chunks, logits only for the last token."""
    step = ctx.n_batch
    batch = lb.Batch(min(step, len(tokens)))
    for i in range(0, len(tokens), step):
        chunk = list(tokens[i : i + step])
        batch.clear()
        batch.add_sequence(chunk, start + i, seq, logits_last=i + step >= len(tokens))
        ctx.decode(batch)


def generate(
    ctx: lb.Context,
    n: int,
    *,
    pos: int,
    seq: int = 0,
    sampler: lb.Sampler | None = None,
) -> list[int]:
    """Greedy-generate ``n`` tokens from the logits of the last decode, continuing at ``pos``."""
    smp = sampler or lb.Sampler(ctx.model).greedy()
    batch = lb.Batch(1)
    out: list[int] = []
    for i in range(n):
        tok = smp.sample(ctx, -1)
        out.append(tok)
        if i == n - 1:
            break
        batch.clear()
        batch.add(tok, pos + i, seq, logits=True)
        ctx.decode(batch)
    if sampler is None:
        smp.close()
    return out


def greedy(ctx: lb.Context, tokens: Sequence[int], n: int, *, seq: int = 0) -> list[int]:
    """Prefill ``tokens`` (at position 0) and greedily generate ``n`` tokens."""
    prefill(ctx, tokens, seq=seq)
    return generate(ctx, n, pos=len(tokens), seq=seq)


def run_python(
    code: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (same venv); returns the completed process."""
    full_env = dict(os.environ)
    full_env.pop("LLAMABIND_LIB_DIR", None)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def run_json(code: str, env: Mapping[str, str] | None = None, timeout: float = 120) -> Any:
    """Run ``code`` (which prints one JSON document as its last stdout line); assert exit 0."""
    proc = run_python(code, env, timeout)
    assert proc.returncode == 0, (
        f"subprocess exited {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr[-3000:]}"
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rss_kb() -> int:
    """Resident set size of this process in kB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("VmRSS not found")


def write_lora(
    path: Path,
    *,
    n_embd: int = 576,
    n_embd_kv: int = 192,
    layers: Sequence[int] = (0, 1),
    rank: int = 4,
    alpha: float = 4.0,
    zero_b: bool = False,
    seed: int = 0,
    scale: float = 0.05,
    architecture: str = "llama",
) -> Path:
    """Write a tiny LoRA adapter GGUF for SmolLM2 (attn_q and attn_v of ``layers``).

    llama.cpp's layout (ggml ne order): base W has ne=[n_in, n_out]; lora_a ne=[n_in, r],
    lora_b ne=[r, n_out]. numpy shapes are the reverse: A (r, n_in), B (n_out, r).
    """
    import gguf

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), architecture)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(alpha))
    for il in layers:
        for name, n_out in (("attn_q", n_embd), ("attn_v", n_embd_kv)):
            a = (rng.standard_normal((rank, n_embd)) * scale).astype(np.float32)
            b = (
                np.zeros((n_out, rank), dtype=np.float32)
                if zero_b
                else (rng.standard_normal((n_out, rank)) * scale * 20).astype(np.float32)
            )
            w.add_tensor(f"blk.{il}.{name}.weight.lora_a", a)
            w.add_tensor(f"blk.{il}.{name}.weight.lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


class SchedulerCollector:
    """A GenRequest's ``emit``: the tokens and their text, and how the request ended (its
    `DoneEvent` and finish reason, or its error)."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.text: list[str] = []
        self.done = threading.Event()
        self.event: DoneEvent | None = None
        self.finish: str | None = None
        self.error: BaseException | None = None

    def __call__(self, ev: object) -> None:
        if isinstance(ev, TokenEvent):
            self.tokens.extend(ev.tokens)
            self.text.append(ev.text)
        elif isinstance(ev, DoneEvent):
            self.event = ev
            self.finish = ev.finish_reason
            self.done.set()
        elif isinstance(ev, ErrorEvent):
            self.error = ev.error
            self.done.set()
