"""Errors of the multimodal layer (defined in :mod:`llamabind.errors`, where the core's
:mod:`llamabind.core.mtmd` raises them too)."""

from __future__ import annotations

from ..errors import MediaError, MultimodalError, NoProjectorError, ProjectorError

__all__ = ["MediaError", "MultimodalError", "NoProjectorError", "ProjectorError"]
