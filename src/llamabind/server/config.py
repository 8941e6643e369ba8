"""`ServerConfig`: everything `create_app` needs besides the model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..batching import SchedulerConfig
from ..engine import EngineSpec
from ..generation.sampling import SamplingParams
from .limits import Limits

__all__ = ["ServerConfig"]


@dataclass
class ServerConfig:
    """Server settings. ``sampling`` holds the defaults a request's fields override."""

    #: the name clients use in ``model``; None: the model file's stem
    model_alias: str | None = None
    #: answer only requests whose ``model`` is the alias or the file's name/stem (others: 404
    #: ``model_not_found``); off (default): any name is served by the one model, and responses carry
    #: the alias
    strict_model_name: bool = False
    #: accepted API keys (empty: no authentication); compared in constant time
    api_keys: Sequence[str] = ()
    #: origins allowed by CORS (``*`` for any); empty: no CORS headers
    cors_origins: Sequence[str] = ()
    #: chat template override: Jinja source or a llama.cpp built-in name (``chatml`` …)
    chat_template: str | None = None
    chat_template_file: str | None = None
    #: split ``<think>`` blocks into ``reasoning_content``
    reasoning: bool = True
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    #: default ``max_tokens`` when a request gives none (None: until end of turn / context)
    max_tokens: int | None = None
    #: the embeddings context: its size (= the longest input) and how many inputs per decode
    embeddings_n_ctx: int = 2048
    embeddings_n_seq: int = 8
    #: speculative decoding with a draft model (``scheduler.spec == "draft"``): its GGUF path
    draft_model: str | None = None
    draft_n_gpu_layers: int | None = None
    #: multimodal projector (mmproj GGUF) for image/audio input; None: text only
    mmproj: str | None = None
    mmproj_use_gpu: bool = True
    #: fetch http(s) image URLs (SSRF-checked); off: only data URLs and uploaded file ids
    allow_remote_media: bool = False
    media_max_bytes: int = 20 * 1024 * 1024
    media_fetch_timeout: float = 10.0
    #: the in-memory /v1/files store
    files_max_bytes: int = 20 * 1024 * 1024
    files_max_total_bytes: int = 512 * 1024 * 1024
    files_max_count: int = 1000
    #: reject ``n`` above this
    max_n: int = 16
    #: what one request may ask for (body size, JSON nesting, counts and sizes of fields)
    limits: Limits = field(default_factory=Limits)
    #: LoRA adapters ``[(LoraAdapter, scale), …]`` applied to the generation context
    loras: Sequence[tuple[Any, float]] = ()
    #: the chat UI at ``/`` (off: ``/`` is 404; the API is unchanged)
    webui: bool = True
    #: where the model runs: "thread" (this process, the scheduler's engine thread) or "process"
    #: (a supervised child process: a llama.cpp abort or hang does not take the server down)
    engine: Literal["thread", "process"] = "thread"
    #: engine process: a step (or a heartbeat) older than this kills and restarts the engine
    watchdog_timeout: float = 120.0
    #: engine process: seconds it gets to stop when the server shuts down, then it is killed
    shutdown_timeout: float = 10.0
    #: engine process over a model *loader* (which must then be picklable: it runs in the engine
    #: process): a zero-argument loader of the cheap vocab-only model this process keeps for
    #: tokenization and templates (required there)
    vocab_loader: Any = None
    #: a router server (``create_app(None, config, models=…)``): how many models may be loaded at
    #: once (None: no bound; the least recently used idle one is unloaded to make room)
    models_max: int | None = None
    #: a router server: unload a model idle this many seconds (None: never; a model's own TTL wins)
    models_ttl: float | None = None
    #: a router server: how its models are loaded (a ``ModelParams``; None: llama.cpp's defaults)
    model_params: Any = None

    def engine_spec(self, loader: Any) -> EngineSpec:
        """The engine process's recipe for this configuration over ``loader`` (a picklable
        zero-argument callable that loads the full model in the engine process)."""
        return EngineSpec(
            loader,
            self.scheduler,
            draft_model=self.draft_model,
            draft_n_gpu_layers=self.draft_n_gpu_layers,
            embeddings_n_ctx=self.embeddings_n_ctx,
            embeddings_n_seq=self.embeddings_n_seq,
        )

    def __post_init__(self) -> None:
        if any(not isinstance(k, str) or not k.strip() for k in self.api_keys):
            raise ValueError("an API key must not be empty (give no keys to serve without authentication)")
