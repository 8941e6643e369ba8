"""Hugging Face Hub model resolution: ``REPO[:QUANT]`` to local GGUF files (shards and projector too)."""

from __future__ import annotations

from .client import HfHubClient, HubClient, HubUnreachableError, default_cache_dir, env_offline, env_token
from .files import DEFAULT_QUANT_PREFERENCE, GGUFModelFiles, RepoGGUFFiles, group_gguf_files, quant_tag
from .resolve import ResolvedModel, console_choose, list_gguf_models, parse_spec, resolve_model

__all__ = [
    "DEFAULT_QUANT_PREFERENCE",
    "GGUFModelFiles",
    "HfHubClient",
    "HubClient",
    "HubUnreachableError",
    "RepoGGUFFiles",
    "ResolvedModel",
    "console_choose",
    "default_cache_dir",
    "env_offline",
    "env_token",
    "group_gguf_files",
    "list_gguf_models",
    "parse_spec",
    "quant_tag",
    "resolve_model",
]
