"""Model: loading (and every way it can fail), metadata, lifetime, RSS over create/close cycles."""

from __future__ import annotations

import gc
import re
import struct
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from tests.helpers.core import PROMPT, THREADS, greedy, rss_kb, run_json

# ------------------------------------------------------------------ metadata


def test_metadata_and_hparams(model: lb.Model) -> None:
    meta = model.metadata
    assert isinstance(meta, dict)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == "30"
    assert meta["llama.embedding_length"] == "576"
    assert model.meta("general.architecture") == "llama"
    assert model.meta("no.such.key", "dflt") == "dflt"
    assert model.architecture == "llama"
    assert model.metadata is not model.metadata  # a copy each time: callers cannot corrupt the cache
    assert model.description == "llama 256M Q4_1"
    assert model.n_params == 134_515_008
    assert model.n_ctx_train == 8192
    assert model.n_embd == 576
    assert model.n_layer == 30
    assert model.n_head == 9
    assert model.n_head_kv == 3
    assert model.n_layer_nextn == 0
    assert model.n_vocab == 49152
    assert 60_000_000 < model.size < 100_000_000
    assert model.ftype.startswith("Q4_1")
    assert model.has_decoder and not model.has_encoder
    assert not model.is_recurrent and not model.is_hybrid and not model.is_diffusion
    assert model.rope_type >= 0
    assert model.name == model.metadata["general.name"] == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    assert "Model SmolLM2-135M-Instruct.Q4_1.gguf llama 256M Q4_1" in repr(model)


def test_chat_template_string(model: lb.Model) -> None:
    tpl = model.chat_template()
    assert tpl is not None
    assert "<|im_start|>" in tpl and "{% for message in messages %}" in tpl
    assert tpl == model.metadata["tokenizer.chat_template"]
    assert model.chat_templates() == {"default": tpl}
    assert model.chat_template("no_such_variant") is None


def test_vocab_only_load(model_path: Path) -> None:
    with lb.Model(model_path, vocab_only=True) as m:
        assert m.n_vocab == 49152
        assert m.n_ctx_train == 0  # hyperparameters are not read in vocab-only mode
        assert m.detokenize(m.tokenize("Hello world", add_special=False)) == "Hello world"
    assert m.closed


def test_unknown_model_parameter(model_path: Path) -> None:
    with pytest.raises(TypeError, match=r"unknown model parameter 'n_gpu'"):
        lb.Model(model_path, n_gpu=3)


def test_kv_overrides(model_path: Path, model: lb.Model) -> None:
    assert not model.vocab.add_bos
    overrides = {"llama.context_length": 1234, "tokenizer.ggml.add_bos_token": True}
    with lb.Model(model_path, kv_overrides=overrides) as m:
        assert m.n_ctx_train == 1234
        assert m.vocab.add_bos
        assert m.tokenize("Hi") == [m.vocab.bos, *model.tokenize("Hi")]


# ------------------------------------------------------------------ bad files


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.gguf"
    with pytest.raises(lb.ModelLoadError, match=f"model file not found: {re.escape(str(p))}$"):
        lb.Model(p)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(
        lb.ModelLoadError, match=f"model path is a directory, not a GGUF file: {re.escape(str(tmp_path))}$"
    ):
        lb.Model(tmp_path)


def test_non_gguf_file(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello world, this is not a model")
    with pytest.raises(lb.ModelLoadError, match=r"not a GGUF file \(bad magic b'hell'\): .*notes\.txt$"):
        lb.Model(p)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.gguf"
    p.write_bytes(b"")
    with pytest.raises(lb.ModelLoadError, match=r"not a GGUF file \(bad magic b''\): .*empty\.gguf$"):
        lb.Model(p)


def test_short_header(tmp_path: Path) -> None:
    p = tmp_path / "short.gguf"
    p.write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(lb.ModelLoadError, match=r"truncated GGUF file \(8 bytes\): .*short\.gguf$"):
        lb.Model(p)


def test_no_path() -> None:
    with pytest.raises(lb.ModelLoadError, match=r"no model path given"):
        lb.Model([])


def _garbage_files(directory: Path, model_path: Path) -> dict[str, Path]:
    """GGUF files with a valid magic and broken contents."""
    import gguf

    rng = np.random.default_rng(1)
    out: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        out[name] = directory / f"{name}.gguf"
        out[name].write_bytes(data)

    put("huge_kv_count", b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40) + rng.bytes(64))
    put("random_after_header", b"GGUF" + struct.pack("<IQQ", 3, 5, 7) + rng.bytes(4096))
    put("bad_version", b"GGUF" + struct.pack("<IQQ", 99, 0, 0))
    put("huge_string", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62) + b"abc")
    # the real header with its metadata region overwritten by noise
    head = bytearray(model_path.open("rb").read(200_000))
    head[64:60_000] = rng.bytes(60_000 - 64)
    put("noisy_metadata", bytes(head))
    # well-formed GGUF files whose metadata is nonsense to llama.cpp
    w = gguf.GGUFWriter(str(directory / "unknown_arch.gguf"), "nonexistentarch")
    w.add_string("general.name", "x")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out["unknown_arch"] = directory / "unknown_arch.gguf"
    w = gguf.GGUFWriter(str(directory / "wrong_types.gguf"), "llama")
    w.add_string("llama.block_count", "thirty")
    w.add_string("llama.context_length", "long")
    w.add_string("llama.embedding_length", "wide")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out["wrong_types"] = directory / "wrong_types.gguf"
    return out


