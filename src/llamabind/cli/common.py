"""Flags shared by every subcommand that loads a model, builds a context or samples."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core import ContextParams, LoraAdapter, Model, ModelParams
from ..generation.sampling import SamplingParams

__all__ = [
    "UsageError",
    "add_context_args",
    "add_model_args",
    "add_sampling_args",
    "context_params",
    "load_model",
    "model_params",
    "resolve_model_path",
    "sampling_params",
]


class UsageError(Exception):
    """A bad flag value: exit code 2 with a one-line message."""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return v


positive_int = _positive_int
nonneg_int = _nonneg_int


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "-m",
        "--model",
        metavar="PATH",
        help="GGUF model file (first shard for split models); default: the embedded SmolLM2-135M-Instruct",
    )
    g.add_argument(
        "--hf", metavar="REPO[:QUANT]", help="download from the Hugging Face Hub, e.g. org/repo:Q4_K_M"
    )
    g.add_argument("--hf-file", metavar="FILE", help="exact file in the --hf repository")
    g.add_argument(
        "-ngl",
        "--n-gpu-layers",
        type=int,
        default=None,
        metavar="N",
        help="layers to offload to GPUs/RPC workers (-1: all)",
    )
    g.add_argument(
        "--main-gpu", type=int, default=None, metavar="I", help="GPU for the whole model (split-mode none)"
    )
    g.add_argument(
        "--split-mode",
        choices=["none", "layer", "row", "tensor"],
        default=None,
        help="how to split the model over several devices",
    )
    g.add_argument("--tensor-split", metavar="F,F,…", default=None, help="fraction of the model per device")
    g.add_argument(
        "--rpc", metavar="HOST:PORT[,…]", default=None, help="ggml RPC workers to offload layers to"
    )
    g.add_argument(
        "--override-kv",
        metavar="KEY=TYPE:VALUE",
        action="append",
        default=[],
        help="override model metadata (TYPE: int, float, bool, str); repeatable",
    )
    g.add_argument(
        "--lora", metavar="PATH[:SCALE]", action="append", default=[], help="LoRA adapter; repeatable"
    )
    g.add_argument("--no-mmap", action="store_true", help="read the whole model into memory instead of mmap")
    g.add_argument("--mlock", action="store_true", help="lock the model in RAM")
    g.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's own log lines")


def add_context_args(p: argparse.ArgumentParser, *, n_ctx: int = 4096) -> None:
    g = p.add_argument_group("context")
    g.add_argument(
        "-c",
        "--ctx-size",
        type=_nonneg_int,
        default=n_ctx,
        metavar="N",
        help=f"context size in tokens (0: the model's; default {n_ctx})",
    )
    g.add_argument(
        "-b", "--batch-size", type=_positive_int, default=2048, metavar="N", help="logical batch size"
    )
    g.add_argument(
        "-ub", "--ubatch-size", type=_positive_int, default=512, metavar="N", help="physical batch size"
    )
    g.add_argument(
        "-t", "--threads", type=_positive_int, default=None, metavar="N", help="threads for generation"
    )
    g.add_argument(
        "--threads-batch", type=_positive_int, default=None, metavar="N", help="threads for prompt processing"
    )
    g.add_argument(
        "--kv-type", default=None, metavar="TYPE", help="KV cache type for K and V (f16, q8_0, q4_0, …)"
    )
    g.add_argument("--kv-type-k", default=None, metavar="TYPE", help="KV cache type for K")
    g.add_argument("--kv-type-v", default=None, metavar="TYPE", help="KV cache type for V")
    g.add_argument("--no-attn-rot", action="store_true", help="disable attention rotation for quantized KV")
    g.add_argument("--no-flash-attn", action="store_true", help="disable flash attention")


def add_sampling_args(p: argparse.ArgumentParser, *, temp: float = 0.8) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--temp", type=float, default=temp, help=f"temperature, 0 = greedy (default {temp})")
    g.add_argument("--top-k", type=int, default=40)
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--min-p", type=float, default=0.05)
    g.add_argument("--typical", type=float, default=1.0)
    g.add_argument("--top-n-sigma", type=float, default=-1.0)
    g.add_argument("--xtc-probability", type=float, default=0.0)
    g.add_argument("--xtc-threshold", type=float, default=0.1)
    g.add_argument("--dynatemp-range", type=float, default=0.0)
    g.add_argument("--dynatemp-exp", type=float, default=1.0)
    g.add_argument("--repeat-penalty", type=float, default=1.0)
    g.add_argument("--repeat-last-n", type=int, default=64)
    g.add_argument("--frequency-penalty", type=float, default=0.0)
    g.add_argument("--presence-penalty", type=float, default=0.0)
    g.add_argument("--dry-multiplier", type=float, default=0.0)
    g.add_argument("--dry-base", type=float, default=1.75)
    g.add_argument("--dry-allowed-length", type=int, default=2)
    g.add_argument("--dry-penalty-last-n", type=int, default=-1)
    g.add_argument("--mirostat", type=int, choices=[0, 1, 2], default=0)
    g.add_argument("--mirostat-lr", type=float, default=0.1, help="mirostat eta")
    g.add_argument("--mirostat-ent", type=float, default=5.0, help="mirostat tau")
    g.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")


def _parse_override(text: str) -> tuple[str, int | float | bool | str]:
    key, sep, rest = text.partition("=")
    typ, sep2, value = rest.partition(":")
    if not sep or not sep2 or not key:
        raise UsageError(f"--override-kv {text!r}: expected KEY=TYPE:VALUE")
    try:
        if typ == "int":
            return key, int(value)
        if typ == "float":
            return key, float(value)
        if typ == "bool":
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return key, value.lower() in ("true", "1")
        if typ == "str":
            return key, value
    except ValueError:
        raise UsageError(f"--override-kv {text!r}: {value!r} is not a valid {typ}") from None
    raise UsageError(f"--override-kv {text!r}: TYPE must be int, float, bool or str")


def resolve_model_path(args: argparse.Namespace) -> Path:
    """-m PATH, --hf REPO[:QUANT] (downloaded into the HF cache), or the embedded default model."""
    if getattr(args, "model", None) and getattr(args, "hf", None):
        raise UsageError("give either -m/--model or --hf, not both")
    if getattr(args, "hf", None):
        from ..hub import console_choose, resolve_model

        choose: Callable[[list[str]], str] | None = None
        if sys.stdin.isatty() and sys.stderr.isatty():
            choose = console_choose
        resolved: Any = resolve_model(args.hf, file=getattr(args, "hf_file", None), choose=choose)
        args.resolved_mmproj = getattr(resolved, "mmproj", None)
        return Path(resolved.paths[0])
    if getattr(args, "model", None):
        return Path(os.path.expanduser(args.model))
    from ..default_model import default_model_path

    return default_model_path()


def model_params(
    args: argparse.Namespace, *, vocab_only: bool = False, load_mtp: bool | None = None
) -> ModelParams:
    """How the flags (--n-gpu-layers, --tensor-split, --override-kv, --rpc …) load a model."""
    overrides = dict(_parse_override(o) for o in getattr(args, "override_kv", []) or [])
    tensor_split = None
    if getattr(args, "tensor_split", None):
        try:
            tensor_split = [float(x) for x in args.tensor_split.split(",")]
        except ValueError:
            raise UsageError(
                f"--tensor-split {args.tensor_split!r}: expected comma-separated numbers"
            ) from None
    rpc = [s for s in (getattr(args, "rpc", None) or "").split(",") if s.strip()]
    return ModelParams(
        n_gpu_layers=getattr(args, "n_gpu_layers", None),
        main_gpu=getattr(args, "main_gpu", None),
        split_mode=getattr(args, "split_mode", None),
        tensor_split=tensor_split,
        use_mmap=False if getattr(args, "no_mmap", False) else None,
        use_mlock=True if getattr(args, "mlock", False) else None,
        vocab_only=vocab_only,
        kv_overrides=overrides,
        rpc_servers=rpc,
        load_mtp=load_mtp,
    )


def load_model(args: argparse.Namespace, *, vocab_only: bool = False, load_mtp: bool | None = None) -> Model:
    path = resolve_model_path(args)
    params = model_params(args, vocab_only=vocab_only, load_mtp=load_mtp)
    model = Model(path, params)
    model.cli_loras = []  # type: ignore[attr-defined]
    for spec in getattr(args, "lora", []) or []:
        lpath, _, scale = spec.partition(":")
        try:
            s = float(scale) if scale else 1.0
        except ValueError:
            raise UsageError(f"--lora {spec!r}: bad scale") from None
        model.cli_loras.append((LoraAdapter(model, lpath), s))  # type: ignore[attr-defined]
    return model


def context_params(args: argparse.Namespace, **extra: Any) -> ContextParams:
    kv = getattr(args, "kv_type", None)
    fields: dict[str, Any] = {
        "n_ctx": getattr(args, "ctx_size", 4096),
        "n_batch": getattr(args, "batch_size", 2048),
        "n_ubatch": getattr(args, "ubatch_size", 512),
        "n_threads": getattr(args, "threads", None),
        "n_threads_batch": getattr(args, "threads_batch", None),
        "type_k": getattr(args, "kv_type_k", None) or kv or "f16",
        "type_v": getattr(args, "kv_type_v", None) or kv or "f16",
        "flash_attn": "off" if getattr(args, "no_flash_attn", False) else "auto",
    }
    if getattr(args, "no_attn_rot", False):
        fields["attn_rotation"] = False
    fields.update(extra)
    try:
        p = ContextParams(**fields)
        p.to_native()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return p


def apply_loras(model: Model, ctx: Any) -> None:
    loras = getattr(model, "cli_loras", [])
    if loras:
        ctx.set_loras(loras)


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    sp = SamplingParams(
        temperature=args.temp,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        typical_p=args.typical,
        top_n_sigma=args.top_n_sigma,
        xtc_probability=args.xtc_probability,
        xtc_threshold=args.xtc_threshold,
        dynatemp_range=args.dynatemp_range,
        dynatemp_exponent=args.dynatemp_exp,
        repeat_penalty=args.repeat_penalty,
        repeat_last_n=args.repeat_last_n,
        frequency_penalty=args.frequency_penalty,
        presence_penalty=args.presence_penalty,
        dry_multiplier=args.dry_multiplier,
        dry_base=args.dry_base,
        dry_allowed_length=args.dry_allowed_length,
        dry_penalty_last_n=args.dry_penalty_last_n,
        mirostat=args.mirostat,
        mirostat_eta=args.mirostat_lr,
        mirostat_tau=args.mirostat_ent,
        seed=args.seed,
    )
    try:
        sp.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return sp
