"""Errors of the multimodal layer (all derive from :class:`llamabind.errors.LlamabindError`)."""

from __future__ import annotations

from ..errors import MediaError, MultimodalError, ProjectorError

__all__ = ["MediaError", "MultimodalError", "ProjectorError"]
