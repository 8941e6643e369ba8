"""OpenAI error bodies ``{"error": {"message", "type", "param", "code"}}`` for every failure.

:func:`error_from_exception` is the one mapping from an exception to the answer: it walks the
exception class's MRO (as Starlette picks exception handlers) for the ``http_status``,
``error_code`` and ``default_param`` that :mod:`llamabind.errors` declares. Anything that is not a
:class:`~llamabind.errors.LlamabindError`, and every error whose status is 500, is answered with a
generic message (and logged): internal details never reach the client.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..errors import APIError, LlamabindError

__all__ = ["APIError", "error_body", "error_from_exception", "sse_error"]

log = logging.getLogger("llamabind.server")

_MISSING = object()


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _declared(exc: BaseException, name: str) -> Any:
    """The attribute ``name`` as the exception declares it: set on the instance, else on the first
    class of its MRO that defines it (``_MISSING`` if none does)."""
    value = vars(exc).get(name, _MISSING)
    if value is not _MISSING:
        return value
    for cls in type(exc).__mro__:
        if name in cls.__dict__:
            return cls.__dict__[name]
    return _MISSING


def _internal(exc: BaseException) -> APIError:
    log.error("internal error", exc_info=(type(exc), exc, exc.__traceback__))
    return APIError(500, "internal server error", code="internal_error")


def error_from_exception(exc: BaseException, *, param: str | None = None) -> APIError:
    """Map any exception to the APIError to answer with (500 without details for unexpected ones).

    ``param`` names the request field the failing step read (client errors only); an error that
    names its own field (``ChatRequestError.param``) wins over it, and the class's
    ``default_param`` is the fallback.
    """
    if isinstance(exc, APIError):
        return exc
    if not isinstance(exc, LlamabindError):
        return _internal(exc)
    status = _declared(exc, "http_status")
    if not isinstance(status, int) or (status == 500 and _declared(exc, "public") is not True):
        return _internal(exc)
    code = _declared(exc, "error_code")
    where = None
    if status < 500:  # a client error: name the request field at fault
        default = _declared(exc, "default_param")
        where = vars(exc).get("param") or param or (default if isinstance(default, str) else None)
    return APIError(status, exc.client_message(), param=where, code=code if isinstance(code, str) else None)


def sse_error(exc: BaseException) -> bytes:
    """An error inside a stream that already started: one ``data:`` event the openai SDK raises on."""
    err = error_from_exception(exc)
    return b"data: " + json.dumps(err.body(), ensure_ascii=False).encode() + b"\n\n"
