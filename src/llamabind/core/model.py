"""`Model`: a loaded GGUF model (weights + vocabulary). Safe to share between threads for reading."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._native import backend as nbackend
from .._native import model as nmodel
from ..errors import ModelLoadError
from ._owner import NativeOwner
from .gguf_file import check_gguf_magic
from .gguf_sanity import check_model_metadata
from .shards import shard_paths
from .types import SPLIT_MODES
from .vocab import Vocab

__all__ = ["Model", "ModelParams"]

PathLike = str | os.PathLike[str]


@dataclass
class ModelParams:
    """How to load a model. ``None`` means llama.cpp's default."""

    n_gpu_layers: int | None = None
    main_gpu: int | None = None
    split_mode: str | None = None  # none | layer | row | tensor
    tensor_split: Sequence[float] | None = None
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    vocab_only: bool = False
    check_tensors: bool = False
    kv_overrides: Mapping[str, int | float | bool | str] = field(default_factory=dict)
    #: ggml RPC workers ``host:port`` whose devices take offloaded layers (see llamabind.rpc).
    rpc_servers: Sequence[str] = ()
    #: explicit ggml device handles (advanced; normally derived from rpc_servers / all devices)
    devices: Sequence[int] = ()
    load_mtp: bool | None = None
    #: extra weight buffer types (AMX, CPU repacking). None: llama.cpp's default (on), except on
    #: a CPU build with AMX kernels, which crash in the pinned llama.cpp revision: off there.
    use_extra_bufts: bool | None = None
    #: seconds a decode over RPC workers may take before the worker is declared dead
    rpc_timeout: float = 120.0


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"model path is a directory, not a GGUF file: {path}")
    check_gguf_magic(path)


