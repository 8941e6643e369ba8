"""Speculative decoding: n-gram, draft-model and MTP drafters; exact greedy output; sampled
verification keeps the target's distribution (counters and statistics, never timings)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from llamabind.core.batch_ext import BatchExt, nextn_supported
from llamabind.generation.generator import Generator
from llamabind.generation.sampling import SamplingParams
from llamabind.speculative import (
    Draft,
    DraftModelDrafter,
    MtpConfig,
    MtpDrafter,
    NgramDrafter,
    rejection_step,
    verify_draft,
)
from tests.helpers.core import GREEDY, THREADS
from tests.helpers.fixtures_mtp import build_tiny_glm4moe_mtp

ECHO_PROMPTS = [
    "<|im_start|>user\nRepeat this sentence exactly: the quick brown fox jumps over the lazy dog."
    "<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nCopy the list: apples, pears, plums, cherries, grapes, melons.<|im_end|>\n"
    "<|im_start|>assistant\n",
    "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\ndef mul(a, b):\n",
]


@pytest.fixture(scope="module")
def spec_ctx(model: lb.Model) -> Iterator[lb.Context]:
    c = lb.Context(model, n_ctx=1024, n_batch=256, n_threads=THREADS)
    yield c
    c.close()


def _plain(gen: Generator, prompt: str, n: int, **kw: object) -> list[int]:
    gen.reset()
    return gen.complete(prompt, max_tokens=n, sampling=GREEDY, **kw).tokens


# --------------------------------------------------------------------------- units


def test_ngram_lookup_finds_latest_continuation() -> None:
    d = NgramDrafter(n_draft=4, ngram_min=2, ngram_max=3)
    seq = [1, 2, 3, 4, 5, 9, 1, 2, 3, 7, 8, 1, 2]
    # suffix (1, 2) last seen followed by 3, 7, 8, ...; trigram (3, 1, 2) never seen before
    assert d.lookup(seq, 4) == [3, 7, 8, 1]
    assert d.lookup([*seq, 3], 4) == [7, 8, 1, 2]  # (1, 2, 3) latest occurrence: followed by 7
    assert d.lookup([5, 6], 4) == []  # a diverging history rebuilds the index
    assert d.draft([1, 2, 3, 4, 1, 2], 3, 2).tokens == [4, 1]
    assert d.draft([1, 2, 3], 4, 0).tokens == []


def test_rejection_rule_matches_target_distribution() -> None:
    """Accept x ~ q with min(1, p/q), else resample from norm(max(p-q, 0)): output ~ p."""
    rng = np.random.default_rng(7)
    p = np.array([0.45, 0.25, 0.15, 0.1, 0.05, 0.0])
    q = np.array([0.05, 0.1, 0.15, 0.2, 0.3, 0.2])  # a poor, different proposal (mass outside p too)
    n = 20000
    counts = np.zeros(6)
    accepted = 0
    for _ in range(n):
        x = int(rng.choice(6, p=q))
        ok, tok = rejection_step(p, q, x, rng)
        counts[tok] += 1
        accepted += ok
    assert counts[5] == 0  # never emits a token the target gives probability 0
    expected = p[:5] * n
    chi2 = float((((counts[:5] - expected) ** 2) / expected).sum())
    assert chi2 < 20.5  # chi-square, 4 dof, p = 0.0004
    # the theoretical acceptance rate is sum(min(p, q))
    assert abs(accepted / n - float(np.minimum(p, q).sum())) < 0.02


# ----------------------------------------------------------------- greedy exactness


def test_ngram_greedy_output_equals_plain(spec_ctx: lb.Context) -> None:
    gen = Generator(spec_ctx)
    drafter = NgramDrafter(n_draft=6)
    total_drafted = total_accepted = 0
    for prompt in ECHO_PROMPTS:
        plain = _plain(gen, prompt, 32)
        gen.reset()
        r = gen.complete(prompt, max_tokens=32, sampling=GREEDY, draft=drafter)
        assert r.tokens == plain, prompt
        t = r.timings
        assert t.accepted_tokens <= t.drafted_tokens
        assert t.generated_tokens in (len(r.tokens), len(r.tokens) + 1)  # + the end-of-generation token
        # every round yields its accepted drafts plus one token of the target's own
        assert t.spec_rounds + t.accepted_tokens + 1 >= len(r.tokens)
        total_drafted += t.drafted_tokens
        total_accepted += t.accepted_tokens
    assert total_drafted > 0 and total_accepted > 0
    assert drafter.stats.drafted == total_drafted and drafter.stats.accepted == total_accepted


def test_draft_model_drafting_for_itself_accepts_everything(model: lb.Model, spec_ctx: lb.Context) -> None:
    gen = Generator(spec_ctx)
    with DraftModelDrafter(model, n_draft=4, n_ctx=1024, n_threads=THREADS, target=model) as drafter:
        for prompt in (ECHO_PROMPTS[2], "The history of the printing press"):
            plain = _plain(gen, prompt, 24, ignore_eos=True)
            gen.reset()
            r = gen.complete(prompt, max_tokens=24, sampling=GREEDY, draft=drafter, ignore_eos=True)
            assert r.tokens == plain
        st = drafter.stats
        assert st.drafted >= 30
        assert st.acceptance_rate >= 0.95, st
        assert st.tokens_per_round > 3.0


def test_speculative_respects_max_tokens_stop_and_prefix_reuse(spec_ctx: lb.Context) -> None:
    gen = Generator(spec_ctx)
    drafter = NgramDrafter(n_draft=8)
    prompt = ECHO_PROMPTS[0]
    gen.reset()
    r = gen.complete(prompt, max_tokens=7, sampling=GREEDY, draft=drafter)
    assert len(r.tokens) == 7 and r.finish_reason == "length"
    full = r.tokens + _plain(gen, prompt, 14)[7:]
    text = gen.model.detokenize(full)
    stop = text[10:16]
    gen.reset()
    spec = gen.complete(prompt, max_tokens=14, sampling=GREEDY, stop=[stop], draft=drafter)
    plain_text = text[: text.index(stop)]
    assert spec.text == plain_text and spec.finish_reason == "stop" and stop not in spec.text
    # the KV cache mirrors the cached tokens: a follow-up call reuses the prefix
    again = gen.complete(prompt + "x", max_tokens=4, sampling=GREEDY, draft=drafter)
    assert again.timings.cached_tokens > 0
    assert spec_ctx.memory.pos_max(0) == len(gen.cached) - 1


# ------------------------------------------------------------------ sampled exactness


def test_sampled_verification_keeps_target_distribution(model: lb.Model, spec_ctx: lb.Context) -> None:
    """End to end on the real model, over a 4-token vocabulary slice (top_k=4): a 1-token draft
    from a different distribution q, verified with the rejection rule, emits tokens ~ p."""
    sp = SamplingParams(temperature=1.0, top_k=4, top_p=1.0, min_p=0.0, seed=11)
    gen = Generator(spec_ctx)
    gen.reset()
    prompt = model.tokenize("My favourite colour is")
    gen.prefill(prompt)
    target = sp.build(model)
    try:
        ids, probs = target.apply(spec_ctx.logits(-1))
        p = dict(zip(ids.tolist(), probs.tolist(), strict=True))
        assert len(p) == 4
        # the proposal: uniform over the slice plus one token outside it
        outside = next(t for t in range(1000, 2000) if t not in p)
        q_ids = np.array([*p.keys(), outside], dtype=np.int32)
        q_p = np.full(5, 0.2, dtype=np.float32)
        rng = np.random.default_rng(3)
        # decode [last, x] once per distinct draft token x; verify many times from those logits
        last = prompt[-1]
        batch = lb.Batch(2)
        counts: dict[int, int] = {}
        n = 3000
        by_x: dict[int, int] = {}
        for _ in range(n):
            x = int(rng.choice(q_ids, p=q_p))
            by_x[x] = by_x.get(x, 0) + 1
        accepted = 0
        for x, k in by_x.items():
            spec_ctx.memory.remove(0, len(prompt) - 1, -1)
            batch.clear()
            batch.add(last, len(prompt) - 1, 0, True)
            batch.add(x, len(prompt), 0, True)
            spec_ctx.decode(batch)
            for _ in range(k):
                smp = sp.build(model)
                try:
                    v = verify_draft(spec_ctx, smp, [0, 1], Draft([x], [(q_ids, q_p)]), rng=rng)
                finally:
                    smp.close()
                counts[v.tokens[0]] = counts.get(v.tokens[0], 0) + 1
                accepted += v.accepted
                assert len(v.tokens) == v.accepted + 1
        assert set(counts) <= set(p)
        chi2 = sum((counts.get(t, 0) - n * pt) ** 2 / (n * pt) for t, pt in p.items())
        assert chi2 < 16.3, (counts, p)  # 3 dof, p = 0.001
        assert 0 < accepted < n
    finally:
        target.close()
        gen.reset()


def test_sampled_draft_model_generation_runs(model: lb.Model, spec_ctx: lb.Context) -> None:
    sp = SamplingParams(temperature=0.9, top_k=20, seed=5)
    gen = Generator(spec_ctx)
    with DraftModelDrafter(
        model,
        n_draft=3,
        n_ctx=1024,
        n_threads=THREADS,
        mode="sample",
        draft_sampling=SamplingParams(temperature=1.3, top_k=30),
    ) as drafter:
        gen.reset()
        r = gen.complete("Once upon a time", max_tokens=8, sampling=sp, draft=drafter, ignore_eos=True)
        assert len(r.tokens) == 8
        assert 0 < r.timings.drafted_tokens and r.timings.accepted_tokens <= r.timings.drafted_tokens
        gen.reset()
        r2 = gen.complete("Once upon a time", max_tokens=8, sampling=sp, draft=drafter, ignore_eos=True)
        assert r2.tokens == r.tokens  # seeded: reproducible


# --------------------------------------------------------------------------------- MTP


@pytest.fixture(scope="module")
def mtp_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lb.Model]:
    path = build_tiny_glm4moe_mtp(tmp_path_factory.mktemp("mtp"), mix=0.03)
    m = lb.Model(path, load_mtp=True)
    yield m
    m.close()


def test_mtp_greedy_equals_plain_on_tiny_glm4moe(mtp_model: lb.Model) -> None:
    assert nextn_supported()
    assert mtp_model.n_layer_nextn == 1 and mtp_model.architecture == "glm4moe"
    with lb.Context(mtp_model, n_ctx=256, n_batch=64, n_threads=THREADS) as ctx:
        gen = Generator(ctx)
        with (
            MtpDrafter(ctx, MtpConfig(3)) as drafter,
            lb.Context(mtp_model, n_ctx=256, n_batch=64, n_threads=THREADS) as ref_ctx,
        ):
            ref_gen = Generator(ref_ctx)
            for prompt in ("The quick brown fox", "Hello there, how are you today?"):
                plain = _plain(ref_gen, prompt, 24, ignore_eos=True)
                gen.reset()
                drafter.reset()
                r = gen.complete(prompt, max_tokens=24, sampling=GREEDY, draft=drafter, ignore_eos=True)
                assert r.tokens == plain
                # continuing from the cache (prefix reuse) keeps the MTP mirror in step
                kw = {"max_tokens": 10, "sampling": GREEDY, "ignore_eos": True}
                follow = gen.complete(prompt + " and then", draft=drafter, **kw)  # type: ignore[arg-type]
                ref_gen.reset()
                ref = ref_gen.complete(prompt + " and then", **kw)  # type: ignore[arg-type]
                assert follow.tokens == ref.tokens
            st = drafter.stats
            assert st.drafted > 0
            assert 0 < st.accepted < st.drafted  # full and partial acceptance both happened
            assert drafter.ctx.memory.pos_max(0) == len(gen.cached) - 1


def test_mtp_on_model_without_nextn_layers_is_a_clear_error(model: lb.Model, spec_ctx: lb.Context) -> None:
    with pytest.raises(lb.UnsupportedError, match=r"n_layer_nextn = 0") as exc:
        MtpDrafter(spec_ctx)
    assert model.path.name in str(exc.value) and "llama" in str(exc.value)
    with pytest.raises(lb.ContextCreateError, match="no next-n"):
        lb.Context(model, n_ctx=256, ctx_type="mtp", other=spec_ctx)


def test_mtp_model_loaded_without_mtp_layers_is_refused(mtp_model: lb.Model) -> None:
    plain = lb.Model(mtp_model.path)  # load_mtp left at llama.cpp's default (off)
    try:
        with lb.Context(plain, n_ctx=256, n_threads=THREADS) as ctx:
            with pytest.raises(lb.UnsupportedError, match="load_mtp=True"):
                MtpDrafter(ctx)
            # llama.cpp would abort the process here; the core refuses first
            with pytest.raises(lb.ContextCreateError, match="load_mtp=True"):
                lb.Context(plain, n_ctx=256, ctx_type="mtp", other=ctx)
    finally:
        plain.close()


def test_batch_ext_bounds(spec_ctx: lb.Context) -> None:
    b = BatchExt(spec_ctx)
    with pytest.raises(lb.TokenizeError):
        b.add(spec_ctx.n_vocab, 0)
    with pytest.raises(ValueError, match="sequence id"):
        b.add(1, 0, seq_id=5)
    with pytest.raises(ValueError, match="empty"):
        b.process()
    b.add(1, 0, output=True)
    with pytest.raises(ValueError, match="width"):
        b.add(2, 1, embd=np.zeros(3, np.float32))
    assert len(b) == 1
    b.close()
    spec_ctx.memory.clear()


# --------------------------------------------------------------------------------- CLI


def test_cli_speculative_ngram_json(capsys: pytest.CaptureFixture[str], model_path: Path) -> None:
    from llamabind.cli.main import main

    rc = main(
        [
            "speculative",
            "--ngram",
            "-m",
            str(model_path),
            "-p",
            ECHO_PROMPTS[1],
            "-n",
            "12",
            "-t",
            str(THREADS),
            "-c",
            "512",
            "--json",
        ]
    )
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    assert info["identical"] is True and info["drafter"] == "ngram"
    assert info["speculative"]["drafted"] > 0 and "speedup" in info


def test_cli_speculative_mtp_without_nextn_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    from llamabind.cli.main import main

    rc = main(["speculative", "--mtp", "-p", "hi", "-n", "4", "-t", str(THREADS), "-c", "256"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "UnsupportedError" in err and "next-n" in err
