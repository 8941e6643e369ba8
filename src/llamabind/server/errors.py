"""OpenAI error bodies ``{"error": {"message", "type", "param", "code"}}`` for every failure."""

from __future__ import annotations

import json
import logging
from typing import Any

from ..batching import QueueFullError
from ..chat import MessageError, ToolChoiceError
from ..errors import (
    ContextOverflowError,
    EngineCrashedError,
    GrammarError,
    NoKvSlotError,
    SchemaError,
    TemplateError,
    TokenizeError,
    UnsupportedError,
)
from ..generation.chat import ChatRequestError
from ..multimodal import MediaError

__all__ = ["APIError", "error_body", "error_from_exception", "sse_error"]

log = logging.getLogger("llamabind.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


class APIError(Exception):
    """An error to answer with: HTTP status and the OpenAI error object's fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_from_exception(exc: BaseException, *, param: str | None = None) -> APIError:
    """Map any exception to the APIError to answer with (500 without details for unexpected ones)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, EngineCrashedError):
        return APIError(500, str(exc), code="engine_crashed")
    if isinstance(exc, QueueFullError):
        return APIError(503, str(exc), code="server_busy")
    if isinstance(exc, ContextOverflowError):
        return APIError(400, str(exc), param=param, code="context_length_exceeded")
    if isinstance(exc, ChatRequestError):
        return APIError(400, str(exc), param=exc.param or param, code="invalid_value")
    if isinstance(exc, SchemaError):
        return APIError(
            400, f"invalid JSON schema: {exc}", param=param or "response_format", code="invalid_schema"
        )
    if isinstance(exc, GrammarError):
        return APIError(400, f"invalid grammar: {exc}", param=param or "grammar", code="invalid_grammar")
    if isinstance(exc, ToolChoiceError):
        return APIError(400, str(exc), param=param or "tools", code="invalid_value")
    if isinstance(exc, (MessageError, TemplateError)):
        return APIError(400, str(exc), param=param or "messages", code="invalid_value")
    if isinstance(exc, TokenizeError):
        return APIError(400, str(exc), param=param, code="invalid_value")
    if isinstance(exc, NoKvSlotError):
        return APIError(503, str(exc), code="kv_cache_full")
    if isinstance(exc, UnsupportedError):
        return APIError(400, str(exc), param=param, code="unsupported")
    if isinstance(exc, MediaError):
        return APIError(exc.status, str(exc), param=param or "messages", code="invalid_media")
    if isinstance(exc, ValueError):
        return APIError(400, str(exc), param=param, code="invalid_value")
    log.error("internal error", exc_info=(type(exc), exc, exc.__traceback__))
    return APIError(500, "internal server error", code="internal_error")


def sse_error(exc: BaseException) -> bytes:
    """An error inside a stream that already started: one ``data:`` event the openai SDK raises on."""
    err = error_from_exception(exc)
    return b"data: " + json.dumps(err.body(), ensure_ascii=False).encode() + b"\n\n"
