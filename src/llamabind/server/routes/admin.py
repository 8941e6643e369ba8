"""``GET /health`` (no authentication), ``/v1/models``, ``/metrics``, ``/slots`` and
``POST /slots/{id}?action=save|restore|erase``; on a router server also ``POST /models/load`` and
``POST /models/unload``."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..common import Holder
from ..errors import APIError, error_body, error_from_exception
from ..state import ServerState

__all__ = ["models_list", "router", "slot_action", "slots_list"]


def models_list(state: ServerState) -> dict[str, Any]:
    """Blocking (model metadata): the /v1/models answer."""
    m = state.model
    return {
        "object": "list",
        "data": [
            {
                "id": state.alias,
                "object": "model",
                "created": state.created,
                "owned_by": "llamabind",
                "meta": {
                    "file": m.path.name,
                    "n_vocab": m.n_vocab,
                    "n_ctx_train": m.n_ctx_train,
                    "n_ctx_slot": state.scheduler.n_ctx_slot,
                    "n_embd": m.n_embd,
                    "n_params": m.n_params,
                    "size": m.size,
                },
            }
        ],
    }


def slots_list(state: ServerState) -> list[dict[str, Any]]:
    sched = state.scheduler
    return [
        {
            "id": s.id,
            "state": s.state,
            "is_processing": s.request_id is not None,
            "request_id": s.request_id,
            "n_ctx": sched.n_ctx_slot,
            "n_cached": s.n_cached,
            "n_prompt_tokens": s.n_prompt,
            "n_decoded": s.n_generated,
        }
        for s in sched.slot_info()
    ]


async def slot_action(state: ServerState, slot_id: int, action: str, raw: bytes) -> dict[str, Any]:
    """Save / restore a slot's KV to / from a file of ``--slot-save-path``, or erase it; the body
    is ``{"filename": NAME}`` (a plain name: no path)."""
    filename = None
    if action in ("save", "restore"):
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise APIError(400, 'the body must be JSON: {"filename": NAME}', param="filename") from None
        filename = body.get("filename") if isinstance(body, dict) else None
        if not isinstance(filename, str) or not filename:
            raise APIError(400, "filename is required", param="filename")
    try:
        result: dict[str, Any] = await run_in_threadpool(
            state.scheduler.slot_action, slot_id, action, filename
        )
    except Exception as exc:
        raise error_from_exception(exc) from None
    return result


def router(holder: Holder) -> APIRouter:
    r = APIRouter()
    created = int(time.time())

    @r.get("/health")
    @r.get("/v1/health", include_in_schema=False)
    async def health() -> JSONResponse:
        if holder.router is not None:  # the router serves (each model reports its own status)
            return JSONResponse({"status": "ok", "models": holder.router.statuses()})
        if holder.state is not None and holder.state.ready:
            return JSONResponse({"status": "ok"})
        error = holder.error or (holder.state.engine_error if holder.state is not None else None)
        if error is not None:
            body = error_body(
                f"the model failed to load: {error}", "unavailable_error", None, "model_load_failed"
            )
            return JSONResponse({"status": "error", **body}, status_code=503)
        body = error_body("the model is loading", "unavailable_error", None, "model_loading")
        return JSONResponse({"status": "loading", **body}, status_code=503)

    @r.get("/v1/models")
    @r.get("/models", include_in_schema=False)
    async def models() -> JSONResponse:
        router = holder.router
        if router is not None:
            data = await run_in_threadpool(router.describe, created)
            return JSONResponse({"object": "list", "data": data})
        state = holder.get()
        return JSONResponse(await run_in_threadpool(models_list, state))

    @r.get("/metrics")
    async def metrics() -> Response:
        return Response(holder.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @r.get("/slots")
    async def slots(model: str | None = None) -> JSONResponse:
        """The slots of the model (on a router: ``?model=NAME``, else every loaded model's, by
        name)."""
        router = holder.router
        if router is None:
            return JSONResponse(slots_list(holder.get()))
        if model is not None:
            state = router.lookup(model).state
            return JSONResponse(slots_list(state) if state is not None else [])
        return JSONResponse({name: slots_list(st) for name, st in router.loaded()})

    async def model_name(request: Request) -> str:
        if holder.router is None:
            raise APIError(
                400,
                "this server serves one model: start it with --models-dir or --models-preset to "
                "load and unload models",
                code="not_a_router",
            )
        try:
            body = await request.json()
        except ValueError:
            raise APIError(400, 'expected a JSON body {"model": NAME}', code="invalid_json") from None
        name = body.get("model") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            raise APIError(400, 'expected a JSON body {"model": NAME}', param="model")
        return name

    @r.post("/models/load")
    @r.post("/v1/models/load", include_in_schema=False)
    async def load(request: Request) -> JSONResponse:
        """Load a model now (a failed one is tried again)."""
        name = await model_name(request)
        assert holder.router is not None
        await holder.router.load(name)
        m = holder.router.lookup(name)
        return JSONResponse({"model": m.name, "status": m.status, "load_seconds": m.load_seconds})

    @r.post("/models/unload")
    @r.post("/v1/models/unload", include_in_schema=False)
    async def unload(request: Request) -> JSONResponse:
        """Unload a model (409 while it serves a request)."""
        name = await model_name(request)
        assert holder.router is not None
        was_loaded = await holder.router.unload(name)
        m = holder.router.lookup(name)
        return JSONResponse({"model": m.name, "status": m.status, "unloaded": was_loaded})

    @r.post("/slots/{slot_id}")
    async def slots_action(slot_id: int, request: Request, action: str = "") -> JSONResponse:
        return JSONResponse(await slot_action(holder.get(), slot_id, action, await request.body()))

    return r
