"""LoRA adapters (tiny GGUF adapters written here with `gguf`) and control vectors."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from tests.helpers.core import PROMPT, THREADS, greedy, write_lora

N_GEN = 10
ALL_LAYERS = range(30)


@pytest.fixture()
def lctx(model: lb.Model) -> Iterator[lb.Context]:
    with lb.Context(model, n_ctx=256, n_batch=64, n_threads=THREADS) as c:
        yield c


@pytest.fixture(scope="module")
def prompt(model: lb.Model) -> list[int]:
    return model.tokenize(PROMPT)


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lora")
    write_lora(d / "zero.gguf", zero_b=True, layers=ALL_LAYERS)
    write_lora(d / "rand1.gguf", seed=1, layers=ALL_LAYERS)
    write_lora(d / "rand2.gguf", seed=2, layers=ALL_LAYERS)
    return d


def _run(ctx: lb.Context, prompt: list[int]) -> list[int]:
    ctx.memory.clear()
    return greedy(ctx, prompt, N_GEN)


def test_zero_random_and_removed_lora(
    lctx: lb.Context, model: lb.Model, prompt: list[int], adapters_dir: Path
) -> None:
    base = _run(lctx, prompt)
    with (
        lb.LoraAdapter(model, adapters_dir / "zero.gguf") as zero,
        lb.LoraAdapter(model, adapters_dir / "rand1.gguf") as rand,
    ):
        assert zero.metadata == {
            "general.architecture": "llama",
            "general.type": "adapter",
            "adapter.type": "lora",
            "adapter.lora.alpha": "4.000000",
        }
        lctx.set_loras([(zero, 1.0)])
        assert _run(lctx, prompt) == base  # B = 0: the adapter adds nothing
        lctx.set_loras([(rand, 1.0)])
        changed = _run(lctx, prompt)
        assert changed != base
        lctx.set_loras([(rand, 0.0)])
        assert _run(lctx, prompt) == base  # scale 0 switches it off
        lctx.set_loras([(rand, 1.0)])
        assert _run(lctx, prompt) == changed  # deterministic
        lctx.set_loras([])
        assert _run(lctx, prompt) == base  # removing it restores the base model


def test_two_adapters_at_once(
    lctx: lb.Context, model: lb.Model, prompt: list[int], adapters_dir: Path
) -> None:
    with (
        lb.LoraAdapter(model, adapters_dir / "rand1.gguf") as a,
        lb.LoraAdapter(model, adapters_dir / "rand2.gguf") as b,
    ):
        lctx.set_loras([(a, 1.0)])
        only_a = _run(lctx, prompt)
        lctx.set_loras([(b, 1.0)])
        only_b = _run(lctx, prompt)
        lctx.set_loras([(a, 1.0), (b, 1.0)])
        both = _run(lctx, prompt)
        assert both not in (only_a, only_b)
        lctx.set_loras([(b, 1.0), (a, 1.0)])
        assert _run(lctx, prompt) == both  # the sum of the two deltas: order does not matter
        lctx.set_loras([(a, 1.0), (b, 0.0)])
        assert _run(lctx, prompt) == only_a


def test_closing_an_applied_adapter_detaches_it(
    lctx: lb.Context, model: lb.Model, prompt: list[int], adapters_dir: Path
) -> None:
    base = _run(lctx, prompt)
    rand = lb.LoraAdapter(model, adapters_dir / "rand1.gguf")
    lctx.set_loras([(rand, 1.0)])
    rand.close()  # llama.cpp would keep a dangling pointer (and crash on the next decode)
    gc.collect()
    assert _run(lctx, prompt) == base
    with pytest.raises(lb.ClosedError, match=r"^LoraAdapter is closed$"):
        lctx.set_loras([(rand, 1.0)])


def test_adapter_for_a_different_n_embd(model: lb.Model, tmp_path: Path) -> None:
    path = write_lora(tmp_path / "wide.gguf", n_embd=1024, n_embd_kv=256)
    with pytest.raises(
        lb.LoraError,
        match=f"^llama.cpp could not load LoRA adapter {re.escape(str(path))} for "
        r"SmolLM2-135M-Instruct.Q4_1.gguf$",
    ):
        lb.LoraAdapter(model, path)


def test_adapter_for_another_architecture(model: lb.Model, tmp_path: Path) -> None:
    path = write_lora(tmp_path / "gpt2.gguf", architecture="gpt2")
    with pytest.raises(lb.LoraError, match=f"^llama.cpp could not load LoRA adapter {re.escape(str(path))} "):
        lb.LoraAdapter(model, path)


def test_bad_adapter_files(model: lb.Model, tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    with pytest.raises(lb.LoraError, match=f"^LoRA adapter file not found: {re.escape(str(missing))}$"):
        lb.LoraAdapter(model, missing)
    with pytest.raises(lb.LoraError, match=f"^LoRA adapter file not found: {re.escape(str(tmp_path))}$"):
        lb.LoraAdapter(model, tmp_path)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    with pytest.raises(lb.LoraError, match=f"^llama.cpp could not load LoRA adapter {re.escape(str(junk))} "):
        lb.LoraAdapter(model, junk)
    text = tmp_path / "notes.txt"
    text.write_text("not an adapter")
    with pytest.raises(lb.LoraError, match=f"^llama.cpp could not load LoRA adapter {re.escape(str(text))} "):
        lb.LoraAdapter(model, text)
    # a base model is not an adapter
    with pytest.raises(lb.LoraError, match=r"^llama.cpp could not load LoRA adapter "):
        lb.LoraAdapter(model, model.path)


def test_adapter_of_another_model(lctx: lb.Context, model_path: Path, adapters_dir: Path) -> None:
    with lb.Model(model_path) as other:
        foreign = lb.LoraAdapter(other, adapters_dir / "zero.gguf")
        with pytest.raises(ValueError, match=r"^LoRA adapter was loaded for a different model$"):
            lctx.set_loras([(foreign, 1.0)])
        with pytest.raises(TypeError, match=r"^set_loras expects \(LoraAdapter, scale\) pairs$"):
            lctx.set_loras([("zero.gguf", 1.0)])  # type: ignore[list-item]
    assert foreign.closed  # closing the model closed its adapter
    with pytest.raises(lb.ClosedError, match=r"^Model is closed$"):
        lb.LoraAdapter(other, adapters_dir / "zero.gguf")


# ------------------------------------------------------------------ control vectors


def test_control_vector_changes_and_clears(lctx: lb.Context, model: lb.Model, prompt: list[int]) -> None:
    base = _run(lctx, prompt)
    rng = np.random.default_rng(0)
    vec = (rng.standard_normal((model.n_layer, model.n_embd)) * 0.5).astype(np.float32)
    lctx.set_control_vector(vec)
    steered = _run(lctx, prompt)
    assert steered != base
    lctx.set_control_vector(np.zeros_like(vec))
    assert _run(lctx, prompt) == base  # a zero vector adds nothing
    lctx.set_control_vector(vec, layer_start=1, layer_end=model.n_layer)
    assert _run(lctx, prompt) == steered
    lctx.set_control_vector(None)
    assert _run(lctx, prompt) == base


@pytest.mark.parametrize("shape", [(30, 100), (30, 577), (576,), (2, 30, 576)])
def test_control_vector_wrong_shape(lctx: lb.Context, shape: tuple[int, ...]) -> None:
    with pytest.raises(
        lb.LoraError, match=re.escape(f"control vector must have shape (n_layers, 576), got {shape}")
    ):
        lctx.set_control_vector(np.zeros(shape, dtype=np.float32))


def _write_cvec(path: Path, n_embd: int, layers: range, seed: int = 0) -> np.ndarray:
    import gguf

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "controlvector")
    out = np.zeros((30, n_embd), dtype=np.float32)
    for il in layers:
        row = rng.standard_normal(n_embd).astype(np.float32)
        out[il - 1] = row
        w.add_tensor(f"direction.{il}", row)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def test_load_control_vector_file(
    lctx: lb.Context, model: lb.Model, prompt: list[int], tmp_path: Path
) -> None:
    path = tmp_path / "cvec.gguf"
    expected = _write_cvec(path, 576, range(1, 31))
    vec = lb.load_control_vector(path, model.n_layer, model.n_embd)
    assert vec.shape == (30, 576)
    np.testing.assert_array_equal(vec, expected)
    base = _run(lctx, prompt)
    lctx.set_control_vector(vec * 0.5)
    assert _run(lctx, prompt) != base


def test_load_control_vector_errors(model: lb.Model, tmp_path: Path) -> None:
    wide = tmp_path / "wide.gguf"
    _write_cvec(wide, 100, range(1, 3))
    with pytest.raises(
        lb.LoraError, match=f"^{re.escape(str(wide))}: direction.1 has 100 values, model n_embd is 576$"
    ):
        lb.load_control_vector(wide, model.n_layer, model.n_embd)
    missing = tmp_path / "nope.gguf"
    with pytest.raises(lb.LoraError, match=f"^control vector file not found: {re.escape(str(missing))}$"):
        lb.load_control_vector(missing, 30, 576)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"definitely not gguf")
    with pytest.raises(lb.LoraError, match=f"^not a readable GGUF control vector: {re.escape(str(junk))}: "):
        lb.load_control_vector(junk, 30, 576)
    empty = tmp_path / "empty.gguf"
    _write_cvec(empty, 576, range(0))
    with pytest.raises(lb.LoraError, match=f"^{re.escape(str(empty))}: no direction.N tensors$"):
        lb.load_control_vector(empty, 30, 576)
