"""Pure logic over a repository's file list: quant tags, split-shard groups, projector files, choices.

No network and no huggingface_hub here: everything works on repo-relative POSIX paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from posixpath import basename, dirname

from llamabind.core.shards import SHARD_RE
from llamabind.errors import HubError

__all__ = [
    "DEFAULT_QUANT_PREFERENCE",
    "GGUFModelFiles",
    "RepoGGUFFiles",
    "best_mmproj",
    "find_by_file",
    "group_gguf_files",
    "match_quant",
    "preference_order",
    "preferred_model",
    "quant_tag",
]

#: Quant preference when REPO is given without :QUANT; the first model of the repo otherwise.
DEFAULT_QUANT_PREFERENCE: tuple[str, ...] = ("Q4_K_M", "Q4_K_S", "Q4_0", "Q5_K_M", "Q8_0")

_SHARD_RE = SHARD_RE
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])"
    r"(?P<tag>I?Q\d(?:_[A-Za-z0-9]+)*|TQ\d_\d|MXFP4(?:_MOE)?|BF16|FP16|FP32|F16|F32)"
    r"(?![A-Za-z0-9])",
    re.IGNORECASE,
)
# projector order when several fit equally well
_MMPROJ_TYPE_ORDER = ("F16", "BF16", "F32", "Q8_0")


def quant_tag(path: str) -> str | None:
    """The quantization tag in a GGUF file path, upper-cased (``"Q4_K_M"``, ``"IQ4_XS"``, ``"F16"``).

    The file name is searched first (its last tag wins), then the directories, innermost first.
    """
    parts = [basename(path), *reversed(dirname(path).split("/"))]
    for part in parts:
        stem = re.sub(r"-\d{5,}-of-\d{5,}\.gguf$|\.gguf$", "", part, flags=re.IGNORECASE)
        tags = [m.group("tag") for m in _QUANT_RE.finditer(stem)]
        if tags:
            return tags[-1].upper()
    return None


@dataclass(frozen=True)
class GGUFModelFiles:
    """One model in a repository: a single .gguf file, or all shards of a split model in order."""

    files: tuple[str, ...]
    quant: str | None
    split_count: int = 1

    @property
    def first(self) -> str:
        return self.files[0]

    @property
    def label(self) -> str:
        """What a picker shows: the (first) file's path, plus the shard count for split models."""
        if self.split_count > 1:
            return f"{self.first} ({self.split_count} shards)"
        return self.first

    @property
    def complete(self) -> bool:
        return len(self.files) == self.split_count


@dataclass(frozen=True)
class RepoGGUFFiles:
    models: tuple[GGUFModelFiles, ...]
    mmproj: tuple[str, ...]

    def quants(self) -> list[str]:
        """The distinct quant tags of the models, in repository order."""
        return list(dict.fromkeys(m.quant for m in self.models if m.quant))


def _is_gguf(path: str) -> bool:
    return path.lower().endswith(".gguf")


def _is_mmproj(path: str) -> bool:
    return "mmproj" in basename(path).lower()


def _is_auxiliary(path: str) -> bool:
    # importance matrices and speculative-decoding side models are not chat models to pick
    name = basename(path).lower()
    return "imatrix" in name or name.startswith(("mtp-", "eagle3-", "dflash-"))


def group_gguf_files(paths: Iterable[str]) -> RepoGGUFFiles:
    """Group a repository's files into models (split shards together) and multimodal projectors."""
    groups: dict[tuple[str, str, int], dict[int, str]] = {}
    order: list[tuple[str, str, int] | str] = []
    mmproj: list[str] = []
    for path in sorted(set(paths)):
        if not _is_gguf(path):
            continue
        if _is_mmproj(path):
            mmproj.append(path)
            continue
        if _is_auxiliary(path):
            continue
        m = _SHARD_RE.match(basename(path))
        if m is None:
            order.append(path)
            continue
        key = (dirname(path), m.group("prefix"), int(m.group("count")))
        if key not in groups:
            groups[key] = {}
            order.append(key)
        groups[key][int(m.group("no"))] = path
    models: list[GGUFModelFiles] = []
    for item in order:
        if isinstance(item, str):
            models.append(GGUFModelFiles((item,), quant_tag(item)))
            continue
        shards = groups[item]
        files = tuple(shards[n] for n in sorted(shards))
        models.append(GGUFModelFiles(files, quant_tag(files[0]), split_count=item[2]))
    return RepoGGUFFiles(tuple(models), tuple(mmproj))


def match_quant(models: Sequence[GGUFModelFiles], quant: str) -> list[GGUFModelFiles]:
    """Models whose quant tag equals `quant` (case-insensitive); failing that, models whose path
    contains `quant` as a whole word (for tags such as ``UD-Q4_K_XL``)."""
    want = quant.strip().upper()
    exact = [m for m in models if m.quant == want]
    if exact:
        return exact
    word = re.compile(r"(?<![A-Za-z0-9])" + re.escape(want) + r"(?![A-Za-z0-9])", re.IGNORECASE)
    return [m for m in models if word.search(m.first)]


def preferred_model(models: Sequence[GGUFModelFiles]) -> GGUFModelFiles:
    """The default pick: the first of DEFAULT_QUANT_PREFERENCE present, else the first model."""
    if not models:
        raise HubError("no GGUF model files to choose from")
    for tag in DEFAULT_QUANT_PREFERENCE:
        for m in models:
            if m.quant == tag:
                return m
    return models[0]


def preference_order(models: Sequence[GGUFModelFiles]) -> list[GGUFModelFiles]:
    """`models` with the default pick first and the rest in repository order (for pickers)."""
    if not models:
        return []
    best = preferred_model(models)
    return [best, *[m for m in models if m is not best]]


def find_by_file(models: Sequence[GGUFModelFiles], file: str) -> GGUFModelFiles | None:
    """The model one of whose files is `file` (exact repo-relative path, or a unique base name)."""
    for m in models:
        if file in m.files:
            return m
    by_name = [m for m in models if any(basename(f) == file for f in m.files)]
    if len(by_name) == 1:
        return by_name[0]
    return None


def _bits(tag: str | None) -> int | None:
    if not tag:
        return None
    m = re.search(r"\d+", tag)
    return int(m.group()) if m else None


def best_mmproj(model: GGUFModelFiles, mmproj: Sequence[str]) -> str | None:
    """The projector that goes with `model`: one in the model's directory or a parent directory
    (the deepest wins); among those, the same quant tag as the model, else F16 > BF16 > F32 > Q8_0,
    else the closest bit width."""
    model_dir = dirname(model.first)
    model_bits = _bits(model.quant)

    def in_chain(path: str) -> bool:
        d = dirname(path)
        return d == "" or model_dir == d or model_dir.startswith(d + "/")

    candidates = [p for p in mmproj if in_chain(p)]
    if not candidates:
        return None

    def rank(path: str) -> tuple[int, int, int, int, str]:
        depth = len(dirname(path).split("/")) if dirname(path) else 0
        tag = quant_tag(path)
        same = 0 if (tag is not None and tag == model.quant) else 1
        bits = _bits(tag)
        diff = abs(bits - model_bits) if bits is not None and model_bits is not None else 99
        order = _MMPROJ_TYPE_ORDER.index(tag) if tag in _MMPROJ_TYPE_ORDER else len(_MMPROJ_TYPE_ORDER)
        return (-depth, same, order if same else 0, diff, path)

    return min(candidates, key=rank)
