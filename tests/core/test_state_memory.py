"""KV memory operations (ctx.memory) and state save/load (ctx.state), checked by greedy continuations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import llamabind as lb
from tests.helpers.core import LONG_PROMPT, THREADS, generate, prefill

N_GEN = 8
K = 20  # the cut point used by the remove tests


def _new_ctx(model: lb.Model, **kw: object) -> lb.Context:
    params: dict[str, object] = {"n_ctx": 256, "n_batch": 64, "n_ubatch": 64, "n_threads": THREADS}
    params.update(kw)
    return lb.Context(model, **params)  # type: ignore[arg-type]


@pytest.fixture()
def small(model: lb.Model) -> Iterator[lb.Context]:
    with _new_ctx(model) as c:
        yield c


@pytest.fixture(scope="module")
def tokens(model: lb.Model) -> list[int]:
    toks = model.tokenize(LONG_PROMPT)
    assert len(toks) > K + 8
    return toks


@pytest.fixture(scope="module")
def suffix(model: lb.Model) -> list[int]:
    return model.tokenize(" a lighthouse keeper who", add_special=False)


# ------------------------------------------------------------------ memory


def test_remove_then_generate_equals_fresh_prefill(
    small: lb.Context, model: lb.Model, tokens: list[int], suffix: list[int]
) -> None:
    # context A: the whole prompt, then everything from position K on removed
    prefill(small, tokens[:K])
    prefill(small, tokens[K:], start=K)
    assert small.memory.pos_max(0) == len(tokens) - 1
    assert small.memory.remove(0, K, -1) is True
    assert (small.memory.pos_min(0), small.memory.pos_max(0)) == (0, K - 1)
    prefill(small, suffix, start=K)
    after_remove = generate(small, N_GEN, pos=K + len(suffix))
    # context B: a fresh prefill of the first K tokens only
    with _new_ctx(model) as fresh:
        prefill(fresh, tokens[:K])
        prefill(fresh, suffix, start=K)
        expected = generate(fresh, N_GEN, pos=K + len(suffix))
    assert after_remove == expected


def test_remove_range_and_pos_min(small: lb.Context, tokens: list[int]) -> None:
    prefill(small, tokens)
    assert small.memory.remove(0, 0, 5)
    assert (small.memory.pos_min(0), small.memory.pos_max(0)) == (5, len(tokens) - 1)
    assert small.memory.remove(-1, -1, -1)  # every sequence, every position
    assert (small.memory.pos_min(0), small.memory.pos_max(0)) == (-1, -1)


@pytest.mark.parametrize("unified", [False, True], ids=["per-seq-streams", "unified"])
def test_copy_and_keep(model: lb.Model, tokens: list[int], suffix: list[int], unified: bool) -> None:
    # separate KV streams per sequence copy the data; a unified cache only shares the cells
    with _new_ctx(model, n_seq_max=2, kv_unified=unified) as ctx:
        prefill(ctx, tokens, seq=0)
        ctx.memory.copy(0, 1)
        assert ctx.memory.pos_max(1) == ctx.memory.pos_max(0) == len(tokens) - 1
        # the copy continues exactly like the original
        prefill(ctx, suffix, start=len(tokens), seq=1)
        on_copy = generate(ctx, N_GEN, pos=len(tokens) + len(suffix), seq=1)
        ctx.memory.remove(1, len(tokens), -1)
        prefill(ctx, suffix, start=len(tokens), seq=0)
        on_original = generate(ctx, N_GEN, pos=len(tokens) + len(suffix), seq=0)
        assert on_copy == on_original
        ctx.memory.keep(1)
        assert ctx.memory.pos_max(0) == -1
        assert ctx.memory.pos_max(1) == len(tokens) - 1
        with pytest.raises(ValueError, match=r"^sequence id 2 out of range \[0, 2\)$"):
            ctx.memory.copy(0, 2)
        with pytest.raises(ValueError, match=r"^sequence id 5 out of range \[0, 2\)$"):
            ctx.memory.keep(5)
        with pytest.raises(ValueError, match=r"^sequence id -1 out of range \[0, 2\)$"):
            ctx.memory.keep(-1)  # only remove() takes -1 ("all"); llama.cpp would abort


def test_shift_closes_a_gap(small: lb.Context, model: lb.Model, tokens: list[int]) -> None:
    assert small.memory.can_shift
    n = len(tokens)
    prefill(small, tokens)
    small.memory.remove(0, 5, 15)  # drop ten tokens from the middle
    small.memory.shift(0, 15, -1, -10)  # and slide the rest back (context shifting)
    assert (small.memory.pos_min(0), small.memory.pos_max(0)) == (0, n - 11)
    # decoding continues at the shifted position (a wrong position would be rejected by llama.cpp)
    b = lb.Batch(1)
    b.add(tokens[-1], n - 10, 0, logits=True)
    small.decode(b)
    out = generate(small, 4, pos=n - 9)
    assert all(0 <= t < model.n_vocab for t in out)


def test_divide(small: lb.Context, tokens: list[int]) -> None:
    n = len(tokens)
    prefill(small, tokens)
    small.memory.divide(0, 0, -1, 2)
    assert (small.memory.pos_min(0), small.memory.pos_max(0)) == (0, (n - 1) // 2)
    with pytest.raises(ValueError, match=r"^divisor must be positive$"):
        small.memory.divide(0, 0, -1, 0)


def test_clear(small: lb.Context, tokens: list[int]) -> None:
    prefill(small, tokens)
    small.memory.clear(data=False)
    assert small.memory.pos_max(0) == -1
    prefill(small, tokens)
    small.memory.clear()
    assert small.memory.pos_max(0) == -1
    prefill(small, tokens)  # positions start from 0 again
    assert small.memory.pos_max(0) == len(tokens) - 1


def test_memory_seq_bounds(small: lb.Context) -> None:
    for call in (
        lambda: small.memory.remove(1),
        lambda: small.memory.pos_max(1),
        lambda: small.memory.pos_min(3),
        lambda: small.memory.shift(1, 0, -1, 2),
        lambda: small.memory.divide(7, 0, -1, 2),
    ):
        with pytest.raises(ValueError, match=r"^sequence id \d out of range \[0, 1\)$"):
            call()
    with pytest.raises(ValueError, match=r"^sequence id -2 out of range \[0, 1\)$"):
        small.memory.remove(-2)
    # -1 means "every sequence" for remove() only; llama.cpp asserts (aborts) on it elsewhere
    for call in (
        lambda: small.memory.pos_max(-1),
        lambda: small.memory.pos_min(-1),
        lambda: small.memory.keep(-1),
        lambda: small.memory.copy(-1, 0),
        lambda: small.memory.shift(-1, 0, -1, 1),
        lambda: small.memory.divide(-1, 0, -1, 2),
    ):
        with pytest.raises(ValueError, match=r"^sequence id -1 out of range \[0, 1\)$"):
            call()


# ------------------------------------------------------------------ whole-context state


def _continue(ctx: lb.Context, tokens: list[int], seq: int = 0) -> list[int]:
    """Decode the last prompt token (state holds no logits) and generate greedily."""
    b = lb.Batch(1)
    b.add(tokens[-1], len(tokens) - 1, seq, logits=True)
    ctx.decode(b)
    return generate(ctx, N_GEN, pos=len(tokens), seq=seq)


def test_state_bytes_roundtrip(small: lb.Context, model: lb.Model, tokens: list[int]) -> None:
    prefill(small, tokens[:-1])
    data = small.state.to_bytes()
    assert len(data) > 10_000
    expected = _continue(small, tokens)
    # into a different context of the same shape
    with _new_ctx(model) as other:
        other.state.from_bytes(data)
        assert other.memory.pos_max(0) == len(tokens) - 2
        assert _continue(other, tokens) == expected
    # back into the same context, after it moved on
    small.state.from_bytes(data)
    assert small.memory.pos_max(0) == len(tokens) - 2
    assert _continue(small, tokens) == expected


def test_state_file_roundtrip(small: lb.Context, model: lb.Model, tokens: list[int], tmp_path: Path) -> None:
    prefill(small, tokens[:-1])
    path = tmp_path / "session.bin"
    small.state.save(path, tokens[:-1])
    assert path.stat().st_size > 10_000
    expected = _continue(small, tokens)
    with _new_ctx(model) as other:
        assert other.state.load(path) == tokens[:-1]
        assert _continue(other, tokens) == expected


# ------------------------------------------------------------------ per-sequence state


def test_seq_state_bytes_roundtrip(small: lb.Context, model: lb.Model, tokens: list[int]) -> None:
    head = tokens[:-1]
    prefill(small, head)
    data = small.state.seq_to_bytes(0)
    assert data
    expected = _continue(small, tokens)
    with _new_ctx(model) as other:
        other.state.seq_from_bytes(data, 0)
        assert other.memory.pos_max(0) == len(head) - 1
        assert _continue(other, tokens) == expected


def test_seq_state_into_another_sequence(model: lb.Model, tokens: list[int]) -> None:
    head = tokens[:-1]
    with _new_ctx(model, n_seq_max=2) as ctx:
        prefill(ctx, head, seq=0)
        data = ctx.state.seq_to_bytes(0)
        ctx.state.seq_from_bytes(data, 1)
        assert ctx.memory.pos_max(1) == len(head) - 1
        assert _continue(ctx, tokens, seq=1) == _continue(ctx, tokens, seq=0)


def test_seq_state_file_roundtrip(
    small: lb.Context, model: lb.Model, tokens: list[int], tmp_path: Path
) -> None:
    head = tokens[:-1]
    prefill(small, head)
    path = tmp_path / "seq0.bin"
    small.state.seq_save(path, 0, head)
    expected = _continue(small, tokens)
    with _new_ctx(model) as other:
        assert other.state.seq_load(path, 0) == head
        assert _continue(other, tokens) == expected


# ------------------------------------------------------------------ bad state


def test_bad_state_bytes(small: lb.Context, tokens: list[int]) -> None:
    prefill(small, tokens)
    good = small.state.to_bytes()
    rejected = "^llama.cpp rejected the state data \\(different model or context size\\?\\)$"
    with pytest.raises(lb.StateError, match=r"^empty state$"):
        small.state.from_bytes(b"")
    with pytest.raises(lb.StateError, match=rejected):
        small.state.from_bytes(os.urandom(1000))
    with pytest.raises(lb.StateError, match=rejected):
        small.state.from_bytes(good[: len(good) // 2])
    with pytest.raises(lb.StateError, match=rejected):
        small.state.from_bytes(good[:8] + b"\xff" * 8 + good[16:])
    with pytest.raises(lb.StateError, match=r"^empty sequence state$"):
        small.state.seq_from_bytes(b"", 0)
    with pytest.raises(
        lb.StateError, match=r"^llama.cpp could not restore the sequence state into sequence 0$"
    ):
        small.state.seq_from_bytes(os.urandom(1000), 0)
    # the context still works after every rejection
    small.state.from_bytes(good)
    assert small.memory.pos_max(0) == len(tokens) - 1


def test_bad_state_files(small: lb.Context, tmp_path: Path) -> None:
    missing = tmp_path / "missing.bin"
    with pytest.raises(lb.StateError, match=f"^state file not found: {missing}$"):
        small.state.load(missing)
    with pytest.raises(lb.StateError, match=f"^state file not found: {missing}$"):
        small.state.seq_load(missing, 0)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(5000))
    with pytest.raises(
        lb.StateError,
        match=f"^could not load state from {garbage} \\(wrong model, context size or corrupt file\\)$",
    ):
        small.state.load(garbage)
    with pytest.raises(lb.StateError, match=f"^could not load sequence state from {garbage}$"):
        small.state.seq_load(garbage, 0)
    with pytest.raises(lb.StateError, match=f"^state file not found: {tmp_path}$"):
        small.state.load(tmp_path)  # a directory


def test_state_file_with_too_many_tokens(model: lb.Model, small: lb.Context, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    with _new_ctx(model, n_ctx=1024) as big:
        prefill(big, [100 + i for i in range(8)])
        big.state.save(path, [100] * 600)  # more tokens than the small context can hold
    with pytest.raises(lb.StateError, match=f"^could not load state from {path} "):
        small.state.load(path)


def test_state_save_to_unwritable_path(small: lb.Context, tmp_path: Path) -> None:
    bad = tmp_path / "no" / "such" / "dir" / "s.bin"
    with pytest.raises(lb.StateError, match=f"^could not save state to {bad}$"):
        small.state.save(bad, [1, 2])
    with pytest.raises(lb.StateError, match=f"^could not save sequence 0 to {bad}$"):
        small.state.seq_save(bad, 0, [1, 2])
