"""The engine in its own process: :class:`EngineProcess` runs the continuous-batching scheduler
in a supervised child process, so a llama.cpp abort, crash or hang ends that process (and the
requests running in it) instead of the caller's; the supervisor restarts it."""

from __future__ import annotations

from .jobs import EmbeddingJobs
from .process import EngineProcess
from .protocol import EngineSpec

__all__ = ["EmbeddingJobs", "EngineProcess", "EngineSpec"]
