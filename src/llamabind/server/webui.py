"""The chat UI at ``/`` and offline ``/docs`` and ``/redoc``.

Everything the browser loads ships inside the Python package: the chat app built from ``webui/``
at the repository root into ``webui_dist/`` (``make webui``), and Swagger UI and ReDoc from the
``fastapi-offline`` package. No CDN, font or script is fetched from elsewhere.

Static files are answered by an ASGI layer in front of the API's authentication (a browser loads
the page before it can send a key); the page then calls the API with the key the user gives it.
``/webui/props`` (what the UI needs beyond ``/v1/models``: the projector's modalities) and the
``/docs`` and ``/redoc`` pages are ordinary routes behind that authentication.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import ServerConfig

__all__ = ["DIST", "DOCS_ASSETS", "mount_webui"]

#: the built chat UI (committed; rebuilt by ``make webui``)
DIST = Path(__file__).parent / "webui_dist"
#: where the docs pages load Swagger UI's and ReDoc's files from
DOCS_ASSETS = "/docs/assets"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
#: the chat page may load and call nothing but this server (a second guard behind DOMPurify)
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
#: Swagger UI and ReDoc run inline scripts and styles, and ReDoc searches in a blob: worker; they
#: load nothing from elsewhere (ReDoc's footer logo from its CDN is blocked and hides itself)
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "content-security-policy": _CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@dataclass
class _Asset:
    """One file, read (and gzipped when it pays) on first use."""

    path: Path
    headers: dict[str, str]
    body: bytes = b""
    gz: bytes | None = None
    etag: str = ""
    loaded: bool = False

    def load(self) -> None:
        body = self.path.read_bytes()
        packed = gzip.compress(body, 6, mtime=0) if len(body) > 1024 else None
        self.gz = packed if packed is not None and len(packed) < len(body) else None
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        self.body = body
        self.loaded = True


class _StaticFiles:
    """Serves a fixed map of paths → files for GET/HEAD (ETag, gzip); passes everything else on."""

    def __init__(self, app: ASGIApp, assets: dict[str, _Asset]) -> None:
        self.app = app
        self.assets = assets
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        asset = self.assets.get(scope.get("path", "")) if scope["type"] == "http" else None
        if asset is None or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if not asset.loaded:
            with self._lock:
                if not asset.loaded:
                    asset.load()
        req = Headers(scope=scope)
        headers = {
            **asset.headers,
            "etag": asset.etag,
            "cache-control": "no-cache",
            "x-content-type-options": "nosniff",
            "vary": "Accept-Encoding",
        }
        if asset.etag in [t.strip() for t in req.get("if-none-match", "").split(",")]:
            status, body = 304, b""
        else:
            status, body = 200, asset.body
            if asset.gz is not None and "gzip" in req.get("accept-encoding", "").lower():
                body = asset.gz
                headers["content-encoding"] = "gzip"
            headers["content-length"] = str(len(body))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def _asset(path: Path, extra: dict[str, str] | None = None) -> _Asset:
    return _Asset(
        path, {"content-type": _TYPES.get(path.suffix, "application/octet-stream"), **(extra or {})}
    )


def _docs_static_dir() -> Path:
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("the fastapi-offline package (Swagger UI and ReDoc files) is not installed")
    return Path(spec.origin).parent / "static"


def _webui_assets() -> dict[str, _Asset]:
    index = DIST / "index.html"
    if not index.is_file():
        raise RuntimeError(f"the web UI bundle is missing ({DIST}): run `make webui`")
    assets = {"/": _asset(index, _PAGE_HEADERS), "/index.html": _asset(index, _PAGE_HEADERS)}
    for path in sorted(DIST.iterdir()):
        if path.suffix in _TYPES and path.name != "index.html":
            assets[f"/webui/{path.name}"] = _asset(path)
    return assets


def _add_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc over files served from this server."""
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"
    favicon = f"{DOCS_ASSETS}/favicon.png"

    def local_only(page: HTMLResponse) -> HTMLResponse:
        page.headers["content-security-policy"] = _DOCS_CSP
        return page

    async def swagger_ui() -> HTMLResponse:
        return local_only(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=favicon,
                oauth2_redirect_url=redirect_url,
                # no badge that sends the spec to the public validator
                swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
            )
        )

    async def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc() -> HTMLResponse:
        return local_only(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                redoc_favicon_url=favicon,
                with_google_fonts=False,
            )
        )

    app.add_api_route("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route(redirect_url, swagger_redirect, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)


def _docs_assets() -> dict[str, _Asset]:
    static = _docs_static_dir()
    names = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
    return {f"{DOCS_ASSETS}/{name}": _asset(static / name) for name in names}


def _add_props(app: FastAPI) -> None:
    async def props(model: str | None = None) -> JSONResponse:
        """What the chat UI shows beyond /v1/models: the projector's input kinds (on a router
        server: of ``?model=NAME``, loaded if needed)."""
        state = await app.state.holder.resolve(model)
        mtmd: Any = state.mtmd
        return JSONResponse(
            {
                "model": state.alias,
                "n_ctx_slot": state.scheduler.n_ctx_slot,
                "modalities": list(mtmd.modalities) if mtmd is not None else [],
            }
        )

    app.add_api_route("/webui/props", props, methods=["GET"], include_in_schema=False)


def mount_webui(app: FastAPI, config: ServerConfig) -> None:
    """Add the offline /docs and /redoc, and (``config.webui``) the chat UI at ``/``.

    Call it last in ``create_app``, after the other middleware, and with the app created with
    ``docs_url=None, redoc_url=None``: the static layer it adds must be the outermost.
    """
    _add_docs(app)
    assets = _docs_assets()
    if config.webui:
        _add_props(app)
        assets.update(_webui_assets())
    app.add_middleware(_StaticFiles, assets=assets)
