"""Context: the raw-API reference loop, params, decode errors, Batch bounds, logits, threads, abort."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from tests.helpers.core import N_VOCAB, PROMPT, THREADS, generate, greedy, prefill

N_GEN = 32


# ------------------------------------------------------------------ the reference test


def _reference_greedy(model_path: Path, prompt: str, n: int) -> list[int]:
    """llama.cpp's own greedy loop, written directly on the raw llama_cpp.llama_cpp functions."""
    import llama_cpp.llama_cpp as raw

    from llamabind._native.model import cpu_build_uses_amx

    mparams = raw.llama_model_default_params()
    mparams.use_extra_bufts = not cpu_build_uses_amx()  # llamabind's rule (AMX matmul segfaults)
    model = raw.llama_model_load_from_file(str(model_path).encode(), mparams)
    assert model
    cparams = raw.llama_context_default_params()
    cparams.n_ctx = 512
    cparams.n_batch = 512
    cparams.n_ubatch = 512
    cparams.n_threads = THREADS
    cparams.n_threads_batch = THREADS
    ctx = raw.llama_init_from_model(model, cparams)
    assert ctx
    try:
        vocab = raw.llama_model_get_vocab(model)
        n_vocab = raw.llama_vocab_n_tokens(vocab)
        data = prompt.encode()
        buf = (raw.llama_token * (len(data) + 8))()
        n_prompt = raw.llama_tokenize(vocab, data, len(data), buf, len(buf), True, False)
        assert n_prompt > 0
        tokens = (raw.llama_token * n_prompt)(*buf[:n_prompt])
        assert raw.llama_decode(ctx, raw.llama_batch_get_one(tokens, n_prompt)) == 0
        out: list[int] = []
        for _ in range(n):
            logits = np.ctypeslib.as_array(raw.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
            tok = int(np.argmax(logits))
            out.append(tok)
            one = (raw.llama_token * 1)(tok)
            assert raw.llama_decode(ctx, raw.llama_batch_get_one(one, 1)) == 0
        return out
    finally:
        raw.llama_free(ctx)
        raw.llama_model_free(model)


def test_greedy_matches_raw_reference_loop(model_path: Path, model: lb.Model) -> None:
    import llama_cpp.llama_cpp as raw

    from llamabind._native.lib import ll

    assert ll() is raw  # the very same library and ctypes mirror
    expected = _reference_greedy(model_path, PROMPT, N_GEN)
    with lb.Context(model, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=THREADS) as ctx:
        tokens = model.tokenize(PROMPT)
        got = greedy(ctx, tokens, N_GEN)
    assert got == expected, (model.detokenize(got), model.detokenize(expected))
    assert len(set(got)) > 4  # a real continuation, not one token repeated
    assert "Paris" in model.detokenize(got)


def test_sampler_greedy_equals_argmax_of_logits(ctx: lb.Context, model: lb.Model) -> None:
    tokens = model.tokenize(PROMPT)
    prefill(ctx, tokens)
    logits = ctx.logits(-1)
    assert logits.dtype == np.float32 and logits.shape == (N_VOCAB,)
    assert lb.Sampler(model).greedy().sample(ctx, -1) == int(np.argmax(logits))


# ------------------------------------------------------------------ params


def test_context_params_reach_llama_cpp(model: lb.Model) -> None:
    params = lb.ContextParams(
        n_ctx=256, n_batch=128, n_ubatch=64, n_seq_max=2, n_threads=1, n_threads_batch=2
    )
    with lb.Context(model, params) as ctx:
        # without a unified KV cache each sequence gets n_ctx / n_seq_max cells, padded to 256
        assert (ctx.n_ctx, ctx.n_batch, ctx.n_ubatch, ctx.n_seq_max) == (512, 128, 64, 2)
        assert ctx.n_threads == (1, 2)
        ctx.set_threads(2)
        assert ctx.n_threads == (2, 2)
        assert ctx.n_ctx_seq == 256
        assert ctx.params is params
        assert "n_ctx=512 n_seq_max=2" in repr(ctx)
    with lb.Context(model, params, kv_unified=True) as ctx:
        assert (ctx.n_ctx, ctx.n_ctx_seq) == (256, 256)
    assert "closed" in repr(ctx)


@pytest.mark.parametrize(
    "overrides",
    [
        {"flash_attn": "on", "type_k": "q8_0", "type_v": "q8_0"},
        {"flash_attn": False, "type_k": "f16"},
        {"attn_rotation": False, "flash_attn": "on", "type_k": "q8_0", "type_v": "q8_0"},
        {"kv_unified": True, "n_seq_max": 2, "swa_full": True, "offload_kqv": True, "op_offload": False},
        {"rope_scaling_type": "linear", "rope_freq_scale": 0.5, "no_perf": True},
    ],
)
def test_context_variants_decode(model: lb.Model, overrides: dict[str, object]) -> None:
    with lb.Context(model, n_ctx=128, n_batch=32, n_threads=THREADS, **overrides) as ctx:  # type: ignore[arg-type]
        out = greedy(ctx, model.tokenize(PROMPT), 2)
        assert all(0 <= t < N_VOCAB for t in out)


def test_attn_rotation_env_restored(model: lb.Model, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("LLAMA_ATTN_ROT_DISABLE", "sentinel")
    with lb.Context(model, n_ctx=64, n_batch=16, n_threads=THREADS, attn_rotation=True):
        assert os.environ["LLAMA_ATTN_ROT_DISABLE"] == "sentinel"
    monkeypatch.delenv("LLAMA_ATTN_ROT_DISABLE")
    with lb.Context(model, n_ctx=64, n_batch=16, n_threads=THREADS, attn_rotation=False):
        assert "LLAMA_ATTN_ROT_DISABLE" not in os.environ


def test_bad_context_params(model: lb.Model) -> None:
    with pytest.raises(TypeError, match=r"^unknown context parameter 'n_context'$"):
        lb.Context(model, n_context=128)
    with pytest.raises(ValueError, match=r"^n_batch must be a positive integer, got 0$"):
        lb.Context(model, n_batch=0)
    with pytest.raises(ValueError, match=r"^n_ctx must be a positive integer, got -5$"):
        lb.Context(model, n_ctx=-5)
    with pytest.raises(
        ValueError, match=r"^pooling must be one of none, mean, cls, last, rank; got 'median'$"
    ):
        lb.Context(model, pooling="median")
    with pytest.raises(ValueError, match=r"^flash_attn must be one of auto, off, on; got 'maybe'$"):
        lb.Context(model, flash_attn="maybe")
    with pytest.raises(ValueError, match=r"^unknown ggml type 'q9_9'"):
        lb.Context(model, type_k="q9_9")


def test_context_create_error(model: lb.Model) -> None:
    with pytest.raises(
        lb.ContextCreateError,
        match=r"^llama.cpp could not create a context for SmolLM2-135M-Instruct.Q4_1.gguf with n_ctx=256, "
        r"n_batch=2048, n_seq_max=1000,",
    ):
        lb.Context(model, n_ctx=256, n_seq_max=1000)


# ------------------------------------------------------------------ embeddings / logits


def test_logits_are_copies_of_one_row(ctx: lb.Context, model: lb.Model) -> None:
    tokens = model.tokenize(PROMPT)
    b = lb.Batch(len(tokens))
    for i, t in enumerate(tokens):
        b.add(t, i, 0, logits=i in (1, len(tokens) - 1))
    ctx.decode(b)
    first, last = ctx.logits(1), ctx.logits(len(tokens) - 1)
    assert first.shape == last.shape == (N_VOCAB,)
    assert np.array_equal(ctx.logits(-1), last) and np.array_equal(ctx.logits(-2), first)
    assert not np.array_equal(first, last)
    first[:] = 0  # a copy: the context's buffer is untouched
    assert ctx.logits(1).any()
    with pytest.raises(IndexError, match=r"^no logits for batch index 0: decode it with logits=True$"):
        ctx.logits(0)
    with pytest.raises(IndexError, match=r"^no logits for index -3 \(2 outputs in the last batch\)$"):
        ctx.logits(-3)


def test_embeddings_per_token_and_pooled(model: lb.Model) -> None:
    tokens = model.tokenize(PROMPT)
    with lb.Context(model, n_ctx=128, n_batch=64, n_threads=THREADS, embeddings=True, pooling="mean") as ctx:
        assert ctx.pooling == "mean"
        b = lb.Batch(len(tokens))
        b.add_sequence(tokens, 0, 0)
        ctx.decode(b)
        pooled = ctx.seq_embeddings(0)
        assert pooled.shape == (576,) and pooled.dtype == np.float32 and np.isfinite(pooled).all()
    with lb.Context(model, n_ctx=128, n_batch=64, n_threads=THREADS, embeddings=True, pooling="none") as ctx:
        assert ctx.pooling == "none"
        b = lb.Batch(len(tokens))
        b.add_sequence(tokens, 0, 0)
        ctx.decode(b)
        tok = ctx.embeddings(-1)
        assert tok.shape == (576,) and np.isfinite(tok).all()
        with pytest.raises(IndexError, match=r"^no pooled embeddings for sequence 0 \(pooling=none\)$"):
            ctx.seq_embeddings(0)


# ------------------------------------------------------------------ Batch bounds


def test_batch_token_overflow() -> None:
    b = lb.Batch(3)
    for i in range(3):
        assert b.add(10 + i, i) == i
    assert b.free == 0 and len(b) == 3
    with pytest.raises(lb.BatchFullError, match=r"^batch is full \(3 tokens\)$"):
        b.add(13, 3)
    b.clear()
    b.add(1, 0)
    with pytest.raises(lb.BatchFullError, match=r"^3 tokens do not fit: batch holds 3, 1 used$"):
        b.add_sequence([1, 2, 3], 1)
    assert len(b) == 1  # a refused add leaves the batch as it was
    assert issubclass(lb.BatchFullError, ValueError)


def test_batch_seq_id_overflow() -> None:
    b = lb.Batch(4, n_seq_max=2)
    b.add(1, 0, [0, 1])
    with pytest.raises(lb.BatchFullError, match=r"^a token may belong to 1..2 sequences, got 3$"):
        b.add(2, 1, [0, 1, 2])
    with pytest.raises(lb.BatchFullError, match=r"^a token may belong to 1..2 sequences, got 0$"):
        b.add(2, 1, [])
    assert b.seq_ids_of(0) == [0, 1] and len(b) == 1


def test_batch_construction_and_views() -> None:
    with pytest.raises(ValueError, match=r"^Batch capacity must be positive$"):
        lb.Batch(0)
    with pytest.raises(ValueError, match=r"^Batch n_seq_max must be positive$"):
        lb.Batch(4, n_seq_max=0)
    b = lb.Batch(8, n_seq_max=3)
    with pytest.raises(ValueError, match=r"^add_sequence needs at least one token$"):
        b.add_sequence([], 0)
    last = b.add_sequence([5, 6, 7], 10, seq_id=2)
    assert last == 2 and b.n_outputs == 1
    b.extend([(8, 13, (0, 1, 2), True)])
    assert b.tokens.tolist() == [5, 6, 7, 8]
    assert b.positions.tolist() == [10, 11, 12, 13]
    assert b.logit_flags.tolist() == [0, 0, 1, 1]
    assert (b.min_seq_id(), b.max_seq_id()) == (0, 2)
    b.set_logits(0)
    assert b.n_outputs == 3
    with pytest.raises(IndexError, match=r"^batch index 4 out of range \[0, 4\)$"):
        b.set_logits(4)


def test_decode_rejects_bad_batches(ctx: lb.Context) -> None:
    with pytest.raises(ValueError, match=r"^cannot decode an empty batch$"):
        ctx.decode(lb.Batch(4))
    big = lb.Batch(600)
    big.add_sequence(list(range(100, 700)), 0)
    with pytest.raises(ValueError, match=r"^batch of 600 tokens exceeds n_batch=512$"):
        ctx.decode(big)


@pytest.mark.parametrize("bad", [-1, N_VOCAB, 10**6])
def test_decode_out_of_range_token(ctx: lb.Context, bad: int) -> None:
    b = lb.Batch(3)
    b.add_sequence([1, bad, 5], 0)
    with pytest.raises(lb.TokenizeError, match=rf"^token id {bad} out of range \[0, {N_VOCAB}\)$"):
        ctx.decode(b)
    assert ctx.memory.pos_max(0) == -1  # nothing reached llama.cpp


def test_seq_id_beyond_n_seq_max(model: lb.Model) -> None:
    with lb.Context(model, n_ctx=128, n_batch=32, n_threads=THREADS, n_seq_max=2) as ctx:
        b = lb.Batch(2, n_seq_max=2)
        b.add(5, 0, [0, 2], logits=True)
        with pytest.raises(ValueError, match=r"^sequence id 2 out of range \[0, 2\)$"):
            ctx.decode(b)
        b = lb.Batch(2)
        b.add(5, 0, 0)
        b.add(6, 0, 7, logits=True)  # the first token's id is fine, the second is not
        with pytest.raises(ValueError, match=r"^sequence id 7 out of range \[0, 2\)$"):
            ctx.decode(b)
        b = lb.Batch(1)
        b.add(5, 0, -1, logits=True)
        with pytest.raises(ValueError, match=r"^sequence id -1 out of range \[0, 2\)$"):
            ctx.decode(b)
        with pytest.raises(ValueError, match=r"^sequence id 5 out of range \[0, 2\)$"):
            ctx.memory.remove(5)
    with lb.Context(model, n_ctx=128, n_batch=32, n_threads=THREADS) as ctx:
        b = lb.Batch(2)
        b.add(5, 0, 0)
        b.add(6, 0, 1, logits=True)
        with pytest.raises(ValueError, match=r"^sequence id 1 out of range \[0, 1\)$"):
            ctx.decode(b)


def test_kv_cache_full(model: lb.Model) -> None:
    with lb.Context(model, n_ctx=256, n_batch=256, n_threads=THREADS, n_ubatch=256) as ctx:
        prefill(ctx, [100 + i for i in range(256)])
        b = lb.Batch(1)
        b.add(5, 256, 0, logits=True)
        with pytest.raises(
            lb.NoKvSlotError,
            match=r"^decode: no KV cache slot for a batch of 1 tokens \(n_ctx=256\); "
            "free sequences or use a larger context$",
        ) as info:
            ctx.decode(b)
        assert info.value.code == 1 and isinstance(info.value, lb.DecodeError)


def test_invalid_positions_are_decode_error(ctx: lb.Context, model: lb.Model) -> None:
    prefill(ctx, model.tokenize(PROMPT))
    b = lb.Batch(1)
    b.add(5, 500, 0, logits=True)  # not consecutive with the cached positions
    with pytest.raises(
        lb.DecodeError,
        match=r"^decode: invalid batch \(llama.cpp rejected it; see 'llamabind.native' logs\)$",
    ) as info:
        ctx.decode(b)
    assert info.value.code == -1


# ------------------------------------------------------------------ perf


def test_perf_counters(ctx: lb.Context, model: lb.Model) -> None:
    ctx.reset_perf()
    tokens = model.tokenize(PROMPT)
    prefill(ctx, tokens)
    generate(ctx, 4, pos=len(tokens))
    perf = ctx.perf()
    assert isinstance(perf, lb.PerfData)
    assert perf.n_p_eval == len(tokens)
    assert perf.n_eval == 3
    assert perf.t_p_eval_ms > 0 and perf.t_eval_ms > 0
    ctx.reset_perf()
    after = ctx.perf()
    assert after.t_eval_ms == 0 and after.t_p_eval_ms == 0
    assert after.n_eval <= 1 and after.n_p_eval <= 1  # llama.cpp reports max(1, n)


# ------------------------------------------------------------------ lifetime / threads


def test_closed_context(model: lb.Model) -> None:
    ctx = lb.Context(model, n_ctx=64, n_batch=16, n_threads=THREADS)
    ctx.close()
    ctx.close()
    b = lb.Batch.from_tokens([1, 2])
    for call in (
        lambda: ctx.decode(b),
        lambda: ctx.encode(b),
        lambda: ctx.logits(-1),
        lambda: ctx.perf(),
        lambda: ctx.memory.clear(),
        lambda: ctx.memory.pos_max(0),
        lambda: ctx.state.to_bytes(),
        lambda: ctx.set_threads(1),
        lambda: lb.Sampler(model).greedy().sample(ctx),
    ):
        with pytest.raises(lb.ClosedError, match=r"^Context is closed$"):
            call()
    assert not model.closed  # closing a context never closes its model


@pytest.fixture()
def long_ctx(model: lb.Model) -> Iterator[lb.Context]:
    with lb.Context(model, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=THREADS) as c:
        yield c


def _long_batch(n: int = 512) -> lb.Batch:
    b = lb.Batch(n)
    b.add_sequence([100 + (i * 7) % 20000 for i in range(n)], 0)
    return b


def _start_long_decode(ctx: lb.Context, batch: lb.Batch) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ctx.decode(batch)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 30
    while not ctx._lock.locked():  # wait until the decode holds the context
        assert t.is_alive() or ctx._lock.locked(), "decode finished before the test could observe it"
        assert time.monotonic() < deadline
        time.sleep(0.0005)
    return t, errors


def test_concurrent_use_raises(long_ctx: lb.Context, model: lb.Model) -> None:
    t, errors = _start_long_decode(long_ctx, _long_batch())
    try:
        with pytest.raises(lb.ConcurrentUseError, match=r"^this Context is in use by another thread; "):
            long_ctx.decode(lb.Batch.from_tokens([1, 2, 3]))
        with pytest.raises(lb.ConcurrentUseError):
            long_ctx.logits(-1)
        with pytest.raises(lb.ConcurrentUseError):
            long_ctx.memory.clear()
        with pytest.raises(lb.ConcurrentUseError):
            lb.Sampler(model).greedy().sample(long_ctx)
    finally:
        t.join()
    assert errors == []  # the decode in the other thread was not disturbed
    assert long_ctx.memory.pos_max(0) == 511


def test_abort_from_another_thread(long_ctx: lb.Context, model: lb.Model) -> None:
    batch = _long_batch()
    t, errors = _start_long_decode(long_ctx, batch)
    time.sleep(0.02)
    started = time.monotonic()
    long_ctx.abort()
    t.join()
    assert len(errors) == 1
    assert isinstance(errors[0], lb.AbortedError)
    assert str(errors[0]) == "decode aborted" and errors[0].code == 2
    assert time.monotonic() - started < 5
    # the context is usable afterwards and gives the same output as a fresh one
    long_ctx.memory.clear()
    tokens = model.tokenize(PROMPT)
    after = greedy(long_ctx, tokens, 4)
    with lb.Context(model, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=THREADS) as fresh:
        assert after == greedy(fresh, tokens, 4)


def test_abort_before_decode_and_clear(ctx: lb.Context, model: lb.Model) -> None:
    ctx.abort()
    b = lb.Batch.from_tokens(model.tokenize(PROMPT))
    with pytest.raises(lb.AbortedError, match=r"^decode aborted$"):
        ctx.decode(b)
    ctx.memory.clear()
    ctx.decode(b)  # the flag was reset by the abort
    ctx.abort()
    ctx.clear_abort()
    ctx.memory.clear()
    ctx.decode(b)


def test_abort_flag_uses_no_python_callback() -> None:
    # the abort callback is libc's strlen over a flag buffer: llama.cpp polls it without the GIL
    from llamabind._native.context import _STRLEN

    assert isinstance(_STRLEN, int) and _STRLEN != 0
