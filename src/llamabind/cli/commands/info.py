"""``llamabind info``: the native library, devices and (optionally) a model's metadata."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ...core import backend
from ..common import add_model_args, load_model


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "info",
        help="show the llama.cpp build, devices and model metadata",
        description="Show which llama.cpp libraries are loaded, the devices they see (with memory), "
        "and with -m (or the default model) the model's properties and metadata.",
    )
    add_model_args(p)
    p.add_argument("--no-model", action="store_true", help="only show the library and devices")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    lib = backend.library_info()
    devs: list[dict[str, Any]] = [
        {
            "name": d.name,
            "description": d.description,
            "type": d.type,
            "memory_free": d.memory_free,
            "memory_total": d.memory_total,
        }
        for d in backend.devices()
    ]
    info: dict[str, Any] = {
        "library": lib,
        "system_info": backend.system_info().strip(),
        "supports": {
            "gpu_offload": backend.supports_gpu_offload(),
            "mmap": backend.supports_mmap(),
            "mlock": backend.supports_mlock(),
            "rpc": backend.supports_rpc(),
        },
        "devices": devs,
    }
    if not args.no_model:
        with load_model(args) as m:
            info["model"] = {
                "path": str(m.path),
                "description": m.description,
                "architecture": m.architecture,
                "name": m.name,
                "ftype": m.ftype,
                "size_bytes": m.size,
                "n_params": m.n_params,
                "n_ctx_train": m.n_ctx_train,
                "n_embd": m.n_embd,
                "n_layer": m.n_layer,
                "n_head": m.n_head,
                "n_head_kv": m.n_head_kv,
                "n_layer_nextn": m.n_layer_nextn,
                "n_vocab": m.n_vocab,
                "rope_type": m.rope_type,
                "has_encoder": m.has_encoder,
                "has_decoder": m.has_decoder,
                "is_recurrent": m.is_recurrent,
                "is_hybrid": m.is_hybrid,
                "special_tokens": {k: getattr(m.vocab, k) for k in ("bos", "eos", "eot", "sep", "nl", "pad")},
                "chat_templates": sorted(m.chat_templates()),
                "metadata": {k: v for k, v in m.metadata.items() if len(v) <= 200},
            }
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    print(f"llama.cpp: ggml {lib['ggml_version']} ({lib['ggml_commit']}) from {lib['lib_dir']}")
    print(f"system:    {info['system_info']}")
    print("devices:")
    for d in devs:
        mem = (
            f"{d['memory_free'] / 2**20:.0f}/{d['memory_total'] / 2**20:.0f} MiB free"
            if d["memory_total"]
            else ""
        )
        print(f"  {d['name']:<12} {d['type']:<6} {d['description']} {mem}")
    if "model" in info:
        mi = info["model"]
        print(f"model:     {mi['path']}")
        for key in (
            "description",
            "architecture",
            "name",
            "ftype",
            "size_bytes",
            "n_params",
            "n_ctx_train",
            "n_embd",
            "n_layer",
            "n_head",
            "n_head_kv",
            "n_layer_nextn",
            "n_vocab",
        ):
            print(f"  {key:<14} {mi[key]}")
        print(f"  {'special':<14} {mi['special_tokens']}")
        print(f"  {'templates':<14} {', '.join(mi['chat_templates']) or '(none)'}")
    return 0
