"""``GET /health`` (no authentication), ``/v1/models``, ``/metrics`` and ``/slots``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..common import Holder
from ..errors import error_body
from ..state import ServerState

__all__ = ["models_list", "router", "slots_list"]


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


def router(holder: Holder) -> APIRouter:
    r = APIRouter()

    @r.get("/health")
    @r.get("/v1/health", include_in_schema=False)
    async def health() -> JSONResponse:
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
        state = holder.get()
        return JSONResponse(await run_in_threadpool(models_list, state))

    @r.get("/metrics")
    async def metrics() -> Response:
        return Response(holder.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @r.get("/slots")
    async def slots() -> JSONResponse:
        return JSONResponse(slots_list(holder.get()))

    return r
