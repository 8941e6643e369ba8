"""llama.cpp's ``POST /tokenize`` and ``POST /detokenize``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...core import Model
from ..common import Holder
from ..errors import error_from_exception
from ..limits import check_detokenize, check_tokenize
from ..schemas import DetokenizeRequest, TokenizeRequest

__all__ = ["piece_json", "router", "tokenize_answer"]


def piece_json(model: Model, token: int) -> str | list[int]:
    raw = model.vocab.token_to_piece(token, special=True)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)  # llama.cpp: a piece that is not valid UTF-8 comes as its bytes


def tokenize_answer(model: Model, body: TokenizeRequest) -> dict[str, Any]:
    """Blocking: the /tokenize answer."""
    toks = model.tokenize(body.content, add_special=body.add_special, parse_special=body.parse_special)
    if body.with_pieces:
        return {"tokens": [{"id": t, "piece": piece_json(model, t)} for t in toks]}
    return {"tokens": toks}


def router(holder: Holder) -> APIRouter:
    r = APIRouter()

    @r.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> JSONResponse:
        state = await holder.resolve(body.model)
        check_tokenize(state.config.limits, body)
        return JSONResponse(await run_in_threadpool(tokenize_answer, state.model, body))

    @r.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> JSONResponse:
        state = await holder.resolve(body.model)
        check_detokenize(state.config.limits, body)
        try:
            text = await run_in_threadpool(state.model.detokenize, body.tokens)
        except Exception as exc:
            raise error_from_exception(exc, param="tokens") from None
        return JSONResponse({"content": text})

    return r