class Model(NativeOwner):
    """A loaded model. ``Model(path)`` or ``Model([shard1, shard2, …])`` for split models.

    ``progress`` is called with a fraction in [0, 1] while loading; returning False cancels the
    load (``ModelLoadError``). Closing a model closes its live contexts and adapters first.
    """

    def __init__(
        self,
        path: PathLike | Sequence[PathLike],
        params: ModelParams | None = None,
        *,
        progress: Callable[[float], bool] | None = None,
        **overrides: Any,
    ) -> None:
        params = params or ModelParams()
        for key, value in overrides.items():
            if not hasattr(params, key):
                raise TypeError(f"unknown model parameter {key!r}")
            setattr(params, key, value)
        self.params = params
        paths = [Path(path)] if isinstance(path, (str, os.PathLike)) else [Path(p) for p in path]
        if not paths:
            raise ModelLoadError("no model path given")
        if len(paths) == 1 and paths[0].is_file():
            paths = shard_paths(paths[0])  # the other shards of a split model, found by name
        for p in paths:
            _check_file(p)
        check_model_metadata(paths[0], params.kv_overrides)  # what would abort llama.cpp's loader
        self.paths: list[Path] = paths
        nbackend.backend_init()
        devices = list(params.devices)
        if params.rpc_servers and not devices:
            from .rpc import rpc_devices

            # RPC workers first, then local accelerators; the CPU always takes what is not offloaded.
            local = [d.handle for d in nbackend.devices() if d.type in ("gpu", "igpu")]
            devices = [*rpc_devices(params.rpc_servers), *local]
        split_mode = None
        if params.split_mode is not None:
            if params.split_mode not in SPLIT_MODES:
                raise ValueError(f"split_mode must be one of {sorted(SPLIT_MODES)}")
            split_mode = SPLIT_MODES[params.split_mode]
        spec = nmodel.ModelParamsSpec(
            n_gpu_layers=params.n_gpu_layers,
            main_gpu=params.main_gpu,
            split_mode=split_mode,
            tensor_split=params.tensor_split,
            use_mmap=params.use_mmap,
            use_mlock=params.use_mlock,
            vocab_only=params.vocab_only,
            check_tensors=params.check_tensors,
            kv_overrides=list(params.kv_overrides.items()),
            devices=devices,
            load_mtp=params.load_mtp,
            use_extra_bufts=params.use_extra_bufts,
            progress=progress,
        )
        load_args = ([str(p) for p in paths], spec)
        mark = nbackend.error_mark()
        if params.rpc_servers:
            from .._native.fatal import FatalNativeError, run_guarded
            from ..errors import RpcError

            try:
                handle, err, cancelled = run_guarded(
                    nmodel.model_load, *load_args, what="model load over RPC"
                )
            except FatalNativeError as exc:
                raise RpcError(str(exc)) from exc
        else:
            handle, err, cancelled = nmodel.model_load(*load_args)
        if err is not None:
            if handle:
                nmodel.model_free(handle)
            raise ModelLoadError(f"model load progress callback raised: {err!r}") from err
        if not handle:
            if cancelled:
                raise ModelLoadError(f"model load cancelled by the progress callback: {paths[0]}")
            # llama.cpp's own first specific reason (not its generic "failed to load model" lines)
            reasons = [r for r in nbackend.errors_since(mark) if not r.endswith("failed to load model")]
            why = f" ({reasons[0]})" if reasons else ""
            raise ModelLoadError(
                f"llama.cpp failed to load {paths[0]}"
                + (f" (+{len(paths) - 1} shards)" if len(paths) > 1 else "")
                + ": the file is malformed, truncated or of an unsupported architecture"
                + why
            )
        self._own(handle, nmodel.model_free)
        self._meta: dict[str, str] | None = None
        self.vocab = Vocab(self, nmodel.model_vocab(handle))

    # ------------------------------------------------------------------ info
    def _int(self, name: str) -> int:
        return nmodel.model_int(self._ptr(), name)

    @property
    def path(self) -> Path:
        return self.paths[0]

    @property
    def metadata(self) -> dict[str, str]:
        """GGUF key/value metadata as strings (arrays are summarised by llama.cpp)."""
        if self._meta is None:
            self._meta = nmodel.model_meta(self._ptr())
        return dict(self._meta)

    def meta(self, key: str, default: str | None = None) -> str | None:
        if self._meta is None:
            self._meta = nmodel.model_meta(self._ptr())
        return self._meta.get(key, default)

    @property
    def description(self) -> str:
        return nmodel.model_desc(self._ptr())

    @property
    def architecture(self) -> str:
        return self.meta("general.architecture", "") or ""

    @property
    def name(self) -> str:
        return self.meta("general.name") or self.path.stem

    @property
    def size(self) -> int:
        """Total bytes of all tensors."""
        return self._int("size")

    @property
    def n_params(self) -> int:
        return self._int("n_params")

    @property
    def n_ctx_train(self) -> int:
        return self._int("n_ctx_train")

    @property
    def n_embd(self) -> int:
        return self._int("n_embd")

    @property
    def n_embd_out(self) -> int:
        return self._int("n_embd_out")

    @property
    def n_layer(self) -> int:
        return self._int("n_layer")

    @property
    def n_layer_nextn(self) -> int:
        """Number of next-n (MTP) prediction layers; 0 for models without MTP heads."""
        return self._int("n_layer_nextn")

    @property
    def n_head(self) -> int:
        return self._int("n_head")

    @property
    def n_head_kv(self) -> int:
        return self._int("n_head_kv")

    @property
    def n_swa(self) -> int:
        return self._int("n_swa")

    @property
    def n_cls_out(self) -> int:
        return self._int("n_cls_out")

    @property
    def rope_type(self) -> int:
        return self._int("rope_type")

    @property
    def rope_freq_scale_train(self) -> float:
        return nmodel.model_rope_freq_scale_train(self._ptr())

    @property
    def has_encoder(self) -> bool:
        return bool(self._int("has_encoder"))

    @property
    def has_decoder(self) -> bool:
        return bool(self._int("has_decoder"))

    @property
    def decoder_start_token(self) -> int:
        return self._int("decoder_start_token")

    @property
    def is_recurrent(self) -> bool:
        return bool(self._int("is_recurrent"))

    @property
    def is_hybrid(self) -> bool:
        return bool(self._int("is_hybrid"))

    @property
    def is_diffusion(self) -> bool:
        return bool(self._int("is_diffusion"))

    @property
    def ftype(self) -> str:
        return nmodel.ftype_name(self._int("ftype"))

    def cls_label(self, i: int) -> str | None:
        return nmodel.model_cls_label(self._ptr(), i)

    def chat_template(self, name: str | None = None) -> str | None:
        """The model's Jinja chat template (``name`` picks a variant such as ``tool_use``)."""
        return nmodel.model_chat_template(self._ptr(), name)

    def chat_templates(self) -> dict[str, str]:
        """Every chat template in the metadata: ``{"default": …, "tool_use": …}``."""
        out: dict[str, str] = {}
        default = self.chat_template()
        if default:
            out["default"] = default
        prefix = "tokenizer.chat_template."
        for key in self.metadata:
            if key.startswith(prefix):
                tpl = self.chat_template(key[len(prefix) :])
                if tpl:
                    out[key[len(prefix) :]] = tpl
        return out

    def save(self, path: PathLike) -> None:
        nmodel.model_save(self._ptr(), str(path))

    # ------------------------------------------------------ tokenizer shortcuts
    def tokenize(
        self, text: str | bytes, *, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        return self.vocab.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(
        self, tokens: Sequence[int], *, remove_special: bool = False, unparse_special: bool = False
    ) -> str:
        return self.vocab.detokenize(tokens, remove_special=remove_special, unparse_special=unparse_special)

    @property
    def n_vocab(self) -> int:
        return self.vocab.n_tokens

    def __repr__(self) -> str:
        if self.closed:
            return f"<Model {self.path.name} (closed)>"
        return f"<Model {self.path.name} {self.description}>"
