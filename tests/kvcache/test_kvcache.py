"""KV-cache types, byte reports against ggml and llama.cpp, attention rotation, perplexity."""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

import llamabind as lb
from llamabind._native.backend import ggml_type_info
from llamabind._native.context import ATTN_ROT_ENV
from llamabind.core.types import ggml_type_id
from llamabind.kvcache import (
    KV_CACHE_TYPES,
    compare_generation,
    greedy_tokens,
    kv_bytes,
    kv_layout,
    kv_type_report,
    kv_types,
    perplexity,
    token_logprobs,
)
from tests.helpers.core import LONG_PROMPT as PROMPT
from tests.helpers.core import THREADS

DATA = Path(__file__).resolve().parents[1] / "data"

pytestmark = pytest.mark.usefixtures("quiet_native")


@pytest.fixture(scope="module")
def alice() -> str:
    return (DATA / "alice_ch1.txt").read_text(encoding="utf-8")


def _last_logits(model: lb.Model, tokens: list[int], **params: object) -> np.ndarray:
    with lb.Context(model, n_ctx=512, n_batch=512, n_threads=THREADS, **params) as ctx:  # type: ignore[arg-type]
        b = lb.Batch(len(tokens))
        b.add_sequence(tokens, 0, 0)
        ctx.decode(b)
        return ctx.logits(-1)


# ------------------------------------------------------------------ types and bytes


def test_type_list() -> None:
    assert KV_CACHE_TYPES[:3] == ("f32", "f16", "bf16")
    for name in ("q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"):
        assert name in kv_types(quantized_only=True)
    assert "f16" not in kv_types(quantized_only=True)


@pytest.mark.parametrize("kv", KV_CACHE_TYPES)
def test_every_kv_type_creates_a_context_and_generates(model: lb.Model, kv: str) -> None:
    with lb.Context(model, n_ctx=256, n_batch=256, type_k=kv, type_v=kv, n_threads=THREADS) as ctx:
        out = greedy_tokens(ctx, model.tokenize("The capital of France is"), 6)
    assert len(out) == 6
    assert model.detokenize(out).strip()


