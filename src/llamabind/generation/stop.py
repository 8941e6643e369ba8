"""Stop strings over a text stream: never leaks a partial stop string."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopMatcher"]


class StopMatcher:
    """Feed text deltas; get back the text that is safe to emit.

    Text that could be the beginning of a stop string is held back until it either completes
    the stop string (then everything from the stop string on is dropped and :attr:`stopped`
    is set) or diverges (then it is released).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""
        self.stopped: str | None = None

    def feed(self, text: str) -> str:
        if self.stopped is not None:
            return ""
        if not self.stops:
            return text
        buf = self._held + text
        first = -1
        which = ""
        for s in self.stops:
            i = buf.find(s)
            if i != -1 and (first == -1 or i < first):
                first, which = i, s
        if first != -1:
            self.stopped = which
            self._held = ""
            return buf[:first]
        keep = 0
        for s in self.stops:
            # longest suffix of buf that is a proper prefix of s
            for k in range(min(len(s) - 1, len(buf)), keep, -1):
                if s.startswith(buf[-k:]):
                    keep = k
                    break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """End of stream without a stop: release what was held."""
        out, self._held = self._held, ""
        return "" if self.stopped is not None else out

    @property
    def holding(self) -> bool:
        return bool(self._held)
