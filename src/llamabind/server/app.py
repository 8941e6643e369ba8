"""The FastAPI app: :func:`create_app` wires the routers of :mod:`.routes`, the error handlers of
:mod:`.errors`, the middleware of :mod:`.middleware` and the model's lifespan.

Routes: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/rerank``,
``/v1/models``, ``/v1/files`` (and the same without ``/v1``), ``/health`` (the one route without
authentication), ``/tokenize``, ``/detokenize``, ``/infill``, ``/metrics``, ``/slots``, and
Anthropic's ``/v1/messages``, OpenAI's ``/v1/responses`` and Ollama's ``/api/*``. The event loop never calls llama.cpp: rendering, tokenization,
detokenization, grammar parsing, logit-bias tokens and logprob pieces run in worker threads,
generation in the scheduler's engine thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..core import Model, ModelParams
from ..engine import EngineSpec
from ..engine.process import model_reloader
from .common import Holder
from .config import ServerConfig
from .errors import APIError, error_body, error_from_exception
from .files import FileStore, create_files_router
from .limits import LimitsMiddleware
from .middleware import ANTHROPIC_PATHS, AuthAndMetricsMiddleware, route_labeler
from .model_registry import ModelEntry
from .router import LeaseMiddleware, ModelRouter
from .router_build import StateBuilder
from .routes import admin, anthropic, chat, completions, embeddings, ollama, responses, tokens
from .state import ServerState
from .webui import mount_webui

__all__ = ["create_app"]

log = logging.getLogger("llamabind.server")

ModelSource = Model | Callable[[], Model]


async def _preload(router: ModelRouter, name: str) -> None:
    """Load a model at startup (a failure is the model's status, not the server's)."""
    with contextlib.suppress(APIError):
        await router.load(name)


def validation_error_body(exc: RequestValidationError) -> dict[str, object]:
    """The 400 body for a request that failed FastAPI's validation (the first problem, and how many
    more there are)."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        detail = ctx.get("error") if isinstance(ctx, dict) else None
        msg = "malformed JSON in the request body" + (f": {detail}" if detail else "")
        return error_body(msg, "invalid_request_error", None, "invalid_json")
    param = loc[0] if loc else None  # the top-level field (deeper parts name union members)
    text = str(first.get("msg", "invalid request"))
    where = ".".join(x for x in loc if x.isidentifier() or x.isdigit())
    msg = f"{where or param}: {text}" if param else text
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return error_body(msg, "invalid_request_error", param, "invalid_value")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error_body(exc), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = APIError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(err.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        err = error_from_exception(exc)
        return JSONResponse(err.body(), status_code=err.status)


def create_app(
    model: ModelSource | None, config: ServerConfig | None = None, *, models: Sequence[ModelEntry] = ()
) -> FastAPI:
    """The OpenAI-compatible app over ``model`` (a loaded Model, which the caller keeps owning, or a
    zero-argument loader run in a background thread at startup, whose Model the app closes).

    The scheduler (one context, ``config.scheduler.parallel`` slots) starts with the app's lifespan
    and stops with it.

    With ``models`` (and ``model`` None) the app is a *router*: requests route by their ``model``
    field to those models, each loaded on first use (``config.models_max`` at once, idle ones
    unloaded after ``config.models_ttl`` seconds; see :class:`~.router.ModelRouter`). Entries whose
    ``source`` is ``"cli"`` are loaded at startup, and the first of them serves requests that name
    no model.
    """
    cfg = config or ServerConfig()
    files = FileStore(
        max_file_bytes=cfg.files_max_bytes,
        max_total_bytes=cfg.files_max_total_bytes,
        max_files=cfg.files_max_count,
    )
    model_router: ModelRouter | None = None
    if models:
        if model is not None:
            raise ValueError("give either a model or router models, not both")
        builder = StateBuilder(cfg, cfg.model_params or ModelParams(), files)
        preload = [e.name for e in models if e.source == "cli"]
        model_router = ModelRouter(
            models,
            builder,
            max_loaded=cfg.models_max,
            ttl=cfg.models_ttl,
            default=preload[0] if preload else None,
        )
    elif model is None:
        raise ValueError("create_app needs a model (or router models)")
    holder = Holder(cfg, model_router)
    if (
        cfg.engine == "process"
        and model_router is None
        and not isinstance(model, Model)
        and cfg.vocab_loader is None
    ):
        raise ValueError("engine='process' with a model loader needs config.vocab_loader")

    def engine_spec(m: Model) -> EngineSpec | None:
        """The engine process's recipe (None: the engine runs in this process)."""
        if cfg.engine != "process":
            return None
        loader = model if not isinstance(model, Model) else model_reloader(m)
        assert loader is not None
        return cfg.engine_spec(loader)

    def build(m: Model, owns: bool) -> None:
        try:
            state = ServerState(m, cfg, owns_model=owns, files=files, engine_spec=engine_spec(m))
        except BaseException as exc:
            holder.error = exc
            log.error("server start failed: %s", exc)
            if owns:
                m.close()
            return
        if holder.closed:
            state.close()
            return
        holder.state = state

    def load() -> None:
        assert callable(model) and not isinstance(model, Model)
        try:
            m = cfg.vocab_loader() if cfg.engine == "process" and cfg.vocab_loader is not None else model()
        except BaseException as exc:
            holder.error = exc
            log.error("model load failed: %s", exc)
            return
        build(m, True)

    @contextlib.asynccontextmanager
    async def router_lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert model_router is not None
        tasks = [asyncio.create_task(model_router.run_ttl(), name="llamabind-models-ttl")]
        for name in preload:
            tasks.append(asyncio.create_task(_preload(model_router, name), name=f"llamabind-load-{name}"))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await model_router.close_all()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if model_router is not None:
            async with router_lifespan(app):
                yield
            return
        loader: threading.Thread | None = None
        if isinstance(model, Model):
            if holder.state is None and holder.error is None:
                build(model, False)
        else:
            loader = threading.Thread(target=load, name="llamabind-load", daemon=True)
            loader.start()
        try:
            yield
        finally:
            holder.closed = True
            if loader is not None:
                await run_in_threadpool(loader.join)
            if holder.state is not None:
                st, holder.state = holder.state, None
                await run_in_threadpool(st.close)

    app = FastAPI(
        title="llamabind",
        version=__version__,
        description="OpenAI-compatible API over llama.cpp with continuous batching",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc: mount_webui, over files shipped in the package
        redoc_url=None,
    )
    app.state.holder = holder
    app.state.files = files
    _install_error_handlers(app)

    app.include_router(admin.router(holder))
    app.include_router(chat.router(holder))
    app.include_router(anthropic.router(holder))
    app.include_router(completions.router(holder))
    app.include_router(create_files_router(files))
    app.include_router(embeddings.router(holder))
    app.include_router(tokens.router(holder))
    app.include_router(responses.router(holder))
    app.include_router(ollama.router(holder))

    # middleware (last = outermost); a router's leases are innermost (they end with the response);
    # the metrics label set is the app's own routes. The limits
    # (body size, content type, JSON nesting) run after the API-key check, before any parsing.
    label = route_labeler(lambda: app.routes)
    if model_router is not None:
        app.add_middleware(LeaseMiddleware, router=lambda: model_router)
    app.add_middleware(
        LimitsMiddleware,
        limits=cfg.limits,
        label=label,
        exempt=("/v1/files", "/files"),
        anthropic=ANTHROPIC_PATHS,
    )
    app.add_middleware(
        AuthAndMetricsMiddleware,
        metrics=lambda: holder.metrics,
        keys=list(cfg.api_keys),
        label=label,
    )
    if cfg.cors_origins:
        origins = list(cfg.cors_origins)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials="*" not in origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    mount_webui(app, cfg)  # the chat UI at / and the docs' files: outermost, before authentication
    return app
