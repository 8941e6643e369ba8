"""The ASGI middleware: API-key check (constant time, every route but /health) and the HTTP
request counter, labelled by route template (derived from the app's routes, see :func:`route_labeler`)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Iterator, Sequence

from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .anthropic import anthropic_error_body
from .errors import APIError
from .metrics import Metrics

__all__ = ["ANTHROPIC_PATHS", "OPEN_PATHS", "AuthAndMetricsMiddleware", "route_labeler"]

OPEN_PATHS = frozenset({"/health", "/v1/health"})
ANTHROPIC_PATHS = frozenset(
    {"/v1/messages", "/messages", "/v1/messages/count_tokens", "/messages/count_tokens"}
)


def _flat(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """The app's routes with included routers (FastAPI keeps them as one entry each; this app
    includes them without a prefix) opened up."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat(inner.routes)
        else:
            yield route


def route_labeler(routes: Callable[[], Sequence[BaseRoute]]) -> Callable[[Scope], str]:
    """The metrics label of a request: the path template of the app route it matches (also with
    the wrong method), else ``"other"`` (so unknown paths cannot blow up the label set). Routes
    without path parameters are looked up in a set; the others are matched in order."""
    cache: list[tuple[frozenset[str], list[BaseRoute]]] = []

    def label(scope: Scope) -> str:
        if not cache:
            static: set[str] = set()
            dynamic: list[BaseRoute] = []
            for route in _flat(routes()):
                path = getattr(route, "path", None)
                if isinstance(path, str) and "{" not in path:
                    static.add(path)
                else:
                    dynamic.append(route)
            cache.append((frozenset(static), dynamic))
        static_paths, dynamic_routes = cache[0]
        path = scope.get("path", "")
        if path in static_paths:
            return str(path)
        for route in dynamic_routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return str(getattr(route, "path", "other"))
        return "other"

    return label


class AuthAndMetricsMiddleware:
    """API-key check (constant time, every route but /health) and the HTTP request counter."""

    def __init__(
        self, app: ASGIApp, metrics: Callable[[], Metrics], keys: Sequence[str], label: Callable[[Scope], str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        if any(not k.strip() for k in keys):
            raise ValueError("an API key must not be empty (give no keys to serve without authentication)")
        self.keys = [k.encode() for k in keys]
        self.label = label

    def _authorized(self, scope: Scope) -> bool:
        """Every credential the request carries is tried, whatever the header order: a Bearer
        ``Authorization`` token and each ``x-api-key`` (an ``Authorization`` of another scheme,
        e.g. Basic from a proxy, hides nothing)."""
        given: list[bytes] = []
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.strip().partition(b" ")
                if scheme.lower() == b"bearer" and token.strip():
                    given.append(token.strip())
            elif name == b"x-api-key" and value.strip():
                given.append(value.strip())
        ok = False
        for candidate in given[:8]:
            for key in self.keys:  # no early exit: the time does not depend on which key matched
                ok |= hmac.compare_digest(candidate, key)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            if (
                self.keys
                and path not in OPEN_PATHS
                and scope.get("method") != "OPTIONS"
                and not self._authorized(scope)
            ):
                err = APIError(401, "invalid or missing API key", code="invalid_api_key")
                body = anthropic_error_body(err) if path in ANTHROPIC_PATHS else err.body()
                resp = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await resp(scope, receive, send_wrapper)
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics().http_requests.labels(self.label(scope), str(status[0])).inc()
