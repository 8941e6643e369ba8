"""What a caller submits to the scheduler and what it gets back."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ContextOverflowError
from ..generation.logprobs import TokenLogprob
from ..generation.sampling import SamplingParams

__all__ = ["DoneEvent", "ErrorEvent", "Event", "GenRequest", "TokenEvent", "Usage", "check_prompt_fits"]

_ids = itertools.count(1)


@dataclass(frozen=True)
class TokenEvent:
    """New text for the client (stop strings withheld) and the token(s) that produced it."""

    text: str
    tokens: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    prompt_ms: float = 0.0
    generation_ms: float = 0.0
    ttft_ms: float = 0.0
    queued_ms: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class DoneEvent:
    """The last event of a request: why it ended (stop | length | cancelled) and the usage."""

    finish_reason: str
    usage: Usage
    stop: str | None = None  # the stop string that matched
    #: the grammar's document was closed before the token budget ran out (finish_reason "length",
    #: the output a complete sentence of the grammar): ``llamabind.generation.closing``
    closed: bool = False


@dataclass(frozen=True)
class ErrorEvent:
    """The request failed (the server keeps running)."""

    error: BaseException


Event = TokenEvent | DoneEvent | ErrorEvent


@dataclass(eq=False)
class GenRequest:
    """One generation (one choice). ``emit`` is called from the engine thread."""

    prompt: Sequence[int]
    emit: Callable[[Event], None]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    stop: Sequence[str] = ()
    logprobs: int | None = None  # None: no logprobs; N: sampled token + N best alternatives
    ignore_eos: bool = False
    cache_prompt: bool = True
    speculative: bool = True  # use the scheduler's drafter (when it has one) for this request
    render_special: bool = False  # keep special-token text in the output (tool-call markers)
    #: a llamabind.multimodal.MediaPrompt whose ``keys`` are ``prompt``: its media chunks are
    #: decoded by the projector (never split), its text shares the batches as usual
    media: Any = None
    id: int = field(default_factory=lambda: next(_ids))
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        """Stop this request at the next engine step (thread-safe; frees its slot)."""
        self.cancelled.set()


def check_prompt_fits(prompt: Sequence[int], n_ctx_slot: int) -> None:
    """ValueError for an empty prompt, ContextOverflowError for one that leaves a slot no room for a
    generated token: what every scheduler front checks before queueing."""
    n = len(prompt)
    if n == 0:
        raise ValueError("empty prompt")
    if n >= n_ctx_slot:
        raise ContextOverflowError(
            f"the prompt has {n} tokens but a slot holds at most {n_ctx_slot} "
            "(prompt + at least one generated token)",
            n_tokens=n,
            n_ctx=n_ctx_slot,
        )
