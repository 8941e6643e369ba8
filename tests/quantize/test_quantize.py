"""Quantization of an F16 SmolLM2 (made with gguf's dequantization): outputs, dry runs, overrides, errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

import llamabind as lb
from llamabind.core.gguf_file import read_header
from llamabind.kvcache import greedy_tokens
from llamabind.quantize import (
    FileType,
    ImatrixData,
    QuantizeParams,
    default_output_path,
    file_type,
    file_types,
    quantize,
    read_imatrix,
    write_imatrix,
)
from tests.helpers.core import PROMPT, THREADS, native_log_level
from tests.helpers.fixtures_gguf import build_split_smollm2, smollm2_q4_path


@pytest.fixture(autouse=True)
def _quiet_native() -> Iterator[None]:
    with native_log_level(logging.CRITICAL):
        yield


@pytest.fixture(scope="module")
def f16_logits(f16: Path) -> np.ndarray:
    with lb.Model(f16) as m, lb.Context(m, n_ctx=128, n_threads=THREADS) as ctx:
        toks = m.tokenize(PROMPT)
        b = lb.Batch(len(toks))
        b.add_sequence(toks, 0, 0)
        ctx.decode(b)
        return ctx.logits(-1)


def _generate(path: Path) -> tuple[str, np.ndarray]:
    with lb.Model(path) as m, lb.Context(m, n_ctx=128, n_threads=THREADS) as ctx:
        toks = m.tokenize(PROMPT)
        b = lb.Batch(len(toks))
        b.add_sequence(toks, 0, 0)
        ctx.decode(b)
        first = ctx.logits(-1)
        out = greedy_tokens(ctx, toks, 8)
        return m.detokenize(out), first


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------ type table


def test_every_llama_cpp_file_type_by_name() -> None:
    names = {t.name for t in file_types()}
    for name in ("F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S",
                 "Q4_1", "Q4_0", "IQ4_NL", "IQ4_XS", "Q3_K_L", "Q3_K_M", "Q3_K_S", "IQ3_M", "IQ3_S", "IQ3_XS",
                 "IQ3_XXS", "Q2_K", "Q2_K_S", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S", "TQ2_0",
                 "TQ1_0", "Q2_0", "Q1_0", "MXFP4_MOE", "Q3_K", "Q4_K", "Q5_K", "COPY"):  # fmt: skip
        assert name in names
    ftypes = {t.ftype for t in file_types() if not t.only_copy}
    assert len(ftypes) == 35  # every llama_ftype llama_model_quantize accepts
    assert file_type("q4_k_m") == file_type(15) == file_type("15")
    assert file_type("Q4_K").alias_of == "Q4_K_M" and file_type("Q4_K").ftype == 15
    assert file_type("Q8_0").bpw == pytest.approx(8.5)
    assert file_type("Q4_0").bpw == pytest.approx(4.5)
    assert file_type("IQ2_XXS").bpw == pytest.approx(2.0625)
    assert file_type("Q4_K_M").bpw == pytest.approx(4.5)
    assert file_type("IQ2_XXS").needs_imatrix and not file_type("Q4_K_M").needs_imatrix
    for t in file_types():
        assert isinstance(t, FileType) and t.description and t.bpw > 0
    with pytest.raises(lb.QuantizeError, match="unknown quantization type"):
        file_type("Q9_9")


def test_default_output_path() -> None:
    assert default_output_path("/m/SmolLM2.F16.gguf", "q4_k_m") == Path("/m/SmolLM2-Q4_K_M.gguf")
    assert default_output_path("/m/x-00001-of-00003.gguf", "Q8_0") == Path("/m/x-Q8_0.gguf")


# ------------------------------------------------------------------ real outputs


@pytest.mark.parametrize("ftype", ["Q8_0", "Q4_K_M", "Q5_0"])
def test_quantized_outputs_load_generate_and_match_the_dry_run(
    f16: Path, f16_logits: np.ndarray, tmp_path: Path, ftype: str
) -> None:
    dst = tmp_path / f"smol-{ftype}.gguf"
    dry = quantize(f16, dst, QuantizeParams(ftype, dry_run=True, nthread=THREADS))
    assert dry.dry_run and not dst.exists() and dry.files == [] and not dry.problems
    seen: list[tuple[int, int, str]] = []
    res = quantize(
        f16, dst, QuantizeParams(ftype, nthread=2), progress=lambda i, n, name: seen.append((i, n, name))
    )
    assert res.files == [dst] and dst.is_file()
    assert res.file_bytes == dst.stat().st_size
    assert abs(dry.file_bytes - res.file_bytes) / res.file_bytes < 0.01
    assert dry.tensor_bytes == res.tensor_bytes
    assert [t.dst_type for t in dry.tensors] == [t.dst_type for t in res.tensors]
    assert len(seen) == len(res.tensors) == 272
    assert [i for i, _, _ in seen] == list(range(1, 273)) and {n for _, n, _ in seen} == {272}
    assert res.file_bytes < f16.stat().st_size * 0.6
    text, logits = _generate(dst)
    assert text.strip()
    assert _cos(logits, f16_logits) > (0.99 if ftype == "Q8_0" else 0.9)
    with lb.Model(dst) as m:
        assert m.ftype.upper().startswith(ftype.split("_K")[0] if "_K" in ftype else ftype)
    dst.unlink()


def test_tensor_type_overrides_visible_in_the_output(f16: Path, tmp_path: Path) -> None:
    dst = tmp_path / "override.gguf"
    res = quantize(
        f16,
        dst,
        ftype="Q4_0",
        tensor_type_overrides=[(r"ffn_down", "q8_0"), (r"blk\.1\.attn_v", "f16")],
        output_tensor_type="q6_k",  # SmolLM2 ties output to token_embd: it has no output.weight
        token_embedding_type="q8_0",
        nthread=2,
    )
    types = {t.name: t.tensor_type.name for t in GGUFReader(dst).tensors}
    assert {types[f"blk.{i}.ffn_down.weight"] for i in range(30)} == {"Q8_0"}
    assert types["blk.1.attn_v.weight"] == "F16"
    assert types["blk.0.attn_v.weight"] == "Q4_0" and types["blk.0.ffn_up.weight"] == "Q4_0"
    assert types["token_embd.weight"] == "Q8_0"
    assert types["output_norm.weight"] == "F32"
    assert res.type_counts()["q8_0"] == 31
    assert {t.name: t.dst_type for t in res.tensors}["blk.1.attn_v.weight"] == "f16"
    dst.unlink()


def test_prune_layers_kv_overrides_and_pure(f16: Path, tmp_path: Path) -> None:
    dst = tmp_path / "pruned.gguf"
    res = quantize(
        f16,
        dst,
        ftype="Q8_0",
        prune_layers=[29, 3, 10],  # any order: llama.cpp needs them sorted
        kv_overrides={"general.name": "SmolLM2 pruned", "smol.test.int": 7, "smol.test.flag": True},
        pure=True,
        nthread=2,
    )
    assert len(res.tensors) == 272 - 3 * 9
    with lb.Model(dst) as m:
        assert m.n_layer == 27
        assert m.meta("general.name") == "SmolLM2 pruned"
        assert m.meta("smol.test.int") == "7" and m.meta("smol.test.flag") == "true"
    names = {t.name for t in read_header(dst).tensors}
    assert "blk.26.ffn_down.weight" in names and "blk.27.ffn_down.weight" not in names
    text, _ = _generate(dst)
    assert isinstance(text, str)
    dst.unlink()


def test_requantize_and_copy_and_keep_split(fixture_dir: Path, tmp_path: Path) -> None:
    q4 = smollm2_q4_path()
    with pytest.raises(lb.QuantizeError, match=r"already quantized.*allow_requantize"):
        quantize(q4, tmp_path / "re.gguf", ftype="Q8_0")
    assert not (tmp_path / "re.gguf").exists()
    dry = quantize(q4, None, ftype="Q8_0", dry_run=True)
    assert dry.problems and "allow_requantize" in dry.problems[0]
    res = quantize(q4, tmp_path / "re.gguf", ftype="Q8_0", allow_requantize=True, nthread=2)
    assert res.file_bytes > q4.stat().st_size
    (tmp_path / "re.gguf").unlink()
    shards = build_split_smollm2(fixture_dir, max_tensors=100)
    out = quantize(shards[0], tmp_path / "copy.gguf", ftype="COPY", keep_split=True)
    assert [p.name for p in out.files] == [f"copy-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    assert all(p.is_file() for p in out.files)
    assert {t.dst_type for t in out.tensors} == {t.src_type for t in out.tensors}
    with lb.Model(out.files[0]) as m:
        assert m.n_layer == 30
    merged = quantize(shards[0], tmp_path / "merged.gguf", ftype="COPY")
    assert merged.files == [tmp_path / "merged.gguf"]
    assert abs(merged.file_bytes - q4.stat().st_size) / q4.stat().st_size < 0.01


# ------------------------------------------------------------------ imatrix


def _synthetic_imatrix(f16: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        t.name: rng.uniform(0.1, 4.0, t.ne[0]).astype(np.float32)
        for t in read_header(f16).tensors
        if len(t.ne) >= 2 and t.name.startswith("blk.")
    }


def test_imatrix_file_formats_round_trip(f16: Path, tmp_path: Path) -> None:
    entries = _synthetic_imatrix(f16)
    for fmt in ("gguf", "dat"):
        path = write_imatrix(
            tmp_path / f"im.{fmt}", entries, format=fmt, dataset="synthetic.txt", chunk_count=3
        )
        data = read_imatrix(path)
        assert isinstance(data, ImatrixData) and data.format == fmt and len(data) == len(entries)
        assert data.datasets == ["synthetic.txt"] and data.chunk_count == 3
        for name, values in entries.items():
            np.testing.assert_allclose(data.entries[name], values, rtol=1e-6)
    # a multi-expert entry in the GGUF format: per-expert counts
    write_imatrix(tmp_path / "moe.gguf", {"blk.0.ffn_down_exps.weight": np.ones((4, 8))}, n_tokens=10)
    assert read_imatrix(tmp_path / "moe.gguf").entries["blk.0.ffn_down_exps.weight"].shape == (32,)


def test_low_bit_quantization_with_an_imatrix(f16: Path, tmp_path: Path) -> None:
    entries = _synthetic_imatrix(f16)
    imat = write_imatrix(tmp_path / "im.dat", entries, format="dat", dataset="synthetic")
    dst = tmp_path / "iq2.gguf"
    keep = {0, 1, 2, 3}
    t0 = time.perf_counter()
    res = quantize(
        f16,
        dst,
        ftype="IQ2_XXS",
        imatrix=imat,
        prune_layers=[i for i in range(30) if i not in keep],
        nthread=2,
    )
    assert time.perf_counter() - t0 < 60
    assert "iq2_xxs" in res.type_counts()
    with lb.Model(dst) as m:
        assert m.n_layer == 4
        assert m.meta("quantize.imatrix.file") == str(imat)
        assert m.meta("quantize.imatrix.entries_count") == str(len(entries))
    # an in-memory imatrix works too (pruned layers map back to the original names)
    res2 = quantize(
        f16, None, ftype="IQ2_XXS", imatrix=entries, prune_layers=list(range(2, 30)), dry_run=True
    )
    assert not res2.problems
    dst.unlink()


# ------------------------------------------------------------------ errors before any work


def test_bad_inputs_raise_before_work(f16: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.gguf"
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    not_gguf = tmp_path / "bad.gguf"
    not_gguf.write_bytes(b"NOPE" + bytes(100))
    bad_imatrix = write_imatrix(tmp_path / "wrong.dat", {"blk.0.ffn_down.weight": np.ones(7)}, format="dat")
    cases: list[tuple[dict[str, object], str]] = [
        ({"ftype": "Q9_0"}, "unknown quantization type"),
        ({"ftype": "IQ2_XXS"}, "needs an importance matrix"),
        ({"ftype": "IQ1_S"}, "needs an importance matrix"),
        ({"ftype": "Q2_K_S"}, "needs an importance matrix"),
        ({"ftype": "Q8_0", "output_tensor_type": "q9_k"}, "unknown output_tensor_type"),
        ({"ftype": "Q8_0", "token_embedding_type": "nope"}, "unknown token_embedding_type"),
        ({"ftype": "Q8_0", "tensor_type_overrides": [("ffn_(", "q8_0")]}, "is invalid"),
        ({"ftype": "Q8_0", "tensor_type_overrides": [("(?<=blk)", "q8_0")]}, "lookbehind"),
        ({"ftype": "Q8_0", "tensor_type_overrides": [("ffn", "q77")]}, "unknown tensor type"),
        ({"ftype": "Q8_0", "prune_layers": [30]}, "out of range"),
        ({"ftype": "Q8_0", "prune_layers": list(range(30))}, "all 30 layers"),
        ({"ftype": "IQ2_XXS", "imatrix": tmp_path / "missing.dat"}, "imatrix file not found"),
        ({"ftype": "IQ2_XXS", "imatrix": not_a_dir}, "imatrix"),
        ({"ftype": "IQ2_XXS", "imatrix": bad_imatrix}, "has 7 values"),
        ({"ftype": "IQ2_XXS", "imatrix": {"blk.0.ffn_down.weight": [np.nan] * 1536}}, "non-finite"),
        ({"ftype": "Q8_0", "kv_overrides": {"k" * 200: 1}}, "kv_overrides key"),
        ({"ftype": "Q8_0", "kv_overrides": {"a": "v" * 200}}, "limited to"),
        ({"ftype": "Q8_0", "kv_overrides": {"a": [1]}}, "int, float, bool or str"),
        ({"ftype": "Q8_0", "nthread": -1}, "nthread"),
    ]
    for kwargs, message in cases:
        t0 = time.perf_counter()
        with pytest.raises(lb.QuantizeError, match=message):
            quantize(f16, dst, **kwargs)  # type: ignore[arg-type]
        assert time.perf_counter() - t0 < 5, kwargs
        assert not dst.exists(), kwargs
    with pytest.raises(lb.QuantizeError, match="input model not found"):
        quantize(tmp_path / "missing.gguf", dst)
    with pytest.raises(lb.QuantizeError, match="directory"):
        quantize(tmp_path, dst)
    with pytest.raises(lb.QuantizeError, match="cannot read input model"):
        quantize(not_gguf, dst)
    with pytest.raises(lb.QuantizeError, match="output directory does not exist"):
        quantize(f16, tmp_path / "no" / "such" / "dir" / "out.gguf")
    with pytest.raises(lb.QuantizeError, match="output directory does not exist"):
        quantize(f16, not_a_dir / "out.gguf")  # parent is a file
    with pytest.raises(lb.QuantizeError, match="output path is a directory"):
        quantize(f16, tmp_path)
    with pytest.raises(lb.QuantizeError, match="is the input model"):
        quantize(f16, f16)
    with pytest.raises(lb.QuantizeError, match="no output path"):
        quantize(f16)
    with pytest.raises(TypeError, match="unknown quantize parameter"):
        quantize(f16, dst, bogus=1)
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf", "file.txt", "wrong.dat"]


def test_progress_callback_errors_propagate(f16: Path, tmp_path: Path) -> None:
    def boom(i: int, n: int, name: str) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        quantize(f16, None, ftype="Q8_0", dry_run=True, progress=boom)