def test_byte_figures_match_ggml_row_sizes(model: lb.Model) -> None:
    layout = kv_layout(model)
    # SmolLM2-135M: 30 layers, 3 KV heads of 64
    assert (layout.n_layer, layout.n_head_kv, layout.n_embd_head_k) == (30, 3, 64)
    for r in kv_type_report(model):
        tid = ggml_type_id(r.type_k)
        info = ggml_type_info(tid)
        # independent source: the gguf package's copy of ggml's block table
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(tid)]
        assert (r.block_size, r.block_bytes) == (block, size) == (info.block_size, info.type_size)
        assert r.k_row_bytes == info.row_size(192) == 192 // block * size
        assert r.bytes_per_token == 30 * (r.k_row_bytes + r.v_row_bytes)
        assert r.bits_per_element == pytest.approx(size * 8 / block)
        assert r.supported
        assert r.bytes_at(32768) == r.bytes_per_token * 32768
        assert r.rotated == info.quantized
    f16 = kv_type_report(model, ["f16"])[0]
    assert f16.bytes_per_token == 30 * 2 * 192 * 2
    assert kv_bytes(model, 1000, "q8_0") == 1000 * 30 * 2 * (192 // 32 * 34)
    mixed = kv_type_report(model, ["q8_0"], type_v="f16")[0]
    assert mixed.bytes_per_token == 30 * (192 // 32 * 34 + 192 * 2)


@pytest.mark.parametrize("kv", ["f16", "q8_0", "q4_0", "iq4_nl"])
def test_byte_figures_match_llama_cpp_state(model: lb.Model, kv: str) -> None:
    """llama.cpp's own sequence state grows by exactly bytes_per_token (+12 bytes of cell metadata)."""
    toks = model.tokenize("hello world " * 80)[:128]
    sizes = []
    for n in (64, 128):
        with lb.Context(model, n_ctx=256, n_batch=256, type_k=kv, type_v=kv, n_threads=THREADS) as ctx:
            b = lb.Batch(n)
            b.add_sequence(toks[:n], 0, 0)
            ctx.decode(b)
            sizes.append(len(ctx.state.seq_to_bytes(0)))
    per_token = (sizes[1] - sizes[0]) / 64
    assert per_token - 12 == kv_type_report(model, [kv])[0].bytes_per_token


# ------------------------------------------------------------------ rotation


def test_rotation_toggles_for_quantized_kv_only(model: lb.Model) -> None:
    tokens = model.tokenize(PROMPT * 3)
    assert len(tokens) > 100
    on = _last_logits(model, tokens, type_k="q4_0", type_v="q4_0", attn_rotation=True)
    off = _last_logits(model, tokens, type_k="q4_0", type_v="q4_0", attn_rotation=False)
    default = _last_logits(model, tokens, type_k="q4_0", type_v="q4_0")
    assert not np.allclose(on, off, atol=1e-3)  # rotation really changes the quantized cache
    np.testing.assert_array_equal(default, on)  # and is on by default
    f16_on = _last_logits(model, tokens, type_k="f16", type_v="f16", attn_rotation=True)
    f16_off = _last_logits(model, tokens, type_k="f16", type_v="f16", attn_rotation=False)
    np.testing.assert_array_equal(f16_on, f16_off)  # nothing to rotate for unquantized KV


def test_rotation_env_is_restored(model: lb.Model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ATTN_ROT_ENV, raising=False)
    with lb.Context(model, n_ctx=64, type_k="q8_0", type_v="q8_0", attn_rotation=False, n_threads=THREADS):
        pass
    assert ATTN_ROT_ENV not in os.environ
    monkeypatch.setenv(ATTN_ROT_ENV, "1")  # a user's global switch is left as it was
    tokens = model.tokenize(PROMPT * 3)
    forced_on = _last_logits(model, tokens, type_k="q4_0", type_v="q4_0", attn_rotation=True)
    assert os.environ[ATTN_ROT_ENV] == "1"
    user_default = _last_logits(model, tokens, type_k="q4_0", type_v="q4_0")  # None: the env decides
    explicit_off = _last_logits(model, tokens, type_k="q4_0", type_v="q4_0", attn_rotation=False)
    np.testing.assert_array_equal(user_default, explicit_off)
    assert not np.allclose(forced_on, explicit_off, atol=1e-3)


def test_rotation_per_context_from_two_threads(model: lb.Model) -> None:
    """Contexts created concurrently with different rotation settings each get their own."""
    tokens = model.tokenize(PROMPT * 3)
    want = {
        rot: _last_logits(model, tokens, type_k="q4_0", type_v="q4_0", attn_rotation=rot)
        for rot in (True, False)
    }
    results: dict[tuple[bool, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(rot: bool, i: int) -> None:
        try:
            results[(rot, i)] = _last_logits(model, tokens, type_k="q4_0", type_v="q4_0", attn_rotation=rot)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(rot, i)) for i in range(2) for rot in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (rot, _), logits in results.items():
        np.testing.assert_array_equal(logits, want[rot])


def test_compare_generation_reports_divergence(model: lb.Model) -> None:
    c = compare_generation(model, PROMPT, kv_types=["q4_0"], n_predict=8, n_threads=THREADS)
    assert c.reference.type_k == "f16" and c.reference.diverges_at is None
    assert [r.label for r in c.runs] == ["q4_0 rot=on", "q4_0 rot=off"]
    for r in c.runs:
        assert r.diverges_at is None or 0 <= r.diverges_at < 8
        assert r.kv_bytes < c.reference.kv_bytes
    same = compare_generation(
        model, PROMPT, kv_types=["f16"], rotations=[False], n_predict=8, n_threads=THREADS
    )
    assert same.runs[0].diverges_at is None and same.runs[0].tokens == same.reference.tokens


# ------------------------------------------------------------------ perplexity


def test_token_logprobs_match_a_manual_computation(model: lb.Model) -> None:
    tokens = model.tokenize("The quick brown fox jumps over the lazy dog.")
    with lb.Context(model, n_ctx=128, n_batch=4, n_threads=THREADS) as ctx:  # several decode pieces
        lps = token_logprobs(ctx, tokens, 1)
    assert len(lps) == len(tokens) - 1
    with lb.Context(model, n_ctx=128, n_batch=128, n_threads=THREADS) as ctx:
        b = lb.Batch(len(tokens))
        for i, t in enumerate(tokens):
            b.add(t, i, 0, True)
        ctx.decode(b)
        for i in range(len(tokens) - 1):
            x = ctx.logits(i).astype(np.float64)
            want = x[tokens[i + 1]] - np.log(np.exp(x - x.max()).sum()) - x.max()
            assert lps[i] == pytest.approx(want, abs=2e-3)


def test_perplexity_on_public_domain_text(model: lb.Model, alice: str) -> None:
    with lb.Context(model, n_ctx=256, n_batch=256, n_threads=THREADS) as ctx:
        res = perplexity(ctx, alice, chunk_size=128, max_chunks=2)
        again = perplexity(ctx, alice, chunk_size=128, max_chunks=1)
    assert res.n_chunks == 2 and res.n_scored == 2 * 64 and len(res.chunk_ppl) == 2
    assert 1.0 < res.ppl < 100.0
    assert again.ppl == res.chunk_ppl[0]  # deterministic, chunk by chunk
    assert math.exp(res.nll) == pytest.approx(res.ppl)
    with lb.Context(model, n_ctx=256, n_batch=256, type_k="q4_0", type_v="q4_0", n_threads=THREADS) as ctx:
        q4 = perplexity(ctx, alice, chunk_size=128, max_chunks=2)
    assert q4.ppl != res.ppl and abs(q4.ppl / res.ppl - 1) < 0.5


def test_perplexity_errors(model: lb.Model) -> None:
    with lb.Context(model, n_ctx=64, n_batch=64, n_threads=THREADS) as ctx:
        with pytest.raises(ValueError, match="at least chunk_size"):
            perplexity(ctx, "too short", chunk_size=64)
        with pytest.raises(ValueError, match="exceeds the context"):
            perplexity(ctx, "x " * 500, chunk_size=ctx.n_ctx + 1)
        with pytest.raises(ValueError, match="two tokens"):
            token_logprobs(ctx, [1])
