"""Split GGUF models: llama.cpp's shard naming (``name-00001-of-00003.gguf``) and finding every shard."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ModelLoadError

__all__ = ["SHARD_RE", "shard_name", "shard_paths"]

#: Matches a shard file name; groups: prefix, no (1-based), count.
SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5,})-of-(?P<count>\d{5,})\.gguf$", re.IGNORECASE)


def shard_name(prefix: str, index: int, count: int) -> str:
    """File name of shard `index` (0-based) of `count`: ``{prefix}-{index+1:05d}-of-{count:05d}.gguf``."""
    return f"{prefix}-{index + 1:05d}-of-{count:05d}.gguf"


def shard_paths(shard: str | os.PathLike[str]) -> list[Path]:
    """All shard paths of the split model that `shard` belongs to, in order.

    A path whose name does not follow the ``-NNNNN-of-NNNNN.gguf`` pattern is a single-file model
    and comes back alone. Any shard of a set is accepted (not only the first). Raises
    ModelLoadError when the file or any sibling shard is missing.
    """
    path = Path(shard)
    if not path.is_file():
        raise ModelLoadError(f"GGUF file not found: {path}")
    m = SHARD_RE.match(path.name)
    if m is None:
        return [path]
    prefix, no, count = m.group("prefix"), int(m.group("no")), int(m.group("count"))
    if not 1 <= no <= count:
        raise ModelLoadError(f"invalid shard file name {path.name!r}: shard {no} of {count}")
    paths = [path.with_name(shard_name(prefix, i, count)) for i in range(count)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ModelLoadError(
            f"split model {prefix!r} has {count} shards but {len(missing)} are missing in {path.parent}: "
            + ", ".join(missing)
        )
    return paths