_LOAD_ALL = """
import json, llamabind as lb
out = {}
for name, path in json.loads(%r).items():
    try:
        lb.Model(path)
        out[name] = ["loaded", ""]
    except lb.ModelLoadError as exc:
        out[name] = ["ModelLoadError", str(exc)]
    except BaseException as exc:
        out[name] = [type(exc).__name__, str(exc)]
print(json.dumps(out))
"""


def _load_in_subprocess(files: dict[str, Path]) -> dict[str, list[str]]:
    import json

    code = _LOAD_ALL % json.dumps({k: str(v) for k, v in files.items()})
    result: dict[str, list[str]] = run_json(code)  # asserts the interpreter exited 0 (no native crash)
    return result


def test_truncated_gguf_files(tmp_path: Path, model_path: Path) -> None:
    import gguf

    data_offset = gguf.GGUFReader(str(model_path)).data_offset
    size = model_path.stat().st_size
    cuts = {
        "header_only": 24,
        "mid_metadata": 1000,
        "mid_tensor_infos": data_offset // 2,
        "end_of_metadata": data_offset,
        "mid_tensor_data": size // 2,
        "last_bytes_missing": size - 100,
    }
    files: dict[str, Path] = {}
    with model_path.open("rb") as src:
        for name, n in cuts.items():
            src.seek(0)
            files[name] = tmp_path / f"{name}.gguf"
            files[name].write_bytes(src.read(n))
    results = _load_in_subprocess(files)
    for name, path in files.items():
        kind, message = results[name]
        assert kind == "ModelLoadError", (name, kind, message)
        # the fixed text, then llama.cpp's own reason in parentheses
        assert re.fullmatch(
            re.escape(
                f"llama.cpp failed to load {path}: the file is malformed, truncated or of an unsupported "
                "architecture"
            )
            + r" \([a-z_]+: .+\)",
            message,
            flags=re.DOTALL,
        ), (name, message)


def test_garbage_metadata_gguf_files(tmp_path: Path, model_path: Path) -> None:
    files = _garbage_files(tmp_path, model_path)
    results = _load_in_subprocess(files)
    for name, path in files.items():
        kind, message = results[name]
        assert kind == "ModelLoadError", (name, kind, message)
        assert message.startswith(f"llama.cpp failed to load {path}: the file is malformed"), name


def test_truncated_file_in_process(tmp_path: Path, model_path: Path) -> None:
    # the cases above proved safe in a subprocess; one of them in-process proves the error surfaces here too
    p = tmp_path / "cut.gguf"
    with model_path.open("rb") as src:
        p.write_bytes(src.read(5000))
    with pytest.raises(lb.ModelLoadError, match=f"llama.cpp failed to load {re.escape(str(p))}: "):
        lb.Model(p)


# ------------------------------------------------------------------ progress callback


def test_progress_callback_reports_fractions(model_path: Path) -> None:
    seen: list[float] = []

    def progress(f: float) -> bool:
        seen.append(f)
        return True

    with lb.Model(model_path, progress=progress) as m:
        assert m.n_layer == 30
    assert seen, "progress callback never called"
    assert all(0.0 <= f <= 1.0 for f in seen)
    assert seen == sorted(seen)
    assert seen[-1] == pytest.approx(1.0)


