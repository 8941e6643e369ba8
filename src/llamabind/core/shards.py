"""Finding every shard of a split GGUF model (``name-00001-of-00003.gguf``)."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["SHARD_RE", "shard_name", "shard_paths_or_self"]

SHARD_RE = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def shard_name(prefix: str, number: int, count: int) -> str:
    """llama.cpp's shard naming: ``prefix-00002-of-00004.gguf`` (number is 1-based)."""
    return f"{prefix}-{number:05d}-of-{count:05d}.gguf"


def shard_paths_or_self(path: Path) -> list[Path]:
    """All shards when ``path`` is the first shard of a split model, else ``[path]``."""
    m = SHARD_RE.match(path.name)
    if not m or int(m["no"]) != 1:
        return [path]
    count = int(m["count"])
    return [path.with_name(shard_name(m["prefix"], i, count)) for i in range(1, count + 1)]
