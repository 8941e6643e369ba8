"""Typed model quantization over ``llama_model_quantize``.

Every input is checked before any work starts (``validate``). Then a native dry run computes the
exact per-tensor plan (``plan``), which decides the two things llama.cpp would otherwise only
discover halfway through writing the output: an already-quantized input without
``allow_requantize``, and low-bit types that need an importance matrix.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from .._native import quantize as nquant
from ..errors import QuantizeError
from .params import PathLike, ProgressCallback, QuantizeParams, QuantizeResult
from .plan import PlanCollector, estimate_file_bytes, plan_problems
from .validate import Checked, validate

__all__ = ["quantize"]

_FAILED = re.compile(r"failed to quantize: (.*)")


def _run(
    c: Checked,
    params: QuantizeParams,
    *,
    dry_run: bool,
    progress: ProgressCallback | None,
    total: int | None,
) -> tuple[int, PlanCollector]:
    collector = PlanCollector(progress, total)
    out = str(c.dst)
    keep_split = params.keep_split and len(c.headers) > 1  # one input file: one output file
    if keep_split and out.endswith(".gguf"):
        out = out[: -len(".gguf")]  # llama.cpp appends -0000i-of-0000n.gguf itself
    rc = nquant.model_quantize(
        str(c.src),
        out,
        ftype=c.ftype.ftype,
        nthread=c.nthread,
        output_tensor_type=c.output_type,
        token_embedding_type=c.embd_type,
        allow_requantize=params.allow_requantize,
        quantize_output_tensor=params.quantize_output_tensor,
        only_copy=c.ftype.only_copy,
        pure=params.pure,
        keep_split=keep_split,
        dry_run=dry_run,
        imatrix=c.imatrix,
        kv_overrides=c.kv,
        tt_overrides=c.tt,
        prune_layers=c.prune,
        on_line=collector,
    )
    return rc, collector


def _failure(collector: PlanCollector, what: str) -> QuantizeError:
    reason = next((m.group(1) for e in collector.errors if (m := _FAILED.search(e))), None)
    if reason is None:
        reason = collector.errors[-1] if collector.errors else "see the 'llamabind.native' log"
    return QuantizeError(f"{what}: {reason.strip()}")


def _output_files(c: Checked, params: QuantizeParams) -> list[Path]:
    if params.keep_split and len(c.headers) > 1:
        n = len(c.headers)
        # llama.cpp names shards after the output path without its .gguf suffix
        base = str(c.dst)
        base = base[: -len(".gguf")] if base.endswith(".gguf") else base
        return [Path(f"{base}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1)]
    return [c.dst]


def quantize(
    src: PathLike,
    dst: PathLike | None = None,
    params: QuantizeParams | None = None,
    *,
    progress: ProgressCallback | None = None,
    **overrides: Any,
) -> QuantizeResult:
    """Quantize the GGUF model ``src`` into ``dst`` (``QuantizeParams`` fields may be given as keywords).

    Raises QuantizeError for every bad input before anything is written. With ``dry_run`` the
    result reports the per-tensor plan and the output size without writing (``dst`` may be None).
    """
    params = params or QuantizeParams()
    if overrides:
        params = params.replace(**overrides)
    t0 = time.perf_counter()
    c = validate(src, dst, params)
    rc, plan_log = _run(c, params, dry_run=True, progress=progress if params.dry_run else None, total=None)
    if plan_log.callback_error is not None:
        raise plan_log.callback_error
    if rc != 0:
        raise _failure(plan_log, f"cannot quantize {c.src.name} to {c.ftype.name}")
    plan = plan_log.rows
    if not plan:
        raise QuantizeError("llama.cpp planned no tensors (is the input a model GGUF?)")
    problems = plan_problems(c, plan, params)
    if problems and not params.dry_run:
        raise QuantizeError(problems[0])
    original = sum(t.src_bytes for t in plan)
    if params.dry_run:
        return QuantizeResult(
            src=c.src,
            dst=None,
            files=[],
            file_type=c.ftype,
            tensors=plan,
            original_bytes=original,
            tensor_bytes=sum(t.dst_bytes for t in plan),
            file_bytes=estimate_file_bytes(c, plan, params.keep_split),
            dry_run=True,
            seconds=time.perf_counter() - t0,
            warnings=plan_log.warnings,
            problems=problems,
        )
    rc, done = _run(c, params, dry_run=False, progress=progress, total=len(plan))
    files = _output_files(c, params)
    if rc != 0:
        for f in files:
            if f.exists():
                f.unlink()
        raise _failure(done, f"quantizing {c.src.name} to {c.ftype.name} failed")
    if done.callback_error is not None:
        raise done.callback_error
    rows = done.rows or plan
    return QuantizeResult(
        src=c.src,
        dst=c.dst,
        files=files,
        file_type=c.ftype,
        tensors=rows,
        original_bytes=sum(t.src_bytes for t in rows),
        tensor_bytes=sum(t.dst_bytes for t in rows),
        file_bytes=sum(f.stat().st_size for f in files if f.exists()),
        dry_run=False,
        seconds=time.perf_counter() - t0,
        warnings=done.warnings,
    )
