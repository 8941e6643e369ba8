"""Quantized KV vs F16 KV: greedy-generation divergence and perplexity, rotation on and off."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .._native.backend import ggml_type_info
from ..core import Batch, Context, ContextParams, Model
from ..core.types import ggml_type_id
from .perplexity import PerplexityResult, perplexity
from .report import kv_bytes

__all__ = [
    "GenerationRun",
    "KVComparison",
    "KVQualityRow",
    "compare_generation",
    "compare_perplexity",
    "greedy_tokens",
]


def greedy_tokens(
    ctx: Context, prompt: Sequence[int], n_predict: int, *, stop_at_eog: bool = True
) -> list[int]:
    """Greedy (argmax) continuation of ``prompt`` from an empty KV cache."""
    if not prompt:
        raise ValueError("empty prompt")
    if len(prompt) + n_predict > ctx.n_ctx:
        raise ValueError(f"prompt ({len(prompt)}) + n_predict ({n_predict}) exceed n_ctx={ctx.n_ctx}")
    ctx.memory.clear()
    step = ctx.n_batch
    batch = Batch(max(1, min(step, len(prompt))))
    for start in range(0, len(prompt), step):
        batch.clear()
        piece = list(prompt[start : start + step])
        batch.add_sequence(piece, start, 0, logits_last=start + step >= len(prompt))
        ctx.decode(batch)
    out: list[int] = []
    pos = len(prompt)
    one = Batch(1)
    vocab = ctx.model.vocab
    for _ in range(n_predict):
        tok = int(np.argmax(ctx.logits(-1)))
        out.append(tok)
        if stop_at_eog and vocab.is_eog(tok):
            break
        one.clear()
        one.add(tok, pos, 0, True)
        ctx.decode(one)
        pos += 1
    return out


@dataclass
class GenerationRun:
    type_k: str
    type_v: str
    rotation: bool
    tokens: list[int]
    text: str
    diverges_at: int | None  # first index where the tokens differ from the reference; None = identical
    kv_bytes: int  # KV cache bytes at the comparison's n_ctx
    seconds: float

    @property
    def label(self) -> str:
        kv = self.type_k if self.type_k == self.type_v else f"{self.type_k}/{self.type_v}"
        return f"{kv} rot={'on' if self.rotation else 'off'}"


@dataclass
class KVComparison:
    prompt: str
    n_prompt: int
    n_ctx: int
    reference: GenerationRun
    runs: list[GenerationRun] = field(default_factory=list)


def _first_diff(a: Sequence[int], b: Sequence[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare_generation(
    model: Model,
    prompt: str,
    *,
    kv_types: Sequence[str] = ("q5_0",),
    rotations: Sequence[bool] = (True, False),
    n_predict: int = 32,
    reference: str = "f16",
    n_ctx: int | None = None,
    n_threads: int | None = None,
    flash_attn: str = "auto",
) -> KVComparison:
    """Greedy generation with ``reference`` KV vs each KV type with rotation on and off.

    Each run reports where its tokens first diverge from the reference's, and its KV bytes.
    """
    tokens = model.tokenize(prompt)
    size = n_ctx or max(256, len(tokens) + n_predict)

    def run(tk: str, rot: bool, ref: list[int] | None) -> GenerationRun:
        params = ContextParams(
            n_ctx=size,
            n_batch=min(size, 2048),
            type_k=tk,
            type_v=tk,
            attn_rotation=rot,
            n_threads=n_threads,
            flash_attn=flash_attn,
        )
        t0 = time.perf_counter()
        with Context(model, params) as ctx:
            out = greedy_tokens(ctx, tokens, n_predict)
        return GenerationRun(
            type_k=tk,
            type_v=tk,
            rotation=rot,
            tokens=out,
            text=model.detokenize(out),
            diverges_at=None if ref is None else _first_diff(ref, out),
            kv_bytes=kv_bytes(model, size, tk),
            seconds=time.perf_counter() - t0,
        )

    ref_run = run(reference, True, None)
    result = KVComparison(prompt, len(tokens), size, ref_run)
    for tk in kv_types:
        for rot in rotations:
            result.runs.append(run(tk, rot, ref_run.tokens))
    return result


@dataclass
class KVQualityRow:
    type_k: str
    type_v: str
    rotation: bool
    ppl: float
    delta_ppl: float  # vs the reference (F16 KV)
    bytes_per_token: int
    result: PerplexityResult


def compare_perplexity(
    model: Model,
    text: str | Sequence[int],
    *,
    kv_types: Sequence[str],
    rotations: Sequence[bool] = (True, False),
    reference: str = "f16",
    chunk_size: int = 512,
    score_from: int | None = None,
    n_threads: int | None = None,
    flash_attn: str = "auto",
    progress: Callable[[str], object] | None = None,
) -> list[KVQualityRow]:
    """Perplexity on ``text`` with the reference KV type, then each type with rotation on and off.

    Unquantized types (f32, bf16) are measured once: attention rotation does not apply to them.
    """
    from .report import kv_type_report

    per_token = {r.type_k: r.bytes_per_token for r in kv_type_report(model, [reference, *kv_types])}

    def one(tk: str, rot: bool) -> PerplexityResult:
        params = ContextParams(
            n_ctx=chunk_size,
            n_batch=chunk_size,
            type_k=tk,
            type_v=tk,
            attn_rotation=rot,
            n_threads=n_threads,
            flash_attn=flash_attn,
        )
        with Context(model, params) as ctx:
            res = perplexity(ctx, text, chunk_size=chunk_size, score_from=score_from)
        if progress is not None:
            progress(f"{tk} rot={'on' if rot else 'off'}: ppl {res.ppl:.4f}")
        return res

    ref = one(reference, True)
    rows = [KVQualityRow(reference, reference, True, ref.ppl, 0.0, per_token[reference], ref)]
    for tk in kv_types:
        # rotation only exists for quantized KV: an unquantized type is measured once
        rots = rotations if ggml_type_info(ggml_type_id(tk)).quantized else list(rotations)[:1]
        for rot in rots:
            res = one(tk, rot)
            rows.append(KVQualityRow(tk, tk, rot, res.ppl, res.ppl - ref.ppl, per_token[tk], res))
    return rows
