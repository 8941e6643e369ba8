"""The continuous-batching Scheduler without speculation: KV-full recovery, and plain sampling."""

from __future__ import annotations

from typing import Any

import pytest

import llamabind as lb
from llamabind.batching import (
    GenRequest,
    Scheduler,
    speculation,
)
from llamabind.errors import NoKvSlotError
from tests.helpers.core import GREEDY
from tests.helpers.core import SchedulerCollector as _Collector
from tests.helpers.core import scheduler_config as _config

PROMPT = (
    "<|im_start|>user\n"
    + "Count the words in this sentence, slowly and carefully. " * 6
    + ("<|im_end|>\n<|im_start|>assistant\n")
)
# the answer repeats the prompt: n-gram drafts find it
REPEAT = (
    "<|im_start|>user\nRepeat exactly: the cat sat on the mat, the dog sat on the log.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def _generate(sch: Scheduler, model: lb.Model, n: int, prompt: str = PROMPT, **kw: Any) -> _Collector:
    c = _Collector()
    sch.submit(GenRequest(model.tokenize(prompt), c, GREEDY, max_tokens=n, **kw))
    assert c.done.wait(120)
    assert c.error is None, c.error
    return c


def test_kv_full_halves_the_prefill_chunk_but_not_the_callers_config(
    model: lb.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Scheduler(model, _config()) as sch:
        want = _generate(sch, model, 8).tokens
    assert len(model.tokenize(PROMPT)) > 64
    cfg = _config(prefill_chunk=64)
    real_decode = lb.Context.decode

    def decode_with_small_kv(self: lb.Context, batch: lb.Batch) -> None:
        # a KV cache with room for at most 32 new cells per decode
        if len(batch) > 32:
            raise NoKvSlotError("no KV slot for the batch (injected)", 1)
        real_decode(self, batch)

    monkeypatch.setattr(lb.Context, "decode", decode_with_small_kv)
    with Scheduler(model, cfg) as sch:
        got = _generate(sch, model, 8)
        assert sch.stats.kv_evictions_total == 1  # 64 failed once, 32 fits
        assert sch.prefill_chunk == 32
        # the same config object serves a second scheduler unchanged
        assert cfg.prefill_chunk == 64
    assert got.tokens == want and got.finish == "length"


def test_plain_tokens_are_sampled_without_draft_verification(
    model: lb.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real_verify = speculation.verify_draft

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(speculation, "verify_draft", counting)
    with Scheduler(model, _config()) as sch:
        plain = _generate(sch, model, 16, REPEAT, logprobs=2)
    assert calls == 0 and len(plain.tokens) == 16
    with Scheduler(model, _config(spec="ngram", n_draft=4)) as sch:
        spec = _generate(sch, model, 16, REPEAT, logprobs=2)
        # a request that opts out of speculation samples plainly too
        before = calls
        _generate(sch, model, 4, speculative=False)
        assert calls == before
    assert spec.tokens == plain.tokens
    assert calls == sch.stats.spec_rounds_total > 0
