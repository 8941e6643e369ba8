"""EngineProcess as a library: the Scheduler's submit / cancel / events surface, with the model
in a supervised child process."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import llamabind as lb
from llamabind.batching import (
    DoneEvent,
    ErrorEvent,
    Event,
    GenRequest,
    Scheduler,
    SchedulerConfig,
    TokenEvent,
)
from llamabind.errors import ContextOverflowError, EngineCrashedError
from tests.helpers.core import GREEDY


class _Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.done = threading.Event()

    def __call__(self, ev: Event) -> None:
        self.events.append(ev)
        if isinstance(ev, (DoneEvent, ErrorEvent)):
            self.done.set()

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TokenEvent))

    @property
    def last(self) -> Event:
        return self.events[-1]


def _request(model: lb.Model, prompt: str, max_tokens: int) -> tuple[GenRequest, _Collector]:
    c = _Collector()
    req = GenRequest(prompt=model.tokenize(prompt), emit=c, sampling=GREEDY, max_tokens=max_tokens)
    return req, c


@pytest.fixture(scope="module")
def engine(model_path: Path, model: lb.Model) -> Iterator[lb.EngineProcess]:
    eng = lb.EngineProcess(model_path, SchedulerConfig(parallel=2, ctx_per_slot=512), vocab=model)
    assert eng.wait_ready(120)
    yield eng
    pid = eng.pid
    eng.shutdown()
    assert pid is not None
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_same_tokens_as_the_in_process_scheduler(engine: lb.EngineProcess, model: lb.Model) -> None:
    req, c = _request(model, "The capital of France is", 8)
    engine.submit(req)
    assert c.done.wait(60)
    assert isinstance(c.last, DoneEvent) and c.last.finish_reason == "length"
    assert c.last.usage.completion_tokens == 8
    with Scheduler(model, SchedulerConfig(parallel=1, ctx_per_slot=512)) as local:
        req2, c2 = _request(model, "The capital of France is", 8)
        local.submit(req2)
        assert c2.done.wait(60)
    assert c.text == c2.text


def test_submit_checks_and_cancel(engine: lb.EngineProcess, model: lb.Model) -> None:
    with pytest.raises(ContextOverflowError):
        engine.submit(GenRequest(prompt=[1] * 600, emit=lambda ev: None))
    with pytest.raises(ValueError):
        engine.submit(GenRequest(prompt=[], emit=lambda ev: None))
    req, c = _request(model, "Count to one thousand:", 400)
    engine.submit(req)
    deadline = time.monotonic() + 30
    while not any(isinstance(e, TokenEvent) for e in c.events):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    engine.cancel(req)
    assert c.done.wait(30)
    assert isinstance(c.last, DoneEvent) and c.last.finish_reason == "cancelled"


def test_embeddings_in_the_engine(engine: lb.EngineProcess, model: lb.Model) -> None:
    vecs = engine.embed_tokens([model.tokenize("hello"), model.tokenize("a longer input text")])
    assert len(vecs) == 2 and vecs[0].shape == (model.n_embd,)
    assert abs(float((vecs[0] ** 2).sum()) - 1.0) < 1e-3


def test_crash_fails_the_running_request_and_restarts(engine: lb.EngineProcess, model: lb.Model) -> None:
    before = engine.stats.requests_total
    req, c = _request(model, "Once upon a time", 400)
    engine.submit(req)
    deadline = time.monotonic() + 30
    while engine.busy_slots < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    pid = engine.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert c.done.wait(30)
    assert isinstance(c.last, ErrorEvent) and isinstance(c.last.error, EngineCrashedError)
    assert engine.wait_ready(60)
    assert engine.pid != pid and engine.restarts == {"sigkill": 1}
    req, c = _request(model, "Hello", 4)
    engine.submit(req)
    assert c.done.wait(60)
    assert isinstance(c.last, DoneEvent) and c.last.finish_reason == "length"
    assert engine.stats.requests_total >= before + 1  # counters survive the restart


def test_counters_add_across_engines_but_gauges_do_not() -> None:
    """A restarted engine's counters continue the old ones; its cache size is its own."""
    from llamabind.batching.config import SchedulerStats
    from llamabind.engine.support import add_stats

    old = SchedulerStats(requests_total=3, prompt_cache_hits_total=2, prompt_cache_bytes=900)
    new = SchedulerStats(requests_total=1, prompt_cache_hits_total=1, prompt_cache_bytes=100)
    both = add_stats(old, new)
    assert both.requests_total == 4 and both.prompt_cache_hits_total == 3
    assert both.prompt_cache_bytes == 100
