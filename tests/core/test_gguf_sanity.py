"""Metadata that would abort llama.cpp's loader (GGML_ASSERT) is refused first, with ModelLoadError."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gguf import GGUFValueType

from llamabind.core.gguf_sanity import check_model_metadata
from llamabind.gguf_tools._io import KVEntry
from tests.helpers.fixtures_gguf import build_metadata_variant, smollm2_q4_path

KV = list[KVEntry]


def _set(key: str, value: Any, vtype: GGUFValueType = GGUFValueType.UINT32) -> Callable[[KV], KV]:
    def mutate(kv: KV) -> KV:
        return [e for e in kv if e.key != key] + [KVEntry(key, value, vtype)]

    return mutate


def _then(*fs: Callable[[KV], KV]) -> Callable[[KV], KV]:
    def mutate(kv: KV) -> KV:
        for f in fs:
            kv = f(kv)
        return kv

    return mutate


def _edit_array(key: str, edit: Callable[[list[Any]], list[Any]]) -> Callable[[KV], KV]:
    def mutate(kv: KV) -> KV:
        return [KVEntry(e.key, edit(list(e.value)), e.vtype, e.sub_type) if e.key == key else e for e in kv]

    return mutate


def _dup_token(tokens: list[Any]) -> list[Any]:
    tokens[200] = tokens[199]
    return tokens


def _empty_two(tokens: list[Any]) -> list[Any]:
    tokens[300] = tokens[301] = b""
    return tokens


# name -> (mutation, kv_overrides, expected message fragment)
CASES: dict[str, tuple[Callable[[KV], KV], dict[str, Any], str]] = {
    "zero-layers": (_set("llama.block_count", 0), {}, "llama.block_count=0 is out of range"),
    "many-layers": (_set("llama.block_count", 100_000), {}, "llama.block_count=100000 is out of range"),
    "many-experts": (
        _then(_set("llama.expert_count", 4096), _set("llama.expert_used_count", 2)),
        {},
        "llama.expert_count=4096 is out of range",
    ),
    "used-over-count": (
        _then(_set("llama.expert_count", 4), _set("llama.expert_used_count", 8)),
        {},
        "llama.expert_used_count=8 is out of range (1..llama.expert_count=4)",
    ),
    "used-without-experts": (
        _set("llama.expert_used_count", 2),
        {},
        "llama.expert_used_count=2 but the model",
    ),
    "dup-token": (
        _edit_array("tokenizer.ggml.tokens", _dup_token),
        {},
        "tokenizer.ggml.tokens holds the token",
    ),
    "nul-in-token": (  # llama.cpp reads "t\0x" as "t" (a C string): the same token as id 299
        _edit_array("tokenizer.ggml.tokens", lambda a: [*a[:300], a[299] + b"\0x", *a[301:]]),
        {},
        "twice (ids 299 and 300, up to its NUL byte)",
    ),
    "negative-epsilon": (
        _set("llama.attention.layer_norm_rms_epsilon", -1.0, GGUFValueType.FLOAT32),
        {},
        "llama.attention.layer_norm_rms_epsilon=-1.0 must be a number >= 0",
    ),
    "override-nan-epsilon": (
        lambda kv: kv,
        {"llama.attention.layer_norm_rms_epsilon": float("nan")},
        "llama.attention.layer_norm_rms_epsilon=nan must be a number >= 0",
    ),
    "short-token-type": (
        _edit_array("tokenizer.ggml.token_type", lambda a: a[:-1]),
        {},
        "tokenizer.ggml.token_type has 49151 entries but tokenizer.ggml.tokens has 49152",
    ),
    "override-zero-layers": (lambda kv: kv, {"llama.block_count": 0}, "llama.block_count=0 is out of range"),
    "override-bad-experts": (
        lambda kv: kv,
        {"llama.expert_count": 2, "llama.expert_used_count": 3},
        "llama.expert_used_count=3 is out of range",
    ),
}

_LOADER = """
import json, sys
import llamabind as lb
out = {}
for name, path, overrides in json.loads(sys.argv[1]):
    try:
        lb.Model(path, kv_overrides=overrides, vocab_only=True).close()
        out[name] = ["loaded", ""]
    except Exception as exc:
        out[name] = [type(exc).__name__, str(exc)]
print(json.dumps(out))
"""


def test_bad_metadata_is_refused_before_llama_cpp_loads(tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("sanity")
    jobs = [(name, str(build_metadata_variant(d, name, f)), ov) for name, (f, ov, _) in CASES.items()]
    # a subprocess: a case that slipped through would abort llama.cpp's loader, not pytest
    proc = subprocess.run(
        [sys.executable, "-c", _LOADER, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (_, _, fragment) in CASES.items():
        kind, message = results[name]
        assert kind == "ModelLoadError", (name, kind, message)
        assert fragment in message, (name, message)
        assert str(d) in message, (name, message)  # names the file


def test_sound_metadata_passes_and_is_cheap(tmp_path: Path) -> None:
    model = smollm2_q4_path()
    check_model_metadata(model)  # the shipped model passes
    check_model_metadata(model, {"llama.block_count": 30, "llama.expert_count": 0})
    t0 = time.perf_counter()
    check_model_metadata(model)
    assert time.perf_counter() - t0 < 2.0  # header + vocabulary only, no tensor data
    # empty tokens are "[EMPTY_<id>]" to llama.cpp, not duplicates of each other
    empties = build_metadata_variant(tmp_path, "empties", _edit_array("tokenizer.ggml.tokens", _empty_two))
    check_model_metadata(empties)
    # a file the reader cannot parse is left for llama.cpp to report
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(model.read_bytes()[:4096])
    check_model_metadata(broken)


def test_cli_info_refuses_zero_layers_override() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llamabind", "info", "--override-kv", "llama.block_count=int:0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "llama.block_count=0 is out of range" in lines[0]


def test_header_walk_keeps_the_vocabulary_it_steps_over(tmp_path: Path) -> None:
    """``read_header(keep=...)`` collects a string array in the walk that parses the header: the
    same items a later ``array()`` read gives, the last of a repeated key, nothing for other types."""
    from llamabind.core.gguf_file import read_header

    model = smollm2_q4_path()
    kept = read_header(model, keep=("tokenizer.ggml.tokens", "tokenizer.ggml.token_type"))
    plain = read_header(model)
    assert set(kept._cache) == {"tokenizer.ggml.tokens"}  # token_type holds integers: read on demand
    tokens = kept.array("tokenizer.ggml.tokens")
    assert len(tokens) == 49152 and tokens == plain.array("tokenizer.ggml.tokens")
    assert kept.array("tokenizer.ggml.token_type") == plain.array("tokenizer.ggml.token_type")
    twice = build_metadata_variant(
        tmp_path,
        "twice",
        lambda kv: [
            *kv,
            KVEntry("tokenizer.ggml.tokens", [b"a", b"b"], GGUFValueType.ARRAY, GGUFValueType.STRING),
        ],
    )
    assert read_header(twice, keep=("tokenizer.ggml.tokens",)).array("tokenizer.ggml.tokens") == [b"a", b"b"]
