"""Special-token text (tool-call markers such as Mistral's [TOOL_CALLS]) reaches the output on request."""

from __future__ import annotations

import queue

import llamabind as lb
from llamabind.batching import DoneEvent, GenRequest, Scheduler, SchedulerConfig, TokenEvent
from llamabind.generation.generator import Generator
from llamabind.generation.sampling import SamplingParams

# <|im_start|> is a control token of SmolLM2 that does not end generation: force it first
FORCE = SamplingParams(temperature=0, logit_bias={1: 100.0})


def test_generator_renders_special_tokens_only_when_asked(model: lb.Model) -> None:
    assert model.vocab.token_text(1) == "<|im_start|>" and not model.vocab.is_eog(1)
    with lb.Context(model, n_ctx=256) as ctx:
        gen = Generator(ctx)
        plain = gen.complete("Hello", max_tokens=2, sampling=FORCE)
        special = gen.complete("Hello", max_tokens=2, sampling=FORCE, render_special=True)
    assert plain.tokens[0] == special.tokens[0] == 1
    assert "<|im_start|>" not in plain.text
    assert special.text.startswith("<|im_start|>")


def test_scheduler_renders_special_tokens_only_when_asked(model: lb.Model) -> None:
    def run(sched: Scheduler, render: bool) -> str:
        q: queue.Queue[object] = queue.Queue()
        sched.submit(
            GenRequest(model.tokenize("Hello"), q.put, sampling=FORCE, max_tokens=2, render_special=render)
        )
        text = ""
        while not isinstance(ev := q.get(timeout=60), DoneEvent):
            assert isinstance(ev, TokenEvent)
            text += ev.text
        return text

    with Scheduler(model, SchedulerConfig(parallel=1, ctx_per_slot=256)) as sched:
        assert "<|im_start|>" not in run(sched, False)
        assert run(sched, True).startswith("<|im_start|>")
