"""Benchmarks like llama-bench: prompt processing (pp) and text generation (tg) through llamabind.

* **pp N** decodes a random prompt of N tokens in ``n_batch`` chunks, logits only for the last token.
* **tg N** runs N single-token decodes, each followed by greedy sampling through :class:`Sampler`.

Each repetition starts from an empty KV cache. Besides tokens/s it reports the *Python overhead*:
``1 - native / wall`` where *wall* is the wall time of the whole loop (batch filling, the ctypes
calls, sampling, …) and *native* is llama.cpp's own decode time from its perf counters
(``t_p_eval_ms`` for pp, ``t_eval_ms`` for tg, read with :meth:`Context.perf`). For tg the
sampler's own time (``llama_perf_sampler``) is reported too, and ``overhead_excl_sampling`` counts
it as native time. The context is synchronised right after every decode so that the native time
of one decode never runs on into the Python code that follows it.

The ``llamabind bench`` command is a thin layer over :func:`run_bench`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .core import Batch, Context, ContextParams, Model, Sampler, default_threads

__all__ = [
    "BenchConfig",
    "BenchResult",
    "Repetition",
    "format_markdown",
    "model_summary",
    "pp_once",
    "random_tokens",
    "run_bench",
    "tg_once",
]

Kind = Literal["pp", "tg"]


@dataclass(frozen=True)
class Repetition:
    """One timed run of a test."""

    wall_s: float
    native_ms: float  # llama.cpp's decode time (perf counters)
    sample_ms: float = 0.0  # llama.cpp's sampling time (tg only)

    @property
    def overhead(self) -> float:
        """1 - native decode time / wall time."""
        return 1.0 - (self.native_ms / 1000.0) / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def overhead_excl_sampling(self) -> float:
        """1 - (native decode + native sampling time) / wall time."""
        native = (self.native_ms + self.sample_ms) / 1000.0
        return 1.0 - native / self.wall_s if self.wall_s > 0 else math.nan


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass
class BenchResult:
    """All repetitions of one test (``pp512``, ``tg128`` …)."""

    kind: Kind
    n_tokens: int
    n_threads: int
    n_batch: int
    n_ubatch: int
    repetitions: list[Repetition] = field(default_factory=list)

    @property
    def test(self) -> str:
        return f"{self.kind}{self.n_tokens}"

    def tokens_per_s(self) -> tuple[float, float]:
        """Mean and standard deviation of tokens/s over the repetitions."""
        return _mean_std([self.n_tokens / r.wall_s for r in self.repetitions if r.wall_s > 0])

    def native_tokens_per_s(self) -> tuple[float, float]:
        """Tokens/s llama.cpp's own decode time alone would give."""
        return _mean_std(
            [self.n_tokens / (r.native_ms / 1000.0) for r in self.repetitions if r.native_ms > 0]
        )

    def overhead(self) -> tuple[float, float]:
        return _mean_std([r.overhead for r in self.repetitions])

    def overhead_excl_sampling(self) -> tuple[float, float]:
        return _mean_std([r.overhead_excl_sampling for r in self.repetitions])

    def to_dict(self) -> dict[str, Any]:
        tps, tps_sd = self.tokens_per_s()
        ntps, ntps_sd = self.native_tokens_per_s()
        ov, ov_sd = self.overhead()
        ovx, ovx_sd = self.overhead_excl_sampling()
        return {
            "test": self.test,
            "kind": self.kind,
            "n_tokens": self.n_tokens,
            "n_threads": self.n_threads,
            "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch,
            "repetitions": len(self.repetitions),
            "tokens_per_s": {"mean": tps, "std": tps_sd},
            "native_tokens_per_s": {"mean": ntps, "std": ntps_sd},
            "overhead": {"mean": ov, "std": ov_sd},
            "overhead_excl_sampling": {"mean": ovx, "std": ovx_sd},
            "samples": [
                {"wall_s": r.wall_s, "native_ms": r.native_ms, "sample_ms": r.sample_ms}
                for r in self.repetitions
            ],
        }


@dataclass
class BenchConfig:
    """What to run. Sizes of 0 are skipped (``-n 0`` runs no tg test, as in llama-bench)."""

    prompt_sizes: Sequence[int] = (512,)
    gen_sizes: Sequence[int] = (128,)
    repetitions: int = 5
    threads: Sequence[int] = ()  # () = default_threads()
    n_batch: int = 2048
    n_ubatch: int = 512
    flash_attn: str = "auto"
    type_k: str = "f16"
    type_v: str = "f16"
    warmup: bool = True
    seed: int = 42

    def validate(self) -> None:
        if self.repetitions < 1:
            raise ValueError("repetitions must be at least 1")
        for name, sizes in (("prompt", self.prompt_sizes), ("generation", self.gen_sizes)):
            if any(n < 0 for n in sizes):
                raise ValueError(f"{name} sizes must be >= 0")
        if not any(self.prompt_sizes) and not any(self.gen_sizes):
            raise ValueError("nothing to run: every prompt and generation size is 0")
        if any(t < 1 for t in self.threads):
            raise ValueError("thread counts must be >= 1")
        if self.n_batch < 1 or self.n_ubatch < 1:
            raise ValueError("n_batch and n_ubatch must be >= 1")


def random_tokens(model: Model, n: int, rng: np.random.Generator) -> list[int]:
    """``n`` random token ids, as llama-bench uses for its prompts."""
    return [int(t) for t in rng.integers(0, model.n_vocab, size=n)]


