"""Generator behaviour a user sees: stop strings and tokens, limits, prefix reuse, cancellation,
context overflow, logprobs and UTF-8 streaming — on the real model, greedy unless said otherwise."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

import llamabind as lb
from llamabind.generation.generator import common_prefix
from tests.helpers.core import GREEDY, THREADS, prefill

PROMPT = "The capital of France is"
# greedy: " Paris.\n\nThe United States has a population of approximately 311 million people.\n\n…"
N_REF = 40


def _ctx(model: lb.Model, n_ctx: int = 1024) -> lb.Context:
    return lb.Context(model, n_ctx=n_ctx, n_batch=512, n_threads=THREADS)


@pytest.fixture()
def gen(model: lb.Model) -> Iterator[lb.Generator]:
    with _ctx(model) as ctx:
        yield lb.Generator(ctx)


@pytest.fixture(scope="module")
def reference(model: lb.Model) -> lb.GenerationResult:
    """The greedy continuation of PROMPT, from a context of its own."""
    with _ctx(model) as ctx:
        return lb.Generator(ctx).complete(PROMPT, sampling=GREEDY, max_tokens=N_REF, ignore_eos=True)


def _evals(ctx: lb.Context) -> tuple[int, int]:
    """llama.cpp's (n_p_eval, n_eval) since the last reset_perf. It reports at least 1 for each
    (``max(1, n)``), so a count whose time is 0 is read as 0."""
    p = ctx.perf()
    return (p.n_p_eval if p.t_p_eval_ms > 0 else 0, p.n_eval if p.t_eval_ms > 0 else 0)


def _pieces(model: lb.Model, tokens: list[int]) -> list[str]:
    return [model.vocab.token_to_piece(t).decode("utf-8") for t in tokens]


def _split_stops(model: lb.Model, tokens: list[int]) -> list[tuple[str, int]]:
    """Stop strings the tokenizer splits, each with where it cuts the greedy text: each starts
    inside one generated token and ends inside the next, first occurs there, and tokenizes to
    two tokens or more."""
    pieces = _pieces(model, tokens)
    text = "".join(pieces)
    starts = np.cumsum([0, *map(len, pieces)]).tolist()
    found = []
    for i in range(2, len(tokens) - 1):
        if len(pieces[i]) < 3 or len(pieces[i + 1]) < 3:
            continue
        cut = starts[i] + 1
        stop = text[cut : starts[i + 1] + 2]
        if text.find(stop) == cut and len(model.tokenize(stop, add_special=False)) >= 2:
            found.append((stop, cut))
    return found


def _stream(gen: lb.Generator, prompt: str, **kw: object) -> list[lb.GenerationChunk]:
    return list(gen.stream(prompt, **kw))  # type: ignore[arg-type]


def _assert_no_leak(chunks: list[lb.GenerationChunk], expected: str) -> None:
    """Every prefix of the stream is a prefix of ``expected``, and the whole stream is it."""
    sent = ""
    for c in chunks:
        sent += c.text
        assert expected.startswith(sent), f"leaked: {sent!r} is not a prefix of {expected!r}"
    assert sent == expected


# ------------------------------------------------------------------------ stops and limits


def test_stop_string_split_across_tokens(
    model: lb.Model, gen: lb.Generator, reference: lb.GenerationResult
) -> None:
    text = reference.text
    stops = _split_stops(model, reference.tokens)
    assert stops, "no split stop string in the greedy continuation"
    stop, cut = stops[0]
    assert len(model.tokenize(stop, add_special=False)) >= 2
    chunks = _stream(gen, PROMPT, sampling=GREEDY, max_tokens=N_REF, stop=[stop])
    _assert_no_leak(chunks, text[:cut])
    assert chunks[-1].finish_reason == "stop"
    assert all(c.finish_reason is None for c in chunks[:-1])
    # no chunk holds any part of the stop string
    assert not any(stop[:k] in c.text for c in chunks for k in range(2, len(stop) + 1))
    r = gen.complete(PROMPT, sampling=GREEDY, max_tokens=N_REF, stop=[stop])
    assert (r.text, r.finish_reason, r.stop) == (text[:cut], "stop", stop)
    # every split stop string found is cut exactly
    for other, at in stops[1:]:
        r = gen.complete(PROMPT, sampling=GREEDY, max_tokens=N_REF, stop=[other])
        assert (r.text, r.stop) == (text[:at], other)


def test_several_stop_strings(model: lb.Model, gen: lb.Generator, reference: lb.GenerationResult) -> None:
    text = reference.text
    (early, at), *_, (late, _) = _split_stops(model, reference.tokens)
    assert early != late
    stops = ["never appears ¤", late, early, "\n\nThe United Kingdom"]
    chunks = _stream(gen, PROMPT, sampling=GREEDY, max_tokens=N_REF, stop=stops)
    _assert_no_leak(chunks, text[:at])
    r = gen.complete(PROMPT, sampling=GREEDY, max_tokens=N_REF, stop=stops)
    assert (r.text, r.finish_reason, r.stop) == (text[:at], "stop", early)
    # a stop string that starts like the text but diverges is released, not swallowed
    r = gen.complete(PROMPT, sampling=GREEDY, max_tokens=N_REF, stop=["Paris.\n\nThe United Kingdom"])
    assert (r.text, r.finish_reason, r.stop) == (text, "length", None)
    # a stop string at the very start of the output: nothing at all is emitted
    first = text[:4]
    chunks = _stream(gen, PROMPT, sampling=GREEDY, max_tokens=N_REF, stop=[first])
    assert [c.text for c in chunks] == [""] and chunks[-1].finish_reason == "stop"


def test_stop_tokens(model: lb.Model, gen: lb.Generator, reference: lb.GenerationResult) -> None:
    k = 5
    stop_token = reference.tokens[k]
    assert stop_token not in reference.tokens[:k]
    r = gen.complete(PROMPT, sampling=GREEDY, max_tokens=N_REF, stop_tokens=[stop_token, 12345])
    assert r.finish_reason == "stop"
    assert r.tokens == reference.tokens[:k]  # the stop token itself is not part of the output
    assert r.text == model.detokenize(reference.tokens[:k])


def test_max_tokens_gives_length(gen: lb.Generator, reference: lb.GenerationResult) -> None:
    for n in (1, 5, 17):
        chunks = _stream(gen, PROMPT, sampling=GREEDY, max_tokens=n)
        assert chunks[-1].finish_reason == "length"
        assert [t for c in chunks for t in c.tokens] == reference.tokens[:n]
        r = gen.complete(PROMPT, sampling=GREEDY, max_tokens=n)
        assert (r.finish_reason, r.completion_tokens, r.tokens) == ("length", n, reference.tokens[:n])
    r = gen.complete(PROMPT, sampling=GREEDY, max_tokens=0)
    assert (r.text, r.tokens, r.finish_reason) == ("", [], "length")


def test_eos_and_ignore_eos(model: lb.Model, gen: lb.Generator) -> None:
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    r = gen.complete(prompt, sampling=GREEDY, max_tokens=32)
    assert r.finish_reason == "stop" and r.stop is None
    assert r.text == "The capital of France is Paris."
    n = len(r.tokens)
    assert not set(r.tokens) & model.vocab.eog_tokens
    on = gen.complete(prompt, sampling=GREEDY, max_tokens=n + 6, ignore_eos=True)
    assert on.finish_reason == "length" and len(on.tokens) == n + 6
    assert on.tokens[:n] == r.tokens and on.tokens[n] in model.vocab.eog_tokens


# ------------------------------------------------------------------------ prefix reuse

LONG_PREFIX = "Notes from the harbour master's log, kept every evening.\n" + "".join(
    f"Day {d}: {ships} ships came in, the wind was {wind}, and the {cargo} was unloaded by noon.\n"
    for d, ships, wind, cargo in zip(
        range(1, 21),
        [3, 5, 2, 7, 4, 6, 1, 8, 3, 5, 2, 9, 4, 6, 3, 7, 5, 2, 8, 4],
        ["calm", "strong", "gusty", "from the west", "light"] * 4,
        ["timber", "grain", "coal", "salt", "wool"] * 4,
        strict=True,
    )
)


def test_prefix_reuse_decodes_only_the_suffix(model: lb.Model) -> None:
    q1 = LONG_PREFIX + "Question: how many ships came in on day 4? Answer:"
    q2 = LONG_PREFIX + "Question: what cargo was unloaded on day 12? Answer:"
    t1, t2 = model.tokenize(q1), model.tokenize(q2)
    shared = common_prefix(t1, t2)
    assert shared >= 300 and len(t2) - shared >= 5
    with _ctx(model) as ctx:
        gen = lb.Generator(ctx)
        ctx.reset_perf()
        r1 = gen.complete(q1, sampling=GREEDY, max_tokens=6, ignore_eos=True)
        assert _evals(ctx) == (len(t1), 5)  # the 6th token is never decoded
        assert (r1.timings.cached_tokens, r1.timings.prompt_tokens) == (0, len(t1))

        ctx.reset_perf()
        r2 = gen.complete(q2, sampling=GREEDY, max_tokens=6, ignore_eos=True)
        assert _evals(ctx) == (len(t2) - shared, 5)  # only the suffix was decoded
        assert (r2.timings.cached_tokens, r2.timings.prompt_tokens) == (shared, len(t2) - shared)
        assert r2.prompt_tokens == len(t2)

        # a continuation of the conversation reuses the prompt and the generated tokens
        t3 = [*t2, *r2.tokens, *model.tokenize(" And on day 13?", add_special=False)]
        ctx.reset_perf()
        r3 = gen.complete(t3, sampling=GREEDY, max_tokens=3, ignore_eos=True)
        kept = len(t2) + len(r2.tokens) - 1  # the last generated token was sampled, not decoded
        assert r3.timings.cached_tokens == kept
        assert _evals(ctx) == (len(t3) - kept, 2)

        # the same prompt again: only its last token is decoded (for its logits)
        ctx.reset_perf()
        r4 = gen.complete(t3, sampling=GREEDY, max_tokens=3, ignore_eos=True)
        assert (r4.timings.cached_tokens, r4.timings.prompt_tokens) == (len(t3) - 1, 1)
        assert r4.tokens == r3.tokens
        assert _evals(ctx) == (0, 1 + 2)  # one prompt token, then two generated ones

    # reuse does not change the output: a fresh context decoding the whole prompt agrees
    with _ctx(model) as ctx:
        fresh = lb.Generator(ctx).complete(q2, sampling=GREEDY, max_tokens=6, ignore_eos=True)
    assert fresh.tokens == r2.tokens


# ------------------------------------------------------------------------ cancellation


def test_cancel_from_another_thread(
    model: lb.Model, gen: lb.Generator, reference: lb.GenerationResult
) -> None:
    cancel = threading.Event()
    asked = threading.Event()

    def canceller() -> None:
        asked.wait(30)
        cancel.set()

    thread = threading.Thread(target=canceller)
    thread.start()
    chunks: list[lb.GenerationChunk] = []
    for chunk in gen.stream(PROMPT, sampling=GREEDY, max_tokens=500, cancel=cancel):
        chunks.append(chunk)
        if len(chunks) == 3:
            asked.set()  # the other thread cancels while the stream is open
            thread.join(30)
    assert not thread.is_alive()
    assert len(chunks) == 4
    assert chunks[-1].finish_reason == "cancelled" and chunks[-1].tokens == []
    assert [t for c in chunks for t in c.tokens] == reference.tokens[:3]
    assert "".join(c.text for c in chunks) == model.detokenize(reference.tokens[:3])
    assert gen.last_timings.generated_tokens == 3

    # the next call works and gives the right greedy text
    r = gen.complete(PROMPT, sampling=GREEDY, max_tokens=N_REF, ignore_eos=True)
    assert (r.text, r.finish_reason) == (reference.text, "length")
    assert r.timings.cached_tokens == len(model.tokenize(PROMPT)) - 1


def test_cancel_before_the_prompt(model: lb.Model, gen: lb.Generator, reference: lb.GenerationResult) -> None:
    cancel = threading.Event()
    cancel.set()
    gen.ctx.reset_perf()
    chunks = _stream(gen, PROMPT, sampling=GREEDY, max_tokens=8, cancel=cancel)
    assert [(c.text, c.tokens, c.finish_reason) for c in chunks] == [("", [], "cancelled")]
    assert _evals(gen.ctx) == (0, 0)  # nothing was decoded
    r = gen.complete(PROMPT, sampling=GREEDY, max_tokens=8, ignore_eos=True)
    assert r.tokens == reference.tokens[:8]


# ------------------------------------------------------------------------ context overflow


def test_context_overflow_before_any_decode(model: lb.Model) -> None:
    with lb.Context(model, n_ctx=256, n_batch=256, n_threads=THREADS) as ctx:
        n_ctx = ctx.n_ctx
        gen = lb.Generator(ctx)
        first = gen.complete(PROMPT, sampling=GREEDY, max_tokens=4)
        cached = list(gen.cached)
        filler = model.tokenize(LONG_PREFIX * 2)
        assert len(filler) > n_ctx
        before = ctx.perf()
        for n in (n_ctx, n_ctx + 1, len(filler)):
            with pytest.raises(lb.ContextOverflowError) as ei:
                gen.complete(filler[:n], sampling=GREEDY, max_tokens=4)
            err = ei.value
            assert (err.n_tokens, err.n_ctx) == (n, n_ctx)
            assert f"{n} tokens" in str(err) and f"{n_ctx} tokens" in str(err)
            assert ctx.perf() == before, "decoded before raising"
            assert gen.cached == cached  # the cache is untouched
        # streaming raises on the first next(), before decoding
        stream = gen.stream(filler, sampling=GREEDY, max_tokens=4)
        with pytest.raises(lb.ContextOverflowError):
            next(stream)
        assert ctx.perf() == before
        # the previous prompt is still cached and reused
        again = gen.complete(PROMPT, sampling=GREEDY, max_tokens=4)
        assert again.tokens == first.tokens
        assert again.timings.cached_tokens == len(model.tokenize(PROMPT)) - 1
        # the longest prompt that fits leaves room for exactly one generated token
        r = gen.complete(filler[: n_ctx - 1], sampling=GREEDY, max_tokens=10)
        assert (r.finish_reason, r.completion_tokens) == ("length", 1)


# ------------------------------------------------------------------------ logprobs


@pytest.mark.parametrize(
    "sampling", [GREEDY, lb.SamplingParams(temperature=0.8, seed=11)], ids=["greedy", "t0.8"]
)
def test_logprobs_match_softmax_of_logits(
    model: lb.Model, gen: lb.Generator, sampling: lb.SamplingParams
) -> None:
    n, top_n = 10, 5
    chunks = _stream(gen, PROMPT, sampling=sampling, max_tokens=n, logprobs=top_n, ignore_eos=True)
    lps = [lp for c in chunks for lp in c.logprobs]
    tokens = [t for c in chunks for t in c.tokens]
    assert len(lps) == len(tokens) == n
    assert [lp.token for lp in lps] == tokens
    # replay the same decodes and compare with a log-softmax of ctx.logits
    prompt = model.tokenize(PROMPT)
    with _ctx(model) as ctx:
        prefill(ctx, prompt)
        batch = lb.Batch(1)
        for i, (token, lp) in enumerate(zip(tokens, lps, strict=True)):
            x = ctx.logits().astype(np.float64)
            logz = x.max() + np.log(np.exp(x - x.max()).sum())
            assert lp.logprob == pytest.approx(x[token] - logz, abs=1e-6)
            assert lp.logprob <= 0.0
            best = np.argsort(-x, kind="stable")[:top_n]
            assert [t for t, _ in lp.top] == best.tolist()
            assert [v for _, v in lp.top] == pytest.approx((x[best] - logz).tolist(), abs=1e-6)
            assert sum(np.exp(v) for _, v in lp.top) <= 1.0 + 1e-9
            if sampling.greedy:
                assert lp.top[0][0] == token
            batch.clear()
            batch.add(token, len(prompt) + i, 0, True)
            ctx.decode(batch)
    # without logprobs, nothing is attached
    assert all(not c.logprobs for c in _stream(gen, PROMPT, sampling=GREEDY, max_tokens=3))


# ------------------------------------------------------------------------ UTF-8


def test_multibyte_characters_never_stream_replacement_chars(model: lb.Model, gen: lb.Generator) -> None:
    for prompt in ("日本の首都は", "Emoji story: 🙂🙂🙂"):
        full = gen.complete(prompt, sampling=GREEDY, max_tokens=40)
        split = [t for t in full.tokens if not _decodes(model, t)]
        assert len(split) >= 4, "the model should emit characters split over byte tokens"
        # stop where the output ends on a whole character (a cut character is U+FFFD by design)
        n = max(k for k in range(1, 41) if _decodes_all(model, full.tokens[:k]))
        chunks = _stream(gen, prompt, sampling=GREEDY, max_tokens=n)
        assert all("\ufffd" not in c.text for c in chunks)
        text = "".join(c.text for c in chunks)
        assert text == model.detokenize(full.tokens[:n]) and not text.isascii()
        # a token that only carries part of a character yields an empty chunk
        assert any(c.text == "" and c.tokens for c in chunks)


def _decodes(model: lb.Model, token: int) -> bool:
    try:
        model.vocab.token_to_piece(token).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decodes_all(model: lb.Model, tokens: list[int]) -> bool:
    try:
        b"".join(model.vocab.token_to_piece(t) for t in tokens).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_cache_cut_behind_the_generators_back(model: lb.Model) -> None:
    prompt = "The capital of France is Paris. The capital of Italy is"
    with lb.Context(model, n_ctx=512, n_threads=1) as ctx:
        gen = lb.Generator(ctx)
        first = gen.complete(prompt, max_tokens=8, sampling=GREEDY).tokens
        ctx.memory.clear()  # not through the Generator
        again = gen.complete(prompt, max_tokens=8, sampling=GREEDY)
        assert again.tokens == first
        assert again.timings.cached_tokens == 0
        ctx.memory.remove(0, 4, -1)  # keep only the first 4 positions
        third = gen.complete(prompt, max_tokens=8, sampling=GREEDY)
        assert third.tokens == first
        assert third.timings.cached_tokens == 4
