"""Core benchmark: llamabind vs llama-cpp-python's ``Llama`` on the same model, threads and library.

pp N: a random prompt of N tokens decoded in n_batch chunks, logits for the last token only.
tg N: N single-token decodes from an empty cache, each followed by greedy sampling.

llamabind runs the loops of :mod:`llamabind.bench` (the same code as ``llamabind bench``) and
reports its Python overhead (1 - llama.cpp's own decode time from its perf counters / wall time).
llama-cpp-python runs its own eval loop: ``Llama.eval(tokens)`` for pp and ``Llama.generate``
(temp 0: greedy) for tg. Both share one process and therefore one libllama; their repetitions are
interleaved (alternating which goes first) so that load from other processes hits both alike.

    .venv/bin/python benchmarks/bench_core.py -p 512 -n 128 -r 5
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import llamabind as lb
from llamabind.bench import BenchResult, Repetition, pp_once, random_tokens, tg_once
from llamabind.core.backend import library_info


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _lcp_model(path: str, n_ctx: int, n_batch: int, n_ubatch: int, threads: int, flash_attn: bool) -> Any:
    from llama_cpp import Llama

    import lcp_kernels

    exec(lcp_kernels.source(), {})  # the same CPU kernels as llamabind (no AMX repacking on AMX builds)
    return Llama(
        model_path=path,
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_ubatch=n_ubatch,
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=flash_attn,
        n_gpu_layers=0,
        verbose=False,
    )


def _lcp_pp(llm: Any, tokens: list[int]) -> float:
    import llama_cpp

    llm.reset()
    t0 = time.perf_counter()
    llm.eval(tokens)
    llama_cpp.llama_synchronize(llm.ctx)
    return time.perf_counter() - t0


def _lcp_tg(llm: Any, n: int, first: int) -> float:
    llm.reset()
    t0 = time.perf_counter()
    gen = llm.generate([first], temp=0.0, reset=True)
    out = list(itertools.islice(gen, n))
    gen.close()
    wall = time.perf_counter() - t0
    assert len(out) == n
    return wall


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="GGUF model (default: the embedded SmolLM2-135M)")
    ap.add_argument("-p", "--n-prompt", type=_ints, default=[512])
    ap.add_argument("-n", "--n-gen", type=_ints, default=[128])
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("-t", "--threads", type=int, default=lb.default_threads())
    ap.add_argument("-b", "--batch-size", type=int, default=2048)
    ap.add_argument("-ub", "--ubatch-size", type=int, default=512)
    ap.add_argument("-fa", "--flash-attn", choices=["on", "off"], default="off")
    ap.add_argument("--no-lcp", action="store_true", help="skip the llama-cpp-python comparison")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    path = str(args.model or lb.default_model_path())
    n_ctx = max([*args.n_prompt, *args.n_gen, 16])
    model = lb.Model(path)
    ctx = lb.Context(
        model,
        n_ctx=n_ctx,
        n_batch=args.batch_size,
        n_ubatch=args.ubatch_size,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        flash_attn=args.flash_attn,
    )
    sampler = lb.Sampler(model).greedy()
    llm = None
    if not args.no_lcp:
        llm = _lcp_model(
            path, n_ctx, args.batch_size, args.ubatch_size, args.threads, args.flash_attn == "on"
        )
    rng = np.random.default_rng(42)
    first = model.vocab.bos if model.vocab.bos is not None else 0

    rows: list[dict[str, Any]] = []
    tests = [("pp", n) for n in args.n_prompt if n > 0] + [("tg", n) for n in args.n_gen if n > 0]
    for kind, n in tests:
        res = BenchResult(kind, n, args.threads, ctx.n_batch, ctx.n_ubatch)  # type: ignore[arg-type]
        lcp_walls: list[float] = []
        if kind == "pp":
            tokens = random_tokens(model, n, rng)
            batch = lb.Batch(min(ctx.n_batch, n))
            run_lb: Callable[[], Repetition] = functools.partial(pp_once, ctx, tokens, batch)
            run_lcp: Callable[[], float] = functools.partial(_lcp_pp, llm, tokens)
        else:
            batch = lb.Batch(1)
            run_lb = functools.partial(tg_once, ctx, sampler, n, first, batch)
            run_lcp = functools.partial(_lcp_tg, llm, n, first)
        run_lb()  # warm-up
        if llm is not None:
            run_lcp()
        for rep in range(args.repetitions):
            order = (0, 1) if rep % 2 == 0 else (1, 0)
            for which in order:
                if which == 0:
                    res.repetitions.append(run_lb())
                elif llm is not None:
                    lcp_walls.append(run_lcp())
        d = res.to_dict()
        if lcp_walls:
            lcp_tps = [n / w for w in lcp_walls]
            mean, std = _stats(lcp_tps)
            d["llama_cpp_python_tokens_per_s"] = {"mean": mean, "std": std}
            d["ratio_vs_llama_cpp_python"] = d["tokens_per_s"]["mean"] / mean
        rows.append(d)
        if not args.json:
            print(f"done {res.test}", file=sys.stderr, flush=True)

    info = {
        "model": {"path": path, "description": model.description, "n_params": model.n_params},
        "library": library_info(),
        "threads": args.threads,
        "n_ctx": ctx.n_ctx,
        "flash_attn": args.flash_attn,
        "repetitions": args.repetitions,
        "loadavg_end": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps({"info": info, "results": rows}, indent=2))
    else:
        print(
            f"model: {model.description} ({path}); threads {args.threads}; n_batch {ctx.n_batch}; "
            f"flash_attn {args.flash_attn}; ggml {info['library']['ggml_version']} "
            f"({info['library']['ggml_commit']}); {args.repetitions} repetitions; "
            f"load average at the end {info['loadavg_end'][0]:.2f}"
        )
        print()
        print(
            "| test | llamabind t/s | Python overhead | overhead excl. sampling | llama.cpp own t/s "
            "| llama-cpp-python t/s | llamabind / llama-cpp-python |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for d in rows:
            lcp = d.get("llama_cpp_python_tokens_per_s")
            lcp_text = f"{lcp['mean']:.2f} ± {lcp['std']:.2f}" if lcp else "-"
            ratio = d.get("ratio_vs_llama_cpp_python", math.nan)
            print(
                f"| {d['test']} | {d['tokens_per_s']['mean']:.2f} ± {d['tokens_per_s']['std']:.2f} "
                f"| {d['overhead']['mean'] * 100:.2f} % ± {d['overhead']['std'] * 100:.2f} "
                f"| {d['overhead_excl_sampling']['mean'] * 100:.2f} % "
                f"| {d['native_tokens_per_s']['mean']:.2f} "
                f"| {lcp_text} | {ratio:.3f} |"
            )
    sampler.close()
    ctx.close()
    model.close()
    if llm is not None:
        llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
