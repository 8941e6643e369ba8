"""Split/merge (llama.cpp gguf-split layout) and F16 dequantization with the gguf package."""

from __future__ import annotations

import filecmp
import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from gguf.constants import GGMLQuantizationType
from gguf.quants import dequantize

from llamabind.errors import LlamabindError, ModelLoadError
from llamabind.gguf_tools import (
    GGUFToolError,
    dequantize_to_f16,
    merge_gguf,
    parse_size,
    read_metadata,
    shard_name,
    shard_paths,
    split_gguf,
)
from llamabind.gguf_tools._io import kv_entries, open_gguf
from tests.helpers.fixtures_gguf import build_f16_smollm2, build_split_smollm2, smollm2_q4_path


@pytest.fixture(scope="module")
def q4() -> Path:
    try:
        return smollm2_q4_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def shards(q4: Path, fixture_dir: Path) -> list[Path]:
    return build_split_smollm2(fixture_dir, max_tensors=100)


@pytest.fixture(scope="module")
def f16(q4: Path, fixture_dir: Path) -> Path:
    return build_f16_smollm2(fixture_dir)


@functools.lru_cache(maxsize=16)
def _reader(path: Path) -> GGUFReader:
    # parsing SmolLM2's 49k-token vocabulary takes seconds: parse each file once per module
    return GGUFReader(path)


def _kv(path: Path) -> list[tuple[str, Any, GGUFValueType, GGUFValueType | None]]:
    return [(e.key, e.value, e.vtype, e.sub_type) for e in kv_entries(open_gguf(path))]


def _field(reader: GGUFReader, key: str) -> tuple[Any, GGUFValueType]:
    f = reader.get_field(key)
    assert f is not None, key
    return f.contents(), f.types[0]


# --- split ------------------------------------------------------------------------------------


def test_split_shard_names_and_split_metadata(q4: Path, shards: list[Path]) -> None:
    src = _reader(q4)
    n = len(src.tensors)
    assert n == 272
    assert [p.name for p in shards] == [shard_name(q4.stem, i, 3) for i in range(3)]
    assert shards[0].name == f"{q4.stem}-00001-of-00003.gguf"
    counts = []
    for i, p in enumerate(shards):
        r = _reader(p)
        assert _field(r, "split.no") == (i, GGUFValueType.UINT16)
        assert _field(r, "split.count") == (3, GGUFValueType.UINT16)
        assert _field(r, "split.tensors.count") == (n, GGUFValueType.INT32)
        counts.append(len(r.tensors))
        keys = [k for k in r.fields if not k.startswith("GGUF.")]
        if i == 0:
            # all model metadata in the first shard, split keys after it
            src_keys = [k for k in src.fields if not k.startswith("GGUF.")]
            assert keys == [*src_keys, "split.no", "split.count", "split.tensors.count"]
        else:
            assert keys == ["split.no", "split.count", "split.tensors.count"]
    assert counts == [100, 100, 72]
    names = [t.name for p in shards for t in _reader(p).tensors]
    assert names == [t.name for t in src.tensors]


def test_split_then_merge_is_identical(q4: Path, shards: list[Path], tmp_path: Path) -> None:
    merged = merge_gguf(shards, tmp_path / "merged.gguf")  # the explicit list of shards
    assert merged == tmp_path / "merged.gguf"
    a, b = _reader(q4), _reader(merged)
    assert _kv(q4) == _kv(merged)
    assert [(t.name, t.tensor_type, t.shape.tolist()) for t in a.tensors] == [
        (t.name, t.tensor_type, t.shape.tolist()) for t in b.tensors
    ]
    for ta, tb in zip(a.tensors, b.tensors, strict=True):
        assert ta.data.tobytes() == tb.data.tobytes(), ta.name
    # the shipped file is laid out canonically, so the merge reproduces it byte for byte
    assert filecmp.cmp(q4, merged, shallow=False)


