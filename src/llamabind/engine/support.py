"""Small pieces of the supervisor: counters that survive restarts, exit causes, the engine's log."""

from __future__ import annotations

import collections
import dataclasses
import os
import signal
from multiprocessing.connection import Connection

from ..batching.scheduler import SchedulerStats

__all__ = ["add_stats", "cause_of", "read_log"]


#: SchedulerStats fields that are levels, not counts: the later engine's value stands
GAUGES = frozenset(
    {"prompt_cache_bytes", "prompt_cache_entries", "prompt_cache_disk_bytes", "prompt_cache_disk_entries"}
)


def add_stats(a: SchedulerStats, b: SchedulerStats) -> SchedulerStats:
    """Counters of ``a`` plus those of ``b`` (a later engine); gauges are ``b``'s."""
    return SchedulerStats(
        **{
            f.name: getattr(b, f.name) if f.name in GAUGES else getattr(a, f.name) + getattr(b, f.name)
            for f in dataclasses.fields(SchedulerStats)
        }
    )


def cause_of(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return signal.Signals(-exitcode).name.lower()
        except ValueError:
            return f"signal_{-exitcode}"
    return "exit"


def read_log(conn: Connection, tail: collections.deque[str]) -> None:
    """Forward the engine's stderr (fd 2: llama.cpp's log, abort messages) to ours, keeping its
    last lines in ``tail`` for the crash report; returns at EOF (the engine ended)."""
    fd = conn.fileno()
    partial = b""
    try:
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            try:
                os.write(2, data)
            except OSError:
                pass
            lines = (partial + data).split(b"\n")
            partial = lines.pop()
            for line in lines:
                tail.append(line.decode("utf-8", "replace"))
    finally:
        if partial:
            tail.append(partial.decode("utf-8", "replace"))
        conn.close()
