"""Sampler basics on the core API: greedy/dist, chains, logit bias, accept, clone, closed samplers."""

from __future__ import annotations

import numpy as np
import pytest

import llamabind as lb
from tests.helpers.core import N_VOCAB, PROMPT, generate, prefill


@pytest.fixture()
def primed(ctx: lb.Context, model: lb.Model) -> lb.Context:
    prefill(ctx, model.tokenize(PROMPT))
    return ctx


def test_greedy_is_argmax(primed: lb.Context, model: lb.Model) -> None:
    with lb.Sampler(model).greedy() as s:
        assert s.names == ["greedy"] and len(s) == 1
        assert s.sample(primed) == int(np.argmax(primed.logits(-1)))
        assert "greedy" in repr(s)


def test_top_k_1_equals_greedy(primed: lb.Context, model: lb.Model) -> None:
    greedy = lb.Sampler(model).greedy().sample(primed)
    assert lb.Sampler(model).top_k(1).dist(seed=7).sample(primed) == greedy


def test_seeded_dist_is_reproducible(ctx: lb.Context, model: lb.Model) -> None:
    tokens = model.tokenize(PROMPT)

    def run(seed: int) -> list[int]:
        ctx.memory.clear()
        prefill(ctx, tokens)
        s = lb.Sampler(model).top_k(40).temp(1.5).dist(seed=seed)
        assert s.seed == seed
        return generate(ctx, 8, pos=len(tokens), sampler=s)

    a, b, c = run(1234), run(1234), run(99)
    assert a == b
    assert a != c


def test_logit_bias_forces_a_token(primed: lb.Context, model: lb.Model) -> None:
    forced = model.tokenize(" banana", add_special=False)[0]
    s = lb.Sampler(model).logit_bias({forced: 100.0}).greedy()
    assert s.names == ["logit_bias", "greedy"]
    assert s.sample(primed) == forced


@pytest.mark.parametrize("bad", [-1, N_VOCAB, 10**7])
def test_out_of_range_ids_in_sampler_calls(model: lb.Model, bad: int) -> None:
    msg = rf"^token id {bad} out of range \[0, {N_VOCAB}\)$"
    with pytest.raises(lb.TokenizeError, match=msg):
        lb.Sampler(model).logit_bias({5: 1.0, bad: -1.0})
    s = lb.Sampler(model).penalties(64, 1.1).greedy()
    with pytest.raises(lb.TokenizeError, match=msg):
        s.accept(bad)
    s.accept(5)  # in range: fine


def test_sample_logits_and_apply(model: lb.Model) -> None:
    logits = np.full(N_VOCAB, -10.0, dtype=np.float32)
    logits[[3, 77, 500]] = [1.0, 5.0, 3.0]
    assert lb.Sampler(model).greedy().sample_logits(logits) == 77
    ids, probs = lb.Sampler(model).top_k(2).dist(seed=1).apply(logits)
    assert sorted(ids.tolist()) == [77, 500]
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_chain_without_selector(primed: lb.Context, model: lb.Model) -> None:
    # llama.cpp itself aborts the process here; llamabind raises first
    msg = r"^the sampler chain selected no token \(does it end in greedy/dist/mirostat\?\)$"
    with pytest.raises(ValueError, match=msg):
        lb.Sampler(model).top_k(5).sample(primed)
    with pytest.raises(ValueError, match=msg):
        lb.Sampler(model).sample(primed)
    with pytest.raises(ValueError, match=msg):
        lb.Sampler(model).greedy().top_k(5).sample(primed)


def test_sample_without_logits(ctx: lb.Context, model: lb.Model) -> None:
    s = lb.Sampler(model).greedy()
    # nothing decoded yet: llama.cpp would assert, llamabind raises
    with pytest.raises(IndexError, match=r"^no logits for batch index -1: decode it with logits=True$"):
        s.sample(ctx)
    b = lb.Batch(3)
    b.add_sequence([1, 2, 3], 0)  # logits for index 2 only
    ctx.decode(b)
    with pytest.raises(IndexError, match=r"^no logits for batch index 0: decode it with logits=True$"):
        s.sample(ctx, 0)
    with pytest.raises(IndexError, match=r"^no logits for batch index 7: decode it with logits=True$"):
        s.sample(ctx, 7)
    assert 0 <= s.sample(ctx, 2) < N_VOCAB


def test_penalties_validation(model: lb.Model) -> None:
    with pytest.raises(ValueError, match=r"^repeat penalty must be > 0 \(1.0 disables it\)$"):
        lb.Sampler(model).penalties(64, 0.0)


def test_clone_and_reset(primed: lb.Context, model: lb.Model) -> None:
    s = lb.Sampler(model).top_k(40).temp(1.0).dist(seed=5)
    twin = s.clone()
    assert twin.names == s.names
    assert twin.sample(primed) == s.sample(primed)  # same RNG state
    s.reset()
    twin.close()
    assert not s.closed


def test_sampler_perf(primed: lb.Context, model: lb.Model) -> None:
    s = lb.Sampler(model).greedy()
    s.sample(primed)
    s.sample(primed)
    perf = s.perf()
    assert isinstance(perf, lb.SamplerPerf)
    assert perf.n_sample == 2 and perf.t_sample_ms >= 0
    s.reset_perf()


def test_python_logits_processor(primed: lb.Context, model: lb.Model) -> None:
    target = 1234

    def only_target(_history: object, logits: np.ndarray) -> np.ndarray:
        out = np.full_like(logits, -np.inf)
        out[target] = 0.0
        return out

    s = lb.Sampler(model).logits_processor(only_target).greedy()
    assert s.sample(primed) == target


def test_closed_sampler(primed: lb.Context, model: lb.Model) -> None:
    s = lb.Sampler(model).greedy()
    s.close()
    s.close()
    assert s.closed
    for call in (
        lambda: s.sample(primed),
        lambda: s.accept(5),
        lambda: s.reset(),
        lambda: s.clone(),
        lambda: len(s),
        lambda: s.top_k(3),
        lambda: s.sample_logits(np.zeros(N_VOCAB, dtype=np.float32)),
    ):
        with pytest.raises(lb.ClosedError, match=r"^Sampler is closed$"):
            call()