def test_progress_callback_cancel(model_path: Path) -> None:
    calls: list[float] = []

    def cancel(f: float) -> bool:
        calls.append(f)
        return False

    with pytest.raises(
        lb.ModelLoadError,
        match=f"^model load cancelled by the progress callback: {re.escape(str(model_path))}$",
    ):
        lb.Model(model_path, progress=cancel)
    assert len(calls) == 1


def test_progress_callback_raises(model_path: Path) -> None:
    class Boom(RuntimeError):
        pass

    def explode(_f: float) -> bool:
        raise Boom("progress exploded")

    with pytest.raises(
        lb.ModelLoadError, match=r"model load progress callback raised: Boom\('progress exploded'\)"
    ) as info:
        lb.Model(model_path, progress=explode)
    assert isinstance(info.value.__cause__, Boom)
    assert str(info.value.__cause__) == "progress exploded"


# ------------------------------------------------------------------ lifetime


def test_closed_model_raises(model_path: Path) -> None:
    m = lb.Model(model_path, vocab_only=True)
    m.close()
    m.close()  # idempotent
    assert m.closed
    assert "closed" in repr(m)
    with pytest.raises(lb.ClosedError, match=r"^Model is closed$"):
        _ = m.n_layer
    with pytest.raises(lb.ClosedError, match=r"^Model is closed$"):
        _ = m.description
    with pytest.raises(lb.ClosedError, match=r"^Model is closed$"):
        m.tokenize("hello")
    with pytest.raises(lb.ClosedError, match=r"^Model is closed$"):
        m.detokenize([1, 2])
    with pytest.raises(lb.ClosedError, match=r"^Model is closed$"):
        lb.Context(m, n_ctx=64)
    with pytest.raises(lb.ClosedError, match=r"^Model is closed$"):
        lb.Sampler(m).greedy()


def test_closing_model_closes_its_contexts_and_samplers(model_path: Path) -> None:
    m = lb.Model(model_path)
    ctx = lb.Context(m, n_ctx=128, n_batch=64, n_threads=THREADS)
    smp = lb.Sampler(m).greedy()
    m.close()
    assert ctx.closed and smp.closed
    with pytest.raises(lb.ClosedError, match=r"^Context is closed$"):
        ctx.decode(lb.Batch.from_tokens([1, 2, 3]))
    with pytest.raises(lb.ClosedError, match=r"^Context is closed$"):
        ctx.memory.clear()
    with pytest.raises(lb.ClosedError, match=r"^Sampler is closed$"):
        len(smp)
    ctx.close()  # closing an already-freed child is a no-op


def test_context_keeps_model_alive(model_path: Path, model: lb.Model) -> None:
    m = lb.Model(model_path)
    ctx = lb.Context(m, n_ctx=128, n_batch=64, n_threads=THREADS)
    del m
    gc.collect()
    assert not ctx.model.closed
    tokens = ctx.model.tokenize(PROMPT)
    with lb.Context(model, n_ctx=128, n_batch=64, n_threads=THREADS) as ref:
        assert greedy(ctx, tokens, 4) == greedy(ref, tokens, 4)
    ctx.close()


def test_rss_flat_over_create_close_cycles(model_path: Path) -> None:
    def cycle(decode: bool) -> None:
        m = lb.Model(model_path)
        c = lb.Context(m, n_ctx=128, n_batch=32, n_ubatch=32, n_threads=THREADS)
        if decode:
            c.decode(lb.Batch.from_tokens([1, 2, 3]))
        c.close()
        m.close()

    for i in range(10):  # warm-up: allocator arenas, caches, lazily loaded code
        cycle(decode=i % 5 == 0)
    gc.collect()
    before = rss_kb()
    for i in range(200):
        cycle(decode=i % 100 == 0)
        if i == 99:
            gc.collect()
            halfway = rss_kb()
    gc.collect()
    after = rss_kb()
    growth_mb = (after - before) / 1024
    assert growth_mb < 20, f"RSS grew {growth_mb:.1f} MB over 200 model+context cycles"
    # a leak grows linearly; allocator warm-up does not: the second hundred cycles stay flat
    late_mb = (after - halfway) / 1024
    assert late_mb < 5, f"RSS grew {late_mb:.1f} MB over the last 100 cycles"


def test_load_error_carries_llama_cpp_reason(model_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model_path.read_bytes()[:200])
    with pytest.raises(lb.ModelLoadError, match=r"cut\.gguf.*\(gguf_init_from_reader: failed to read"):
        lb.Model(cut)