def test_split_by_size(q4: Path, tmp_path: Path) -> None:
    paths = split_gguf(q4, tmp_path / "s" / "smol.gguf", max_size="20M")
    assert len(paths) > 2
    assert all(p.parent == tmp_path / "s" and p.name.startswith("smol-0000") for p in paths)
    for p in paths:
        r = GGUFReader(p)
        total = sum((int(t.n_bytes) + 31) // 32 * 32 for t in r.tensors)
        assert total <= 20_000_000 or len(r.tensors) == 1
    merged = merge_gguf(paths[0], tmp_path / "m.gguf")  # the others found from the first shard's name
    assert filecmp.cmp(q4, merged, shallow=False)


def test_split_metadata_only_first_shard(q4: Path, fixture_dir: Path) -> None:
    paths = build_split_smollm2(fixture_dir, max_tensors=150, metadata_only_first=True)
    assert len(paths) == 3
    assert len(GGUFReader(paths[0]).tensors) == 0
    assert read_metadata(paths[0])["general.architecture"] == "llama"
    assert [len(GGUFReader(p).tensors) for p in paths[1:]] == [150, 122]


def test_split_arguments(q4: Path, tmp_path: Path) -> None:
    with pytest.raises(GGUFToolError, match="max_tensors or max_size"):
        split_gguf(q4, tmp_path / "x")
    with pytest.raises(GGUFToolError, match="at least 1"):
        split_gguf(q4, tmp_path / "x", max_tensors=0)
    with pytest.raises(GGUFToolError, match="invalid size"):
        split_gguf(q4, tmp_path / "x", max_size="lots")
    with pytest.raises(ModelLoadError, match="not found"):
        split_gguf(tmp_path / "missing.gguf", tmp_path / "x", max_tensors=1)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelLoadError, match="not a readable GGUF"):
        split_gguf(bad, tmp_path / "x", max_tensors=1)
    assert issubclass(GGUFToolError, LlamabindError)


def test_parse_size() -> None:
    assert parse_size("500M") == 500_000_000
    assert parse_size("2G") == 2_000_000_000
    assert parse_size("1.5g") == 1_500_000_000
    assert parse_size("64KiB") == 65536
    assert parse_size("123") == 123
    assert parse_size(42) == 42
    for bad in ("", "-1M", "0", "12X", 0):
        with pytest.raises(GGUFToolError):
            parse_size(bad)


# --- shard discovery and merge errors ---------------------------------------------------------


def test_shard_paths(q4: Path, shards: list[Path], tmp_path: Path) -> None:
    assert shard_paths(shards[0]) == shards
    assert shard_paths(shards[2]) == shards  # any shard finds the whole set
    assert shard_paths(q4) == [q4]  # a single-file model
    with pytest.raises(ModelLoadError, match="not found"):
        shard_paths(tmp_path / "nope-00001-of-00002.gguf")
    lone = tmp_path / "lone-00001-of-00003.gguf"
    lone.write_bytes(shards[0].read_bytes())
    with pytest.raises(ModelLoadError, match=r"2 are missing.*lone-00002-of-00003\.gguf"):
        shard_paths(lone)


def test_merge_rejects_inconsistent_shards(tmp_path: Path) -> None:
    src = tmp_path / "tiny.gguf"
    _tiny_gguf(src)
    shards = split_gguf(src, tmp_path / "tiny", max_tensors=2)
    assert len(shards) == 2
    with pytest.raises(GGUFToolError, match="out of order"):
        merge_gguf([shards[1], shards[0]], tmp_path / "m.gguf")
    with pytest.raises(GGUFToolError, match=r"split\.count=2 but 1"):
        merge_gguf(shards[:1], tmp_path / "m.gguf")
    with pytest.raises(GGUFToolError, match="not the first shard"):
        merge_gguf([src, shards[1]], tmp_path / "m.gguf")
    with pytest.raises(GGUFToolError, match="one of the input shards"):
        merge_gguf(shards, shards[1])
    assert not (tmp_path / "m.gguf").exists()
    # a shard is not a model to split or dequantize on its own
    with pytest.raises(GGUFToolError, match="merge the shards before you split"):
        split_gguf(shards[0], tmp_path / "again", max_tensors=1)
    with pytest.raises(GGUFToolError, match="merge the shards before you dequantize"):
        dequantize_to_f16(shards[1], tmp_path / "f16.gguf")


# --- exact metadata round trip on a hand-made file --------------------------------------------


