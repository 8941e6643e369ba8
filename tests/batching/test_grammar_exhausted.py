"""A request whose grammar the logit bias empties fails alone; the other slot keeps generating."""

from __future__ import annotations

import math

import llamabind as lb
from llamabind.batching import GenRequest, Scheduler, SchedulerConfig
from llamabind.errors import GrammarError
from llamabind.generation.sampling import SamplingParams
from tests.helpers.core import SchedulerCollector as _Collector


def test_exhausted_grammar_fails_only_its_request(model: lb.Model) -> None:
    a = model.tokenize("a", add_special=False)[0]
    dry = SamplingParams(temperature=0.0, grammar='root ::= "a"', logit_bias={a: -math.inf})
    config = SchedulerConfig(parallel=2, ctx_per_slot=256, n_batch=128, n_threads=1)
    with Scheduler(model, config) as sch:
        bad, good = _Collector(), _Collector()
        sch.submit(GenRequest(model.tokenize("Say a:"), bad, dry, max_tokens=4))
        sch.submit(
            GenRequest(model.tokenize("Count: 1, 2,"), good, SamplingParams(temperature=0.0), max_tokens=8)
        )
        assert bad.done.wait(120) and good.done.wait(120)
        assert isinstance(bad.error, GrammarError) and "grammar exhausted" in str(bad.error)
        assert good.error is None and good.finish is not None and good.tokens
        # the engine still serves after the failure
        again = _Collector()
        sch.submit(GenRequest(model.tokenize("Hi"), again, SamplingParams(temperature=0.0), max_tokens=2))
        assert again.done.wait(120) and again.error is None
