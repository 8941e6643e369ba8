"""The models a router serves: every GGUF of a ``--models-dir`` and the tables of a
``--models-preset`` TOML file, as :class:`ModelEntry` records (nothing is loaded here).

A preset file has one table per model::

    [chat]
    path = "models/qwen2.5-1.5b-instruct-q4_k_m.gguf"   # relative to the preset file
    alias = ["qwen", "gpt-4o-mini"]
    ctx_size = 8192          # the whole context (all slots), as --ctx-size
    parallel = 2
    ttl = 600                # unload after 10 idle minutes

    [embed]
    hf = "second-state/All-MiniLM-L6-v2-Embedding-GGUF:Q8_0"
    role = "embedding"

Unknown keys, wrong types and bad values are :class:`PresetError`\\ s that name the line.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "KV_TYPES",
    "ROLES",
    "ModelEntry",
    "PresetError",
    "check_unique_names",
    "parse_presets",
    "parse_presets_text",
    "scan_models_dir",
    "shard_files",
]

Role = Literal["generation", "embedding", "rerank"]
ROLES: tuple[str, ...] = ("generation", "embedding", "rerank")
KV_TYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")

_SHARD_RE = re.compile(r"^(?P<base>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.gguf$", re.IGNORECASE)
_QUANT_SUFFIX_RE = re.compile(r"[-._](?:I?Q\d[A-Z0-9_]*|[BF]F?\d+|F\d+)$", re.IGNORECASE)


class PresetError(ValueError):
    """A preset file that cannot be used: the message names the file and line."""


@dataclass(frozen=True)
class ModelEntry:
    """One model the router can load: a local file (``path``) or a Hub spec (``hf``,
    ``REPO[:QUANT]``, resolved on first use), and its per-model settings (None: the server's)."""

    name: str
    path: Path | None = None
    hf: str | None = None
    aliases: tuple[str, ...] = ()
    ctx_size: int | None = None
    parallel: int | None = None
    chat_template: str | None = None
    chat_template_file: str | None = None
    mmproj: str | None = None
    draft: str | None = None
    kv_type: str | None = None
    loras: tuple[tuple[str, float], ...] = ()
    role: Role = "generation"
    ttl: float | None = None
    n_gpu_layers: int | None = None
    #: where the entry came from: ``"dir"``, ``"preset"`` or ``"cli"`` (``-m``)
    source: str = "dir"
    #: the preset line of the entry's table (0: not from a preset)
    line: int = 0
    extra_names: tuple[str, ...] = field(default=(), compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        """Every name a request may use: the name, the aliases, the file's name and stem."""
        out = [self.name, *self.aliases, *self.extra_names]
        if self.path is not None:
            out += [self.path.name, self.path.stem]
        seen: dict[str, None] = {}
        for n in out:
            seen.setdefault(n, None)
        return tuple(seen)


# ----------------------------------------------------------------------------- --models-dir
def _is_mmproj(p: Path) -> bool:
    return p.name.lower().startswith("mmproj")


def _model_key(name: str) -> str:
    """A file name without extension, shard suffix and quant tag (to pair a model with its
    projector)."""
    m = _SHARD_RE.match(name)
    stem = m.group("base") if m else re.sub(r"\.gguf$", "", name, flags=re.IGNORECASE)
    return _QUANT_SUFFIX_RE.sub("", stem).lower()


def _projector_for(model: Path, projectors: Sequence[Path], n_models: int) -> Path | None:
    """The projector of ``model`` among the ``mmproj*.gguf`` files of its directory: the only one
    when the directory holds one model, else the one whose name (minus ``mmproj-`` and the quant
    tag) begins the model's name."""
    if not projectors:
        return None
    if n_models == 1:
        return projectors[0]
    key = _model_key(model.name)
    for proj in projectors:
        pkey = _model_key(re.sub(r"^mmproj[-_.]?", "", proj.name, flags=re.IGNORECASE))
        if pkey and key.startswith(pkey):
            return proj
    return None


def _dir_models(directory: Path) -> list[tuple[str, Path]]:
    """(name, first file) of every model directly in ``directory``; split models by their first
    shard (named without the shard suffix); projectors skipped."""
    out: list[tuple[str, Path]] = []
    for p in sorted(directory.glob("*.gguf")):
        if not p.is_file() or _is_mmproj(p):
            continue
        m = _SHARD_RE.match(p.name)
        if m is None:
            out.append((p.stem, p))
        elif int(m.group("i")) == 1:
            out.append((m.group("base"), p))
    return out


def scan_models_dir(directory: Path | str) -> list[ModelEntry]:
    """Every model of ``directory`` and of its immediate subdirectories (a subdirectory's model is
    named after the file, or after the subdirectory when it holds one model), each with the
    ``mmproj*.gguf`` beside it attached. Raises ValueError when the directory does not exist."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ValueError(f"models directory not found: {root}")
    entries: list[ModelEntry] = []
    dirs = [root, *sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))]
    for d in dirs:
        models = _dir_models(d)
        projectors = sorted(p for p in d.glob("*.gguf") if p.is_file() and _is_mmproj(p))
        for name, path in models:
            if d != root and len(models) == 1:
                name = d.name
            proj = _projector_for(path, projectors, len(models))
            entries.append(
                ModelEntry(
                    name=name,
                    path=path,
                    mmproj=str(proj) if proj is not None else None,
                    source="dir",
                    extra_names=(path.stem,) if name != path.stem else (),
                )
            )
    return entries


def shard_files(first: Path) -> list[Path]:
    """Every shard of a split model given its first shard (else the file itself)."""
    match = _SHARD_RE.match(first.name)
    if match is None:
        return [first]
    n = match.group("n")
    return [first.with_name(f"{match.group('base')}-{i:05d}-of-{n}.gguf") for i in range(1, int(n) + 1)]


# ----------------------------------------------------------------------------- --models-preset
_HEADER_RE = re.compile(r"^\s*\[\s*(?P<name>\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\]\s#]+)\s*\]")
_KEY_RE = re.compile(r"^\s*(?P<key>\"(?:[^\"\\]|\\.)*\"|'[^']*'|[A-Za-z0-9_.-]+)\s*=")


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token[1:-1]
    return token.split(".", 1)[0]


def _line_map(text: str) -> tuple[dict[str, int], dict[tuple[str, str], int], dict[str, int]]:
    """Lines of the tables, of their keys, and of top-level keys (a light scan: enough to name the
    line of anything tomllib accepted)."""
    tables: dict[str, int] = {}
    keys: dict[tuple[str, str], int] = {}
    top: dict[str, int] = {}
    current: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        h = _HEADER_RE.match(line)
        if h is not None and not line.lstrip().startswith("[["):
            current = _unquote(h.group("name"))
            tables.setdefault(current, lineno)
            continue
        k = _KEY_RE.match(line)
        if k is not None:
            key = _unquote(k.group("key"))
            if current is None:
                top.setdefault(key, lineno)
            else:
                keys.setdefault((current, key), lineno)
    return tables, keys, top


_ALLOWED = (
    "path",
    "hf",
    "alias",
    "ctx_size",
    "parallel",
    "chat_template",
    "chat_template_file",
    "mmproj",
    "draft",
    "kv_type",
    "lora",
    "role",
    "ttl",
    "n_gpu_layers",
)


class _Table:
    """One preset table being checked: values by key, errors naming the key's line."""

    def __init__(self, source: str, name: str, values: Mapping[str, Any], base: Path, lines: Any) -> None:
        self.source, self.name, self.values, self.base = source, name, values, base
        self._tables, self._keys = lines

    def line(self, key: str | None = None) -> int:
        if key is not None and (self.name, key) in self._keys:
            return int(self._keys[(self.name, key)])
        return int(self._tables.get(self.name, 0))

    def error(self, key: str | None, message: str) -> PresetError:
        where = f"[{self.name}]" + (f" {key}" if key else "")
        return PresetError(f"{self.source}:{self.line(key)}: {where}: {message}")

    def text(self, key: str) -> str | None:
        v = self.values.get(key)
        if v is None:
            return None
        if not isinstance(v, str) or not v.strip():
            raise self.error(key, f"expected a non-empty string, got {v!r}")
        return v

    def texts(self, key: str) -> list[str]:
        v = self.values.get(key)
        if v is None:
            return []
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
            raise self.error(key, f"expected a string or a list of strings, got {v!r}")
        return list(items)

    def number(self, key: str, *, minimum: int) -> int | None:
        v = self.values.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.error(key, f"expected an integer of at least {minimum}, got {v!r}")
        return int(v)

    def file(self, key: str, value: str | None = None) -> Path | None:
        text = value if value is not None else self.text(key)
        if text is None:
            return None
        p = Path(text).expanduser()
        if not p.is_absolute():
            p = self.base / p
        if not p.is_file():
            raise self.error(key, f"file not found: {p}")
        return p


def _entry(t: _Table) -> ModelEntry:
    unknown = [k for k in t.values if k not in _ALLOWED]
    if unknown:
        raise t.error(unknown[0], f"unknown key {unknown[0]!r} (known: {', '.join(_ALLOWED)})")
    path, hf = t.file("path"), t.text("hf")
    if (path is None) == (hf is None):
        raise t.error(None, "give exactly one of 'path' (a local GGUF) and 'hf' (a Hub REPO[:QUANT])")
    if hf is not None:
        from ..hub import parse_spec

        try:
            parse_spec(hf)
        except ValueError as exc:
            raise t.error("hf", str(exc)) from None
    role = t.text("role") or "generation"
    if role not in ROLES:
        raise t.error("role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    kv = t.text("kv_type")
    if kv is not None and kv.lower() not in KV_TYPES:
        raise t.error("kv_type", f"expected one of {', '.join(KV_TYPES)}, got {kv!r}")
    ttl = t.values.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl < 0):
        raise t.error("ttl", f"expected a number of seconds (0: never unload), got {ttl!r}")
    if t.values.get("chat_template") is not None and t.values.get("chat_template_file") is not None:
        raise t.error("chat_template_file", "give either chat_template or chat_template_file, not both")
    loras: list[tuple[str, float]] = []
    for spec in t.texts("lora"):
        file, _, scale = spec.rpartition(":") if _scale_suffix(spec) else (spec, "", "")
        lpath = t.file("lora", file)
        assert lpath is not None
        loras.append((str(lpath), float(scale) if scale else 1.0))
    template_file = t.file("chat_template_file")
    mmproj, draft = t.file("mmproj"), t.file("draft")
    ctx, parallel = t.number("ctx_size", minimum=16), t.number("parallel", minimum=1)
    if ctx is not None and ctx // (parallel or 1) < 16:
        raise t.error("ctx_size", f"{ctx} leaves fewer than 16 tokens per slot")
    return ModelEntry(
        name=t.name,
        path=path,
        hf=hf,
        aliases=tuple(t.texts("alias")),
        ctx_size=ctx,
        parallel=parallel,
        chat_template=t.text("chat_template"),
        chat_template_file=str(template_file) if template_file else None,
        mmproj=str(mmproj) if mmproj else None,
        draft=str(draft) if draft else None,
        kv_type=kv.lower() if kv else None,
        loras=tuple(loras),
        role=role,  # type: ignore[arg-type]
        ttl=float(ttl) if ttl is not None else None,
        n_gpu_layers=t.number("n_gpu_layers", minimum=-1),
        source="preset",
        line=t.line(),
    )


def _scale_suffix(spec: str) -> bool:
    """Whether ``spec`` ends in ``:SCALE`` (a number), as ``adapter.gguf:0.5``."""
    _, sep, tail = spec.rpartition(":")
    if not sep:
        return False
    try:
        float(tail)
    except ValueError:
        return False
    return True


def parse_presets_text(text: str, *, source: str = "<preset>", base: Path | str = ".") -> list[ModelEntry]:
    """The entries of a preset file's ``text`` (relative paths are relative to ``base``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise PresetError(f"{source}:{m.group(1) if m else '?'}: invalid TOML: {exc}") from None
    tables, keys, top = _line_map(text)
    entries: list[ModelEntry] = []
    for name, values in data.items():
        if not isinstance(values, dict):
            line = top.get(name, 0)
            raise PresetError(f"{source}:{line}: {name!r}: each model is a [table], not a top-level key")
        t = _Table(source, name, values, Path(base), (tables, keys))
        nested = [k for k, v in values.items() if isinstance(v, dict)]
        if nested:
            raise t.error(
                nested[0], f'unknown key {nested[0]!r} (quote a model name with dots: ["{name}.…"])'
            )
        entries.append(_entry(t))
    if not entries:
        raise PresetError(f"{source}: no model tables")
    try:
        check_unique_names(entries)
    except ValueError as exc:
        raise PresetError(f"{source}:{exc}") from None
    return entries


def parse_presets(path: Path | str) -> list[ModelEntry]:
    """The entries of the preset file at ``path`` (raises PresetError, or OSError when unreadable)."""
    p = Path(path).expanduser()
    text = p.read_text(encoding="utf-8")
    return parse_presets_text(text, source=str(p), base=p.parent)


def check_unique_names(entries: Iterable[ModelEntry]) -> None:
    """Raise ValueError (``LINE: message``) when two entries share a name or an alias (file names
    may repeat: the first entry keeps them)."""
    owner: dict[str, ModelEntry] = {}
    for e in entries:
        for n in (e.name, *e.aliases):
            other = owner.get(n)
            if other is not None and other is not e:
                raise ValueError(
                    f"{e.line}: the name {n!r} of model {e.name!r} is already used by model {other.name!r}"
                )
            owner[n] = e