def _tiny_gguf(path: Path) -> None:
    w = GGUFWriter(path, "llama")
    w.add_uint8("t.u8", 7)
    w.add_int8("t.i8", -7)
    w.add_uint16("t.u16", 65535)
    w.add_int16("t.i16", -300)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -5)
    w.add_float32("t.f32", 0.25)
    w.add_uint64("t.u64", 2**63)
    w.add_int64("t.i64", -(2**40))
    w.add_float64("t.f64", 1e-300)
    w.add_bool("t.bool", True)
    w.add_key_value("t.str.bytes", b"caf\xc3\xa9 \xff raw", GGUFValueType.STRING)
    w.add_key_value("t.str.empty", "", GGUFValueType.STRING)
    w.add_array("t.arr.str", ["a", "", "\u2581b"])
    w.add_key_value("t.arr.i32", [1, -2, 3], GGUFValueType.ARRAY, GGUFValueType.INT32)
    w.add_key_value("t.arr.f32", [0.5, 1.5], GGUFValueType.ARRAY, GGUFValueType.FLOAT32)
    rng = np.random.default_rng(0)
    w.add_tensor("a.weight", rng.standard_normal((4, 64)).astype(np.float32))
    w.add_tensor("b.weight", rng.standard_normal((3, 32)).astype(np.float16))
    q8 = np.frombuffer(rng.bytes(2 * 34), dtype=np.uint8).reshape(2, 34)
    w.add_tensor("c.weight", q8, raw_dtype=GGMLQuantizationType.Q8_0)
    w.add_tensor("d.bias", np.arange(5, dtype=np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_roundtrip_keeps_every_value_type_and_raw_bytes(tmp_path: Path) -> None:
    src = tmp_path / "tiny.gguf"
    _tiny_gguf(src)
    paths = split_gguf(src, tmp_path / "tiny", max_tensors=1)
    assert [p.name for p in paths] == [shard_name("tiny", i, 4) for i in range(4)]
    merged = merge_gguf(paths[0], tmp_path / "merged.gguf")
    assert _kv(src) == _kv(merged)
    assert filecmp.cmp(src, merged, shallow=False)
    meta = read_metadata(merged)
    assert meta["t.u64"] == 2**63 and meta["t.bool"] is True and meta["t.arr.i32"] == [1, -2, 3]
    r = GGUFReader(merged)
    assert r.get_field("t.str.bytes") is not None
    assert bytes(r.get_field("t.str.bytes").parts[-1]) == b"caf\xc3\xa9 \xff raw"  # type: ignore[union-attr]


# --- F16 copy ---------------------------------------------------------------------------------


def test_f16_copy_structure_and_metadata(q4: Path, f16: Path) -> None:
    a, b = _reader(q4), _reader(f16)
    assert [(t.name, t.shape.tolist()) for t in a.tensors] == [(t.name, t.shape.tolist()) for t in b.tensors]
    for t in b.tensors:
        if len(t.shape) == 1 or t.name.endswith("_norm.weight"):
            assert t.tensor_type == GGMLQuantizationType.F32, t.name
        else:
            assert t.tensor_type == GGMLQuantizationType.F16, t.name
    assert _field(b, "general.file_type") == (1, GGUFValueType.UINT32)  # MOSTLY_F16
    ka = [e for e in _kv(q4) if e[0] != "general.file_type"]
    kb = [e for e in _kv(f16) if e[0] != "general.file_type"]
    assert ka == kb
    assert [e[0] for e in _kv(q4)] == [e[0] for e in _kv(f16)]  # same key order


def test_f16_copy_values_match_dequantized_originals(q4: Path, f16: Path) -> None:
    a, b = _reader(q4), _reader(f16)
    for ta, tb in zip(a.tensors, b.tensors, strict=True):
        ref = dequantize(ta.data, ta.tensor_type).astype(np.float32).reshape(tb.data.shape)
        got = np.asarray(tb.data, dtype=np.float32)
        if tb.tensor_type == GGMLQuantizationType.F32:
            np.testing.assert_array_equal(got, ref, err_msg=ta.name)
        else:
            # F16 rounding of the dequantized value, and nothing else
            np.testing.assert_array_equal(got, ref.astype(np.float16).astype(np.float32), err_msg=ta.name)
            scale = float(np.abs(ref).max()) or 1.0
            assert float(np.abs(got - ref).max()) <= 1e-3 * scale, ta.name


def test_f16_copy_of_a_float_model_and_errors(tmp_path: Path) -> None:
    src = tmp_path / "tiny.gguf"
    _tiny_gguf(src)
    out = dequantize_to_f16(src, tmp_path / "tiny-f16.gguf")
    types = {t.name: t.tensor_type for t in GGUFReader(out).tensors}
    assert types == {
        "a.weight": GGMLQuantizationType.F16,
        "b.weight": GGMLQuantizationType.F16,
        "c.weight": GGMLQuantizationType.F16,
        "d.bias": GGMLQuantizationType.I32,
    }
    with pytest.raises(ModelLoadError):
        dequantize_to_f16(tmp_path / "missing.gguf", tmp_path / "o.gguf")
    assert not (tmp_path / "o.gguf").exists()
