"""The native layer: library loading (LLAMABIND_LIB_DIR), backend init, logging, system info, devices."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

import llamabind as lb
from llamabind._native import backend as nbackend
from llamabind._native import lib as nlib
from llamabind.core.backend import library_info
from tests.helpers.core import run_json

SRC = Path(lb.__file__).parent

_PROBE = """
import json, llamabind as lb
try:
    info = lb.system_info()
    print(json.dumps(["ok", info[:40]]))
except lb.NativeLibraryError as exc:
    print(json.dumps(["NativeLibraryError", str(exc)]))
"""


def _probe(lib_dir: str) -> list[str]:
    # library loading is process-wide: every case runs in a fresh interpreter
    out: list[str] = run_json(_PROBE, env={"LLAMABIND_LIB_DIR": lib_dir})
    return out


def test_lib_dir_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    kind, message = _probe(str(missing))
    assert kind == "NativeLibraryError"
    assert message == f"LLAMABIND_LIB_DIR={missing}: not a directory"


def test_lib_dir_without_libllama(tmp_path: Path) -> None:
    (tmp_path / "libfoo.so").write_bytes(b"")
    (tmp_path / "README").write_text("no libraries here")
    kind, message = _probe(str(tmp_path))
    assert kind == "NativeLibraryError"
    assert (
        message == f"LLAMABIND_LIB_DIR={tmp_path}: no libllama found there (found: ['README', 'libfoo.so'])"
    )


def test_lib_dir_without_ggml_base(tmp_path: Path) -> None:
    (tmp_path / "libllama.so").symlink_to(nlib.lib_dir() / "libllama.so")
    kind, message = _probe(str(tmp_path))
    assert kind == "NativeLibraryError"
    assert message == f"{tmp_path}: libggml-base not found beside libllama"


def test_lib_dir_with_a_broken_libllama(tmp_path: Path) -> None:
    (tmp_path / "libggml-base.so").symlink_to(nlib.lib_dir() / "libggml-base.so")
    (tmp_path / "libllama.so").write_bytes(b"\x7fELF this is not a shared object")
    kind, message = _probe(str(tmp_path))
    assert kind == "NativeLibraryError"
    assert message.startswith(f"cannot load libllama from {tmp_path}: "), message


def test_lib_dir_pointing_at_the_real_build() -> None:
    real = nlib.lib_dir()
    code = """
import json, llamabind as lb
from llamabind._native.lib import lib_dir
lb.system_info()
print(json.dumps(str(lib_dir())))
"""
    assert run_json(code, env={"LLAMABIND_LIB_DIR": str(real)}) == str(real)


def test_library_info() -> None:
    info = library_info()
    assert info["llama_cpp_python"] == "0.3.36"
    assert Path(info["lib_dir"]).is_dir()
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["ggml_version"])
    assert info["ggml_commit"]
    assert nlib.REQUIRED_LLAMA_CPP_PYTHON == "0.3.36"
    assert nlib.LIB_DIR_ENV == "LLAMABIND_LIB_DIR"


def test_backend_init_is_idempotent() -> None:
    lb.backend_init()
    callback = nbackend._log_cb
    assert nbackend._initialized and callback is not None
    lb.backend_init()
    lb.backend_init()
    assert nbackend._log_cb is callback  # not re-registered


def test_backend_init_from_many_threads() -> None:
    code = """
import json, threading, llamabind as lb
from llamabind._native import backend
errors = []
def go():
    try:
        lb.backend_init()
    except BaseException as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=go) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps([errors, backend._initialized]))
"""
    assert run_json(code) == [[], True]


def test_system_info_and_devices() -> None:
    info = lb.system_info()
    assert isinstance(info, str) and info.startswith("CPU :")
    devs = lb.devices()
    assert devs and all(isinstance(d, lb.DeviceInfo) for d in devs)
    cpu = [d for d in devs if d.type == "cpu"]
    assert cpu and cpu[0].name == "CPU"
    assert [d.index for d in devs] == list(range(len(devs)))
    assert all(d.memory_total >= d.memory_free >= 0 for d in devs)
    assert nbackend.supports_mmap() is True
    assert isinstance(nbackend.supports_gpu_offload(), bool)
    assert isinstance(nbackend.supports_rpc(), bool)


def test_llama_cpp_logs_go_to_python_logging(caplog: pytest.LogCaptureFixture, model_path: Path) -> None:
    caplog.set_level(logging.INFO, logger="llamabind.native")
    with lb.Model(model_path, vocab_only=True):
        pass
    records = [r for r in caplog.records if r.name == "llamabind.native"]
    assert records, "no llama.cpp log line reached the llamabind.native logger"
    text = "\n".join(r.getMessage() for r in records)
    assert "llama_model_loader" in text or "print_info" in text
    assert all(not r.getMessage().endswith("\n") for r in records)  # one record per line


def test_llama_cpp_errors_are_logged_as_errors(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.INFO, logger="llamabind.native")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(40))
    with pytest.raises(lb.ModelLoadError):
        lb.Model(bad)
    errors = [r for r in caplog.records if r.name == "llamabind.native" and r.levelno >= logging.ERROR]
    assert any("failed to load model" in r.getMessage() for r in errors)


def test_log_level_filters_native_lines(caplog: pytest.LogCaptureFixture, model_path: Path) -> None:
    caplog.set_level(logging.ERROR, logger="llamabind.native")
    with lb.Model(model_path, vocab_only=True):
        pass
    assert not [r for r in caplog.records if r.name == "llamabind.native" and r.levelno < logging.ERROR]


def test_ggml_type_traits() -> None:
    q41 = nbackend.ggml_type_info(3)
    assert (q41.name, q41.block_size, q41.type_size, q41.quantized) == ("q4_1", 32, 20, True)
    f32 = nbackend.ggml_type_info(0)
    assert (f32.name, f32.block_size, f32.type_size, f32.quantized) == ("f32", 1, 4, False)
    assert q41.row_size(64) == 40


def test_only_native_touches_ctypes() -> None:
    """Architecture rule: only llamabind/_native imports ctypes or llama_cpp."""
    pattern = re.compile(r"^\s*(import ctypes|from ctypes|import llama_cpp|from llama_cpp)\b", re.M)
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if "_native" not in p.relative_to(SRC).parts and pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_extra_buffer_types_auto_off_with_amx() -> None:
    """``use_extra_bufts=None`` keeps llama.cpp's repacking except on an AMX build, whose matmul
    crashes in the pinned revision; an explicit value always wins."""
    from llamabind._native import model as nmodel

    auto, _ = nmodel._build_params(nmodel.ModelParamsSpec())
    assert bool(auto.use_extra_bufts) is (not nmodel.cpu_build_uses_amx())
    for explicit in (True, False):
        p, _ = nmodel._build_params(nmodel.ModelParamsSpec(use_extra_bufts=explicit))
        assert bool(p.use_extra_bufts) is explicit


def test_a_full_batch_decodes_with_default_params(model: lb.Model) -> None:
    """A 512-token batch through the CPU matmul kernels (where AMX crashed) gives logits."""
    with lb.Context(model, n_ctx=1024, n_batch=512) as ctx:
        tokens = model.tokenize("The capital of France is Paris. " * 60)[:512]
        batch = lb.Batch(512)
        batch.add_sequence(tokens, start_pos=0, seq_id=0)
        ctx.decode(batch)
        assert ctx.logits(-1).shape == (model.n_vocab,)
