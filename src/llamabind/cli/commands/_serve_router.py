"""``llamabind serve`` as a router over many models: ``--models-dir``, ``--models-preset``,
``--models-max`` and ``--models-ttl``, and the model entries they (and ``-m``) describe."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..common import UsageError, positive_int

__all__ = ["add_router_args", "is_router", "router_entries"]


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return v


def add_router_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "many models (router)",
        "serve several models by the request's 'model' field, each loaded on first use",
    )
    g.add_argument(
        "--models-dir",
        metavar="DIR",
        help="serve every GGUF in DIR and its subdirectories (split models by their first shard; an "
        "mmproj-*.gguf beside a model is its projector)",
    )
    g.add_argument(
        "--models-preset",
        metavar="FILE",
        help="TOML file with one [table] per model: path or hf, alias, ctx_size, parallel, "
        "chat_template, mmproj, draft, kv_type, lora, role, ttl, n_gpu_layers",
    )
    g.add_argument(
        "--models-max",
        type=positive_int,
        default=None,
        metavar="N",
        help="models loaded at once; loading another unloads the least recently used idle one",
    )
    g.add_argument(
        "--models-ttl",
        type=_seconds,
        default=None,
        metavar="S",
        help="unload a model idle for S seconds (default: never; a preset's ttl wins)",
    )


def is_router(args: argparse.Namespace) -> bool:
    return bool(args.models_dir or args.models_preset)


def _loras(specs: list[str]) -> tuple[tuple[str, float], ...]:
    out = []
    for spec in specs:
        path, _, scale = spec.partition(":")
        try:
            out.append((path, float(scale) if scale else 1.0))
        except ValueError:
            raise UsageError(f"--lora {spec!r}: bad scale") from None
    return tuple(out)


def router_entries(args: argparse.Namespace, cli_path: Path | None, mmproj: str | None) -> list[Any]:
    """The router's models: the preset's, then the directory's (a file a preset already serves is
    not listed twice), then ``-m``'s (``cli_path``, loaded at startup) with the model flags."""
    from ...server.model_registry import (
        ModelEntry,
        PresetError,
        check_unique_names,
        parse_presets,
        scan_models_dir,
    )

    entries: list[ModelEntry] = []
    if args.models_preset:
        try:
            entries += parse_presets(args.models_preset)
        except PresetError as exc:
            raise UsageError(f"--models-preset {exc}") from None
        except OSError as exc:
            raise UsageError(f"--models-preset {args.models_preset}: {exc}") from None
    if args.models_dir:
        try:
            found = scan_models_dir(args.models_dir)
        except ValueError as exc:
            raise UsageError(f"--models-dir: {exc}") from None
        served = {e.path.resolve() for e in entries if e.path is not None}
        entries += [e for e in found if e.path is None or e.path.resolve() not in served]
    if cli_path is not None:
        resolved = cli_path.resolve()
        entries = [e for e in entries if e.path is None or e.path.resolve() != resolved]
        entries.insert(
            0,
            ModelEntry(
                name=args.model_alias or cli_path.stem,
                path=cli_path,
                chat_template=args.chat_template,
                chat_template_file=args.chat_template_file,
                mmproj=mmproj,
                draft=str(Path(args.draft).expanduser()) if args.draft else None,
                loras=_loras(list(args.lora or [])),
                source="cli",
            ),
        )
    if not entries:
        raise UsageError("no models found: --models-dir holds no .gguf file")
    try:
        check_unique_names(entries)
    except ValueError as exc:
        raise UsageError(f"two models share a name: {str(exc).split(': ', 1)[-1]}") from None
    return entries