def pp_once(ctx: Context, tokens: Sequence[int], batch: Batch | None = None) -> Repetition:
    """Decode ``tokens`` from an empty cache in n_batch chunks (logits for the last token only)."""
    n = len(tokens)
    step = ctx.n_batch
    b = batch if batch is not None else Batch(min(step, n))
    ctx.memory.clear()
    ctx.reset_perf()
    t0 = time.perf_counter()
    for i in range(0, n, step):
        chunk = tokens[i : i + step]
        b.clear()
        b.add_sequence(chunk, i, 0, logits_last=i + step >= n)
        ctx.decode(b)
        ctx.synchronize()
    wall = time.perf_counter() - t0
    perf = ctx.perf()
    # a final chunk of one token counts as "eval" in llama.cpp's counters: add both
    return Repetition(wall, perf.t_p_eval_ms + perf.t_eval_ms)


def tg_once(
    ctx: Context, sampler: Sampler, n: int, first_token: int, batch: Batch | None = None
) -> Repetition:
    """``n`` single-token decodes from an empty cache, each followed by greedy sampling."""
    b = batch if batch is not None else Batch(1)
    ctx.memory.clear()
    ctx.reset_perf()
    sampler.reset()
    sampler.reset_perf()
    token = first_token
    t0 = time.perf_counter()
    for pos in range(n):
        b.clear()
        b.add(token, pos, 0, True)
        ctx.decode(b)
        ctx.synchronize()
        token = sampler.sample(ctx, -1)
    wall = time.perf_counter() - t0
    perf = ctx.perf()
    return Repetition(wall, perf.t_eval_ms + perf.t_p_eval_ms, sampler.perf().t_sample_ms)


def _context(model: Model, cfg: BenchConfig, threads: int, n_ctx: int) -> Context:
    params = ContextParams(
        n_ctx=n_ctx,
        n_batch=cfg.n_batch,
        n_ubatch=cfg.n_ubatch,
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=cfg.flash_attn,
        type_k=cfg.type_k,
        type_v=cfg.type_v,
    )
    return Context(model, params)


def run_bench(
    model: Model,
    cfg: BenchConfig,
    *,
    on_result: Callable[[BenchResult], None] | None = None,
    setup: Callable[[Context], None] | None = None,
) -> list[BenchResult]:
    """Run every pp and tg test of ``cfg`` for every thread count; ``on_result`` sees each as it ends.

    ``setup`` is called on each new context (to apply LoRA adapters, say).
    """
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    n_ctx = max([*cfg.prompt_sizes, *cfg.gen_sizes, 16])
    results: list[BenchResult] = []
    for threads in cfg.threads or (default_threads(),):
        with _context(model, cfg, threads, n_ctx) as ctx:
            if setup is not None:
                setup(ctx)
            with Sampler(model).greedy() as sampler:
                for n in cfg.prompt_sizes:
                    if n <= 0:
                        continue
                    res = BenchResult("pp", n, threads, ctx.n_batch, ctx.n_ubatch)
                    tokens = random_tokens(model, n, rng)
                    batch = Batch(min(ctx.n_batch, n))
                    if cfg.warmup:
                        pp_once(ctx, tokens, batch)
                    for _ in range(cfg.repetitions):
                        res.repetitions.append(pp_once(ctx, tokens, batch))
                    results.append(res)
                    if on_result is not None:
                        on_result(res)
                for n in cfg.gen_sizes:
                    if n <= 0:
                        continue
                    res = BenchResult("tg", n, threads, ctx.n_batch, ctx.n_ubatch)
                    first = (
                        model.vocab.bos if model.vocab.bos is not None else random_tokens(model, 1, rng)[0]
                    )
                    batch = Batch(1)
                    if cfg.warmup:
                        tg_once(ctx, sampler, min(n, 8), first, batch)
                    for _ in range(cfg.repetitions):
                        res.repetitions.append(tg_once(ctx, sampler, n, first, batch))
                    results.append(res)
                    if on_result is not None:
                        on_result(res)
    return results


def model_summary(model: Model) -> dict[str, Any]:
    return {
        "path": str(model.path),
        "description": model.description,
        "size_bytes": model.size,
        "n_params": model.n_params,
    }


def _backend_name() -> str:
    from .core.backend import devices

    kinds = {d.type for d in devices()}
    names = [d.name for d in devices() if d.type != "cpu"]
    return ",".join(dict.fromkeys(names)) if names and kinds != {"cpu"} else "CPU"


def format_markdown(model: Model, results: Sequence[BenchResult], *, header: bool = True) -> str:
    """A llama-bench-style markdown table."""
    cols = ["model", "size", "params", "backend", "threads", "test", "t/s", "overhead"]
    lines: list[str] = []
    if header:
        lines.append("| " + " | ".join(cols) + " |")
        lines.append(
            "| " + " | ".join("---:" if c in ("t/s", "overhead", "threads") else "---" for c in cols) + " |"
        )
    size = f"{model.size / 2**20:.2f} MiB"
    params = f"{model.n_params / 1e6:.2f} M"
    backend = _backend_name()
    for r in results:
        tps, sd = r.tokens_per_s()
        ov, ov_sd = r.overhead()
        lines.append(
            f"| {model.description} | {size} | {params} | {backend} | {r.n_threads} | {r.test} "
            f"| {tps:.2f} ± {sd:.2f} | {ov * 100:.2f} % ± {ov_sd * 100:.2f} |"
        )
    return "\n".join(lines)
