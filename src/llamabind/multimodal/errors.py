"""Errors of the multimodal layer (all derive from :class:`llamabind.errors.LlamabindError`)."""

from __future__ import annotations

from ..errors import LlamabindError

__all__ = ["MediaError", "MultimodalError", "ProjectorError"]


class MultimodalError(LlamabindError):
    """Base class of multimodal (mtmd) errors."""


class ProjectorError(MultimodalError):
    """A multimodal projector (mmproj) could not be loaded or does not fit the text model."""


class MediaError(MultimodalError, ValueError):
    """An image or audio input is invalid: undecodable, too large, of the wrong kind for the
    projector, or the number of media does not match the number of markers in the prompt.

    ``status`` is the HTTP status a server should answer with (400, 413 or 415).
    """

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
