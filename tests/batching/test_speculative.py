"""Speculative decoding inside the continuous-batching Scheduler (per-slot drafters, counters)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

import llamabind as lb
from llamabind.batching import DoneEvent, ErrorEvent, GenRequest, Scheduler, TokenEvent
from tests.helpers.core import GREEDY
from tests.helpers.core import scheduler_config as _config
from tests.helpers.fixtures_mtp import build_tiny_glm4moe_mtp

PROMPTS = [
    "<|im_start|>user\nRepeat exactly: the cat sat on the mat, the dog sat on the log.<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<|im_start|>user\nCopy this: red, green, blue, red, green, blue.<|im_end|>\n<|im_start|>assistant\n",
]


class _Collector:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.text: list[str] = []
        self.done = threading.Event()
        self.finish: str | None = None
        self.error: BaseException | None = None
        self.completion_tokens = 0

    def __call__(self, ev: object) -> None:
        if isinstance(ev, TokenEvent):
            self.tokens.extend(ev.tokens)
            self.text.append(ev.text)
        elif isinstance(ev, DoneEvent):
            self.finish = ev.finish_reason
            self.completion_tokens = ev.usage.completion_tokens
            self.done.set()
        elif isinstance(ev, ErrorEvent):
            self.error = ev.error
            self.done.set()


def _one_by_one(sch: Scheduler, model: lb.Model, prompts: Sequence[str], n: int) -> list[list[int]]:
    """Requests one after another (one busy slot at a time: no cross-sequence batches)."""
    out = []
    for p in prompts:
        c = _Collector()
        sch.submit(GenRequest(model.tokenize(p), c, GREEDY, max_tokens=n))
        assert c.done.wait(120)
        assert c.error is None, c.error
        out.append(c.tokens)
    return out


@pytest.fixture(scope="module")
def baseline(model: lb.Model) -> list[list[int]]:
    with Scheduler(model, _config()) as sch:
        return _one_by_one(sch, model, PROMPTS, 24)


def test_scheduler_ngram_greedy_equals_plain_and_counts(model: lb.Model, baseline: list[list[int]]) -> None:
    with Scheduler(model, _config(spec="ngram", n_draft=6)) as sch:
        got = _one_by_one(sch, model, PROMPTS, 24)
        st = sch.stats
    assert got == baseline
    assert st.spec_drafted_total > 0 and 0 < st.spec_accepted_total <= st.spec_drafted_total
    assert st.spec_rounds_total > 0
    # fewer decode calls than tokens: drafts were verified several at a time
    assert st.decode_calls_total < st.generated_tokens_total
    assert st.spec_acceptance_rate == st.spec_accepted_total / st.spec_drafted_total


def test_scheduler_draft_model_accepts_its_own_drafts(model: lb.Model, baseline: list[list[int]]) -> None:
    with Scheduler(model, _config(spec="draft", n_draft=4), draft_model=model) as sch:
        got = _one_by_one(sch, model, PROMPTS, 24)
        st = sch.stats
    assert got == baseline
    assert st.spec_drafted_total >= 20
    assert st.spec_accepted_total / st.spec_drafted_total >= 0.95


def test_scheduler_concurrent_slots_with_drafts(model: lb.Model, baseline: list[list[int]]) -> None:
    """Two streams at once, each with its own draft riding in the shared batch."""
    with Scheduler(model, _config(spec="ngram", n_draft=4)) as sch:
        cs = [_Collector() for _ in PROMPTS]
        for p, c in zip(PROMPTS, cs, strict=True):
            sch.submit(GenRequest(model.tokenize(p), c, GREEDY, max_tokens=20))
        for c in cs:
            assert c.done.wait(120) and c.error is None
        st = sch.stats
        assert all(0 < c.completion_tokens <= 20 for c in cs)
        # one KV stream per slot (kv_unified off): a slot's output does not depend on the others
        assert [c.tokens for c in cs] == [b[: len(c.tokens)] for b, c in zip(baseline, cs, strict=True)]
        assert st.generated_tokens_total == sum(c.completion_tokens for c in cs)
        assert st.spec_accepted_total <= st.spec_drafted_total
        # every slot's cache holds exactly what its token list says (rejected drafts removed)
        for s in sch.slots:
            assert sch.ctx.memory.pos_max(s.id) == len(s.cached) - 1
        # a request can opt out
        c = _Collector()
        before = st.spec_drafted_total
        sch.submit(GenRequest(model.tokenize(PROMPTS[0]), c, GREEDY, max_tokens=8, speculative=False))
        assert c.done.wait(120)
        assert sch.stats.spec_drafted_total == before


def test_scheduler_mtp_on_tiny_glm4moe(tmp_path_factory: pytest.TempPathFactory) -> None:
    path: Path = build_tiny_glm4moe_mtp(tmp_path_factory.mktemp("mtp-sched"), mix=0.03)
    with lb.Model(path, load_mtp=True) as m:
        cfg = _config(ctx_per_slot=256, n_batch=64)
        prompts = ["The quick brown fox", "Hello there, how are you today?"]
        with Scheduler(m, cfg) as sch:
            base = _one_by_one(sch, m, prompts, 16)
        with Scheduler(m, _config(ctx_per_slot=256, n_batch=64, spec="mtp", n_draft=2)) as sch:
            got = _one_by_one(sch, m, prompts, 16)
            st = sch.stats
        assert got == base
        assert st.spec_drafted_total > 0 and 0 < st.spec_accepted_total < st.spec_drafted_total


def test_scheduler_spec_errors(model: lb.Model) -> None:
    with pytest.raises(ValueError, match="draft_model"):
        Scheduler(model, _config(spec="draft"))
    with pytest.raises(lb.UnsupportedError, match="next-n"):
        Scheduler(model, _config(spec="mtp"))
    with pytest.raises(ValueError, match="spec must be"):
        Scheduler(model, _config(spec="medusa"))
