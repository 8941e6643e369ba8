"""How a router builds one model's :class:`~.state.ServerState` from its
:class:`~.model_registry.ModelEntry`: resolve a Hub model (downloading it on first use, or from the
cache only when offline), derive the model's ServerConfig from the server's, load the model (in an
engine process of its own, or in this process for a multimodal projector) and wait until it
serves."""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

from ..core import LoraAdapter, Model, ModelParams
from .config import ServerConfig
from .files import FileStore
from .model_registry import ModelEntry
from .state import ServerState

__all__ = ["StateBuilder", "load_entry_model"]

log = logging.getLogger("llamabind.server")


def load_entry_model(path: str, params: ModelParams, loras: tuple[tuple[str, float], ...] = ()) -> Model:
    """The full model with its LoRA adapters riding along as ``model.cli_loras`` (picklable as a
    ``functools.partial``: the engine process runs it)."""
    model = Model(path, params)
    adapters: list[tuple[Any, float]] = []
    try:
        for lpath, scale in loras:
            adapters.append((LoraAdapter(model, lpath), scale))
    except BaseException:
        model.close()
        raise
    model.cli_loras = adapters  # type: ignore[attr-defined]
    return model


@dataclasses.dataclass
class StateBuilder:
    """Builds a model's ServerState: ``config`` is the server's (its ``model_alias``, templates,
    projector and draft model are replaced by the entry's), ``params`` how models are loaded."""

    config: ServerConfig
    params: ModelParams = dataclasses.field(default_factory=ModelParams)
    files: FileStore | None = None
    #: Hub models: resolve from the cache only (None: the HF_HUB_OFFLINE environment variable)
    offline: bool | None = None
    #: seconds an engine process may take to load its model
    load_timeout: float = 600.0

    def config_for(self, entry: ModelEntry, mmproj: str | None) -> ServerConfig:
        base = self.config
        sched = base.scheduler
        parallel = entry.parallel or (sched.parallel if entry.role == "generation" else 1)
        if entry.ctx_size is not None:
            per_slot = entry.ctx_size // parallel
        else:
            per_slot = sched.ctx_per_slot
        spec = "draft" if entry.draft else (None if sched.spec == "draft" else sched.spec)
        kv = entry.kv_type
        sched = dataclasses.replace(
            sched,
            parallel=parallel,
            ctx_per_slot=per_slot,
            spec=spec,
            type_k=kv or sched.type_k,
            type_v=kv or sched.type_v,
        )
        return dataclasses.replace(
            base,
            model_alias=entry.name,
            strict_model_name=True,
            chat_template=entry.chat_template,
            chat_template_file=entry.chat_template_file,
            mmproj=mmproj,
            draft_model=entry.draft,
            loras=(),
            scheduler=sched,
            engine="thread" if mmproj else base.engine,
            vocab_loader=None,
        )

    def resolve(self, entry: ModelEntry) -> tuple[Path, str | None]:
        """The model's first file and its projector (a Hub model is downloaded if missing)."""
        if entry.hf is None:
            assert entry.path is not None
            return entry.path, entry.mmproj
        from ..hub import resolve_model

        log.warning("model %s: resolving %s on the Hugging Face Hub", entry.name, entry.hf)
        resolved = resolve_model(entry.hf, offline=self.offline, progress=False, mmproj=entry.mmproj is None)
        log.warning("model %s: %s", entry.name, resolved.path)
        mmproj = entry.mmproj or (str(resolved.mmproj) if resolved.mmproj is not None else None)
        return resolved.path, mmproj

    def __call__(self, entry: ModelEntry) -> ServerState:
        """Blocking: load ``entry`` and return its ServerState once it serves."""
        path, mmproj = self.resolve(entry)
        params = self.params
        if entry.n_gpu_layers is not None:
            params = dataclasses.replace(params, n_gpu_layers=entry.n_gpu_layers)
        cfg = self.config_for(entry, mmproj)
        if cfg.engine == "process":
            loader = functools.partial(load_entry_model, str(path), params, entry.loras)
            spec = cfg.engine_spec(loader)
            vocab = Model(path, dataclasses.replace(params, vocab_only=True))
            try:
                state = ServerState(vocab, cfg, owns_model=True, files=self.files, engine_spec=spec)
            except BaseException:
                vocab.close()
                raise
            try:
                sched: Any = state.scheduler
                if not sched.wait_ready(self.load_timeout):
                    raise TimeoutError(f"the engine did not load the model in {self.load_timeout:.0f} s")
            except BaseException:
                state.close()
                raise
            return state
        model = load_entry_model(str(path), params, entry.loras)
        cfg.loras = list(getattr(model, "cli_loras", []))
        try:
            return ServerState(model, cfg, owns_model=True, files=self.files)
        except BaseException:
            model.close()
            raise
