"""The messages between the parent (:class:`~llamabind.engine.EngineProcess`) and the engine process.

Every message is a small picklable dataclass; each ``Connection.send`` carries a *list* of them, so
the engine sends the token events of one scheduler step (or of one drain of its outgoing queue)
in one write instead of one per token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..batching import Event, SchedulerConfig, SlotInfo
from ..batching.scheduler import SchedulerStats
from ..generation.sampling import SamplingParams

__all__ = [
    "Call",
    "CallResult",
    "Cancel",
    "EngineSpec",
    "Events",
    "LoadFailed",
    "Ready",
    "Shutdown",
    "Status",
    "Submit",
]


@dataclass
class EngineSpec:
    """What the engine process builds: ``loader()`` (a picklable zero-argument callable, run in the
    engine process) returns the full model; a scheduler over it; optionally a draft model and the
    embeddings/rerank contexts' sizes. A model with a ``cli_loras`` attribute (``[(adapter,
    scale), …]``) gets those adapters applied to the generation context."""

    loader: Callable[[], Any]
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    draft_model: str | None = None
    draft_n_gpu_layers: int | None = None
    embeddings_n_ctx: int = 2048
    embeddings_n_seq: int = 8


# ------------------------------------------------------------------------- parent → engine
@dataclass(slots=True)
class Submit:
    rid: int
    prompt: Sequence[int]
    sampling: SamplingParams
    max_tokens: int | None
    stop: Sequence[str]
    logprobs: int | None
    ignore_eos: bool
    cache_prompt: bool
    speculative: bool
    render_special: bool
    submitted_at: float  # time.monotonic() in the parent (queue time counts from the HTTP request)
    test_hook: str | None = None


@dataclass(slots=True)
class Cancel:
    rid: int


@dataclass(slots=True)
class Call:
    """Run a named engine-side job (``embed``, ``rerank``) and answer with a CallResult."""

    cid: int
    name: str
    args: tuple[Any, ...]


@dataclass(slots=True)
class Shutdown:
    pass


# ------------------------------------------------------------------------- engine → parent
@dataclass(slots=True)
class Ready:
    pid: int
    info: dict[str, Any]


@dataclass(slots=True)
class LoadFailed:
    message: str
    error: BaseException | None = None


@dataclass(slots=True)
class Events:
    """Events of several requests, in order: ``[(rid, event), …]``."""

    items: list[tuple[int, Event]]


@dataclass(slots=True)
class CallResult:
    cid: int
    value: Any = None
    error: BaseException | None = None


@dataclass(slots=True)
class Status:
    """The engine's counters and slots (sent a few times a second; also the heartbeat)."""

    stats: SchedulerStats
    slots: list[SlotInfo]
    queue_depth: int
    kv_used_cells: int
    busy_since: float | None  # time.monotonic() (system-wide on Linux) of the current step, or None
