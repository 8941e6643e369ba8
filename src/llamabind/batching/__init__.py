"""Continuous batching: many generation requests sharing one model and one context.

`Scheduler` owns a Context in its own engine thread; callers `submit()` a `GenRequest` and get
`Event`s through the request's ``emit`` callback (the server wraps it into an asyncio queue).
"""

from __future__ import annotations

from .request import DoneEvent, ErrorEvent, Event, GenRequest, TokenEvent, Usage
from .scheduler import QueueFullError, Scheduler, SchedulerConfig, SlotInfo

__all__ = [
    "DoneEvent",
    "ErrorEvent",
    "Event",
    "GenRequest",
    "QueueFullError",
    "Scheduler",
    "SchedulerConfig",
    "SlotInfo",
    "TokenEvent",
    "Usage",
]
