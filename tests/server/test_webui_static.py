"""The chat UI's files and the offline /docs and /redoc, without a browser: what is served where,
with which headers, that nothing points off the server, and that the committed bundle is as new as
its sources in webui/."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llamabind.cli.commands.serve import build_config
from llamabind.cli.main import build_parser
from llamabind.server import ServerConfig, create_app
from llamabind.server.webui import DIST

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "webui"
KEY = "sk-webui"


def _never_loads() -> object:
    raise RuntimeError("no model in these tests")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # No lifespan: the model never loads; static files and auth need none.
    yield TestClient(create_app(_never_loads, ServerConfig(api_keys=[KEY])))  # type: ignore[arg-type]


def source_hash(root: Path) -> str:
    """The hash webui/build.mjs writes to SOURCES.sha256 (same files, same recipe)."""
    files = [root / "package.json", root / "package-lock.json", root / "build.mjs"]
    files += [p for p in (root / "src").rglob("*") if p.is_file()]
    h = hashlib.sha256()
    for name in sorted(p.relative_to(root).as_posix() for p in files):
        h.update(f"{name}\0{hashlib.sha256((root / name).read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


@pytest.mark.skipif(not SOURCES.is_dir(), reason="the webui/ sources are not in this checkout")
def test_bundle_is_built_from_the_current_sources() -> None:
    built = (DIST / "SOURCES.sha256").read_text().strip()
    assert built == source_hash(SOURCES), "webui_dist is older than webui/: run `make webui` and commit it"


def test_bundle_is_self_contained() -> None:
    names = sorted(p.name for p in DIST.iterdir())
    assert names == ["SOURCES.sha256", "app.css", "app.js", "favicon.svg", "index.html"]
    index = (DIST / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', index)
    assert set(refs) == {"/webui/favicon.svg", "/webui/app.css", "/webui/app.js", "/docs"}
    # The scripts and styles name no other host to load from (URLs in comments and license
    # headers aside, the bundle has no fetch/import of anything absolute).
    js = (DIST / "app.js").read_text()
    assert not re.search(r"""(?:fetch|import)\(\s*["'`]https?:""", js)
    assert "@import" not in (DIST / "app.css").read_text()
    assert "url(" not in (DIST / "app.css").read_text()


def test_page_and_assets_are_open_and_safe(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/webui/app.js">' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "default-src 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    for path, kind in [
        ("/webui/app.js", "text/javascript"),
        ("/webui/app.css", "text/css"),
        ("/webui/favicon.svg", "image/svg+xml"),
    ]:
        r = client.get(path)  # no API key: the browser loads these before it has one
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), path
        assert r.content == (DIST / path.rsplit("/", 1)[1]).read_bytes()
        assert r.headers["x-content-type-options"] == "nosniff"
    # the API itself still needs the key
    assert client.get("/v1/models").status_code == 401
    assert client.get("/webui/props").status_code == 401
    assert client.get("/webui/nonexistent.js").status_code == 401
    assert client.post("/").status_code == 401  # only GET/HEAD are the page


def test_gzip_etag_and_head(client: TestClient) -> None:
    body = (DIST / "app.js").read_bytes()
    r = client.get("/webui/app.js", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and r.content == body  # httpx decodes
    assert int(r.headers["content-length"]) < len(body) // 2
    etag = r.headers["etag"]
    r = client.get("/webui/app.js", headers={"If-None-Match": etag, "Accept-Encoding": "identity"})
    assert r.status_code == 304 and r.content == b""
    r = client.head("/webui/app.js", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) == len(body)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_only_local_files(client: TestClient, page: str) -> None:
    assert client.get(page).status_code == 401  # as every API route
    r = client.get(page, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200
    urls = re.findall(r'(?:src|href|spec-url)="([^"]*)"', r.text) + re.findall(r"url: '([^']*)'", r.text)
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert not re.search(r"https?://", r.text), "the docs page names another host"
    for url in urls:
        got = client.get(url, headers={"Authorization": f"Bearer {KEY}"})
        assert got.status_code == 200, url
    assert client.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()["info"]["title"]


def test_no_webui() -> None:
    c = TestClient(create_app(_never_loads, ServerConfig(webui=False)))  # type: ignore[arg-type]
    assert c.get("/").status_code == 404
    assert c.get("/webui/app.js").status_code == 404
    assert c.get("/webui/props").status_code == 404
    assert c.get("/docs").status_code == 200  # the docs stay
    assert c.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert c.get("/health").status_code == 503  # the API is where it was (loading, here)


def test_no_webui_flag() -> None:
    parser = build_parser()
    assert build_config(parser.parse_args(["serve"])).webui is True
    assert build_config(parser.parse_args(["serve", "--no-webui"])).webui is False
