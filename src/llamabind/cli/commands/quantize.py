"""``llamabind quantize``: quantize a GGUF model (every llama.cpp type, overrides, imatrix, dry runs)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from ...errors import QuantizeError
from ...quantize import QuantizeParams, QuantizeResult, default_output_path, file_type, file_types, quantize
from ...quantize.types import FileType
from ..common import UsageError, _parse_override, nonneg_int

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "quantize",
        help="quantize a GGUF model (Q4_K_M, Q8_0, IQ4_XS, …)",
        description="Quantize INPUT to TYPE, writing OUTPUT (default: INPUT's directory, "
        "name-TYPE.gguf). Every input is checked before any work starts. --list-types shows every "
        "type with its bits per weight.",
        usage="llamabind quantize INPUT [OUTPUT] TYPE [options] | --list-types",
    )
    p.add_argument("args", nargs="*", metavar="INPUT OUTPUT|TYPE [TYPE]", help=argparse.SUPPRESS)
    p.add_argument("--list-types", action="store_true", help="list the quantization types and exit")
    p.add_argument("--dry-run", action="store_true", help="report the per-tensor plan and output size only")
    p.add_argument(
        "--allow-requantize", action="store_true", help="allow quantizing already-quantized tensors"
    )
    p.add_argument("--leave-output-tensor", action="store_true", help="do not quantize output.weight")
    p.add_argument("--output-tensor-type", metavar="TYPE", default=None, help="ggml type for output.weight")
    p.add_argument(
        "--token-embedding-type", metavar="TYPE", default=None, help="ggml type for token_embd.weight"
    )
    p.add_argument(
        "--tensor-type",
        metavar="PATTERN=TYPE",
        action="append",
        default=[],
        help="ggml type for tensors whose name matches the regex PATTERN; repeatable",
    )
    p.add_argument(
        "--prune-layers", metavar="A-B[,C…]", default=None, help="drop these layers (e.g. 20-23,27)"
    )
    p.add_argument(
        "--imatrix", metavar="FILE", default=None, help="importance matrix (imatrix GGUF or legacy .dat)"
    )
    p.add_argument("--pure", action="store_true", help="every tensor at the base type (no K-quant mixes)")
    p.add_argument("--keep-split", action="store_true", help="write one output shard per input shard")
    p.add_argument(
        "--override-kv",
        metavar="KEY=TYPE:VALUE",
        action="append",
        default=[],
        help="set output metadata (TYPE: int, float, bool, str); repeatable",
    )
    p.add_argument(
        "--nthreads", type=nonneg_int, default=None, metavar="N", help="threads (0: all hardware threads)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's own log lines")
    p.set_defaults(func=run)


def parse_layers(text: str) -> list[int]:
    """``"20-23,27"`` → ``[20, 21, 22, 23, 27]``."""
    out: list[int] = []
    for part in text.split(","):
        m = _RANGE.match(part)
        if not m:
            raise UsageError(f"--prune-layers {text!r}: expected layer numbers or ranges like 20-23,27")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        if b < a:
            raise UsageError(f"--prune-layers {text!r}: range {a}-{b} is backwards")
        out.extend(range(a, b + 1))
    return out


def _type(name: str) -> FileType | None:
    try:
        return file_type(name)
    except QuantizeError:
        return None


def _list_types(as_json: bool) -> int:
    types = file_types()
    if as_json:
        rows = [
            {
                "name": t.name,
                "ftype": t.ftype,
                "base_type": t.base_type,
                "bpw": round(t.bpw, 4),
                "needs_imatrix": t.needs_imatrix,
                "alias_of": t.alias_of,
                "description": t.description,
            }
            for t in types
        ]
        print(json.dumps(rows))
        return 0
    print(f"{'TYPE':<10} {'ftype':>5} {'bpw':>7}  {'imatrix':<8} description")
    for t in types:
        need = "required" if t.needs_imatrix else ""
        print(f"{t.name:<10} {t.ftype:>5} {t.bpw:>7.4f}  {need:<8} {t.description}")
    return 0


def _positionals(args: argparse.Namespace) -> tuple[Path, Path | None, FileType]:
    pos: list[str] = args.args
    if len(pos) == 2:
        ft = _type(pos[1])
        if ft is None:
            raise UsageError(f"unknown quantization type {pos[1]!r} (llamabind quantize --list-types)")
        return Path(pos[0]), None, ft
    if len(pos) == 3:
        ft = _type(pos[2])
        if ft is None:
            raise UsageError(f"unknown quantization type {pos[2]!r} (llamabind quantize --list-types)")
        return Path(pos[0]), Path(pos[1]), ft
    raise UsageError("expected INPUT [OUTPUT] TYPE (or --list-types)")


def _tensor_types(specs: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for spec in specs:
        pattern, sep, type_name = spec.rpartition("=")
        if not sep or not pattern or not type_name:
            raise UsageError(f"--tensor-type {spec!r}: expected PATTERN=TYPE")
        out.append((pattern, type_name))
    return out


def _summary(res: QuantizeResult) -> str:
    mib = 1024 * 1024
    counts = ", ".join(f"{k} {v}" for k, v in res.type_counts().items())
    what = "would write" if res.dry_run else f"wrote {', '.join(str(f) for f in res.files)}:"
    return (
        f"{res.file_type.name}: {what} {res.file_bytes / mib:.2f} MiB "
        f"({res.original_bytes / mib:.2f} MiB -> {res.tensor_bytes / mib:.2f} MiB of tensors, "
        f"{res.bpw:.2f} bpw) in {res.seconds:.1f} s; tensors: {counts}"
    )


def run(args: argparse.Namespace) -> int:
    if args.list_types:
        return _list_types(args.json)
    src, dst, ft = _positionals(args)
    if dst is None and not args.dry_run:
        dst = default_output_path(src, ft)
    params = QuantizeParams(
        ftype=ft,
        nthread=args.nthreads,
        allow_requantize=args.allow_requantize,
        quantize_output_tensor=not args.leave_output_tensor,
        output_tensor_type=args.output_tensor_type,
        token_embedding_type=args.token_embedding_type,
        pure=args.pure,
        keep_split=args.keep_split,
        imatrix=args.imatrix,
        kv_overrides=dict(_parse_override(o) for o in args.override_kv),
        tensor_type_overrides=_tensor_types(args.tensor_type),
        prune_layers=parse_layers(args.prune_layers) if args.prune_layers else (),
        dry_run=args.dry_run,
    )
    bar: Any = None

    def progress(i: int, n: int, name: str) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm  # type: ignore[import-untyped]

            bar = tqdm(total=n, unit="tensor", desc=f"quantizing to {ft.name}", file=sys.stderr, leave=False)
        bar.set_postfix_str(name, refresh=False)
        bar.update(i - bar.n)

    show = not (args.no_progress or args.json or args.dry_run) and sys.stderr.isatty()
    try:
        res = quantize(src, dst, params, progress=progress if show else None)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(
            json.dumps(
                {
                    "type": res.file_type.name,
                    "dry_run": res.dry_run,
                    "files": [str(f) for f in res.files],
                    "file_bytes": res.file_bytes,
                    "original_bytes": res.original_bytes,
                    "tensor_bytes": res.tensor_bytes,
                    "bpw": round(res.bpw, 4),
                    "seconds": round(res.seconds, 3),
                    "type_counts": res.type_counts(),
                    "problems": res.problems,
                    "tensors": [
                        {
                            "name": t.name,
                            "shape": list(t.shape),
                            "type": t.dst_type,
                            "from": t.src_type,
                            "bytes": t.dst_bytes,
                        }
                        for t in res.tensors
                    ],
                }
            )
        )
        return 0
    if res.dry_run:
        for t in res.tensors:
            arrow = f"{t.src_type} -> {t.dst_type}" if t.quantized else t.dst_type
            print(f"{t.name:<40} {list(t.shape)!s:<18} {arrow:<16} {t.dst_bytes / 1024 / 1024:9.3f} MiB")
        for problem in res.problems:
            print(f"note: {problem}", file=sys.stderr)
    print(_summary(res))
    return 0
