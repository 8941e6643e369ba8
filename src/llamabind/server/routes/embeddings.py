"""``POST /v1/embeddings`` and ``POST /v1/rerank`` (also ``/rerank``, ``/v1/reranking``)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..common import Holder
from ..errors import APIError, error_from_exception
from ..limits import check_embeddings, check_rerank
from ..schemas import EmbeddingRequest, RerankRequest
from ..state import EmbeddingService

__all__ = [
    "embed_request",
    "embedding_inputs",
    "embeddings_response",
    "rerank_request",
    "router",
    "tokenize_inputs",
]


def embedding_inputs(inp: Any) -> list[Any]:
    """``input`` as a list of items (strings or token lists)."""
    items: list[Any]
    if isinstance(inp, str):
        items = [inp]
    elif inp and all(isinstance(x, int) for x in inp):
        items = [inp]
    else:
        items = list(inp)
    if not items:
        raise APIError(400, "input must not be empty", param="input")
    return items


def tokenize_inputs(svc: EmbeddingService, items: Sequence[Any]) -> list[list[int]]:
    """Blocking: each text input tokenized (token inputs as they are)."""
    out: list[list[int]] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise APIError(400, f"input[{i}] is an empty string", param="input")
            out.append(svc.tokenize(item))
        else:
            out.append(list(item))
    return out


def embeddings_response(
    vecs: Sequence[npt.NDArray[np.float32]],
    seqs: Sequence[Sequence[int]],
    encoding_format: str | None,
    model: str,
) -> dict[str, Any]:
    data = []
    for i, v in enumerate(vecs):
        arr = np.asarray(v, dtype="<f4")
        emb: Any = (
            base64.b64encode(arr.tobytes()).decode("ascii")
            if encoding_format == "base64"
            else [float(x) for x in arr]
        )
        data.append({"object": "embedding", "index": i, "embedding": emb})
    n_tokens = sum(len(s) for s in seqs)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }


async def embed_request(body: EmbeddingRequest, holder: Holder) -> Response:
    state = await holder.resolve(body.model)
    check_embeddings(state.config.limits, body)
    svc = state.embeddings
    if body.dimensions is not None and body.dimensions != svc.dim:
        raise APIError(
            400,
            f"dimensions={body.dimensions} is not supported: this model's embeddings have {svc.dim} "
            "dimensions (omit the field)",
            param="dimensions",
            code="unsupported",
        )
    items = embedding_inputs(body.input)
    try:
        seqs = await run_in_threadpool(tokenize_inputs, svc, items)
        vecs = await run_in_threadpool(svc.embed, seqs)
    except APIError:
        raise
    except Exception as exc:
        raise error_from_exception(exc, param="input") from None
    return JSONResponse(embeddings_response(vecs, seqs, body.encoding_format, state.alias))


async def rerank_request(body: RerankRequest, holder: Holder) -> Response:
    state = await holder.resolve(body.model)
    check_rerank(state.config.limits, body)
    if not body.query:
        raise APIError(400, "query must not be empty", param="query")
    try:
        results, n_tokens = await run_in_threadpool(state.embeddings.rerank, body.query, body.documents)
    except Exception as exc:
        raise error_from_exception(exc, param="documents") from None
    if body.top_n is not None:
        results = results[: body.top_n]
    out = []
    for r in results:
        item: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
        if body.return_documents:
            item["document"] = {"text": r.document}
        out.append(item)
    return JSONResponse(
        {
            "object": "list",
            "model": state.alias,
            "results": out,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }
    )


def router(holder: Holder) -> APIRouter:
    r = APIRouter()

    @r.post("/v1/embeddings")
    @r.post("/embeddings", include_in_schema=False)
    async def embeddings(body: EmbeddingRequest) -> Response:
        return await embed_request(body, holder)

    @r.post("/v1/rerank")
    @r.post("/rerank", include_in_schema=False)
    @r.post("/v1/reranking", include_in_schema=False)
    async def rerank(body: RerankRequest) -> Response:
        return await rerank_request(body, holder)

    return r
