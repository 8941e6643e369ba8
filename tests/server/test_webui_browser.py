"""The chat UI end to end in headless Chromium (Debian's, driven by Playwright) against the test
server: streaming, stop, regenerate, edit, persistence, safe rendering of hostile model output,
the phone-sized layout, and the offline docs. Every page must raise no error, open no dialog, and
request nothing from any host but the server."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import tests.helpers.fixtures_mtmd as fx
from llamabind.batching import SchedulerConfig
from llamabind.server import ServerConfig

from .conftest import ALIAS, GREEDY, RunningServer

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("chromium is not installed (make install installs it)")
    pytest.skip("chromium is not installed (make install installs it)", allow_module_level=True)

pytestmark = pytest.mark.timeout(120)


def wait_until(page: Any, expression: str, timeout: float = 30.0) -> None:
    """Poll a JS expression (wait_for_function would eval a string, which the page's CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@dataclass
class UI:
    page: Any
    server: RunningServer
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def open(self, path: str = "/") -> None:
        self.page.goto(self.server.base_url + path)
        if path == "/":
            self.page.wait_for_selector("body[data-ready=true], #modal:not([hidden])")
            if self.page.locator("#modal").is_visible():  # the first 401: the UI asks for the key once
                assert "API key" in self.page.locator("#modal-text").inner_text()
                self.page.fill("#modal-input", self.server.api_key or "")
                self.page.click("#modal-ok")
            self.page.wait_for_selector("body[data-ready=true]")

    def settings(self, **values: object) -> None:
        if self.page.locator("#settings").is_hidden():
            self.page.click("#settings-toggle")
        for name, value in values.items():
            self.page.fill(f"#{name}", str(value))
            self.page.dispatch_event(f"#{name}", "change")
        self.page.click("#settings-toggle")

    def send(self, text: str) -> None:
        n = self.replies().count()
        self.page.fill("#input", text)
        self.page.press("#input", "Enter")
        self.page.wait_for_selector(f".msg.assistant >> nth={n}", state="attached", timeout=10_000)

    def wait_idle(self, timeout: float = 60_000) -> None:
        self.page.wait_for_selector("#send:not([hidden])", timeout=timeout)

    def replies(self) -> Any:
        return self.page.locator(".msg.assistant")


@pytest.fixture()
def open_ui(browser: Any, server: RunningServer) -> Iterator[Callable[..., UI]]:
    contexts: list[Any] = []
    uis: list[UI] = []

    def make(on: RunningServer = server, **context_args: Any) -> UI:
        ctx = browser.new_context(**context_args)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        ui = UI(page, on)
        page.on("request", lambda r: ui.requests.append(r.url))
        page.on("pageerror", lambda e: ui.errors.append(str(e)))
        page.on("console", lambda m: "Content Security Policy" in m.text and ui.errors.append(m.text))

        def on_dialog(d: Any) -> None:
            ui.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", on_dialog)
        uis.append(ui)
        return ui

    yield make
    for ctx in contexts:
        ctx.close()
    for ui in uis:
        here = urlsplit(ui.server.base_url).netloc
        assert ui.errors == []
        assert ui.dialogs == []
        assert ui.requests and {
            urlsplit(u).netloc for u in ui.requests if not u.startswith(("data:", "blob:"))
        } == {here}


RECORD_LENGTHS = """() => {
  window.__lengths = [];
  new MutationObserver(() => {
    const el = document.querySelector('.msg.assistant.streaming .content');
    if (el) window.__lengths.push(el.textContent.length);
  }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
}"""


PROMPT = "Write a Python function that returns the sum of a list."


def test_chat_streams_persists_and_reloads(open_ui: Callable[..., UI], tmp_path: Path) -> None:
    ui = open_ui(viewport={"width": 1100, "height": 760})
    ui.open()
    page = ui.page
    assert page.locator("#model option").all_inner_texts() == ["smollm2-test"]
    assert page.locator("#attach").is_hidden()  # no projector on the test server
    ui.settings(max_tokens=90, temperature=0)
    page.evaluate(RECORD_LENGTHS)
    ui.send(PROMPT)
    ui.wait_idle()
    lengths = page.evaluate("window.__lengths")
    reply = ui.replies().last
    final = reply.locator(".content").inner_text()
    partial = {n for n in lengths if 0 < n < len(final)}
    assert len(partial) >= 2, lengths  # the reply grew on screen while it streamed
    stats = reply.locator(".stats").inner_text()
    assert "tokens/s" in stats and "context" in stats and "/1024" in stats, stats
    shot = tmp_path / "webui.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("LLAMABIND_WEBUI_SCREENSHOT"):  # how docs/webui.png is made
        shutil.copy(shot, os.environ["LLAMABIND_WEBUI_SCREENSHOT"])

    title = page.locator("#title").inner_text()
    assert title == PROMPT
    page.reload()
    page.wait_for_selector("body[data-ready=true]")  # the key was kept: no second question
    assert page.locator("#conv-list .conv-title").first.inner_text() == title
    assert ui.replies().last.locator(".content").inner_text() == final
    page.click("#new-chat")
    assert page.locator(".msg").count() == 0
    page.locator("#conv-list .conv-title", has_text=title).click()
    assert ui.replies().last.locator(".content").inner_text() == final
    assert page.locator(".msg.user .content").inner_text() == PROMPT


def test_stop_regenerate_and_edit(open_ui: Callable[..., UI]) -> None:
    ui = open_ui()
    ui.open()
    page = ui.page
    ui.settings(max_tokens=1000)
    ui.send("Write a very long story about a dragon who learns to cook.")
    wait_until(page, "document.querySelector('.msg.assistant .content').textContent.length > 30")
    page.click("#stop")
    ui.wait_idle(5_000)
    reply = ui.replies().last
    assert "stopped" in reply.locator(".stats").inner_text()
    stopped_text = reply.locator(".content").inner_text()
    assert len(stopped_text) > 20  # inner_text trims what textContent counted
    # The server noticed the disconnect and freed the slot.
    deadline = time.monotonic() + 10
    with ui.server.http() as http:
        while any(s["is_processing"] for s in http.get("/slots").json()):
            assert time.monotonic() < deadline, "the stopped request still generates"
            time.sleep(0.1)
    time.sleep(0.3)
    assert ui.replies().last.locator(".content").inner_text() == stopped_text

    ui.settings(max_tokens=16)
    page.click(".msg.assistant .regenerate")
    ui.wait_idle()
    assert ui.replies().count() == 1
    stats = ui.replies().last.locator(".stats").inner_text()
    assert "stopped" not in stats and "tokens" in stats

    page.click(".msg.user .edit")
    page.fill(".edit-area", "Say hello.")
    page.click(".send-edit")
    page.wait_for_selector("#stop:not([hidden])", state="attached")
    ui.wait_idle()
    assert page.locator(".msg.user .content").all_inner_texts() == ["Say hello."]
    assert ui.replies().count() == 1 and ui.replies().last.locator(".content").inner_text()


PAYLOAD = [
    "Hello <script>window.__xss='script'</script> and ",
    "<img src=x onerror=\"window.__xss='img'\"> then ",
    "[click me](javascript:window.__xss='link') or <a href=\"javascript:window.__xss='a'\">raw</a> ",
    '<iframe src="https://evil.example/frame"></iframe> ![pixel](https://evil.example/p.png)\n\n',
    "```python\nprint('hi')  # <b onmouseover=\"window.__xss='code'\">x</b>\n```\n",
]


def _sse(chunks: list[dict[str, Any]]) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def test_hostile_model_output_is_shown_as_text(open_ui: Callable[..., UI]) -> None:
    ui = open_ui()
    ui.open()
    page = ui.page
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": "smollm2-test"}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    chunks.append(
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"reasoning_content": "<img src=y onerror=\"window.__xss='r'\">"}}
            ],
        }
    )
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": part}}]} for part in PAYLOAD]
    call = {"index": 0, "id": "call_1", "type": "function"}
    chunks.append(
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                **call,
                                "function": {"name": "<svg onload=alert(1)>", "arguments": '{"q": "<script>'},
                            }
                        ]
                    },
                }
            ],
        }
    )
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append(
        {**base, "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}}
    )
    seen: list[dict[str, Any]] = []

    def fulfill(route: Any) -> None:
        seen.append(json.loads(route.request.post_data))
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=_sse(chunks))

    page.route("**/v1/chat/completions", fulfill)
    ui.send("<img src=z onerror=\"window.__xss='user'\"> please")
    ui.wait_idle()
    body = seen[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"][-1]["content"] == "<img src=z onerror=\"window.__xss='user'\"> please"

    reply = ui.replies().last
    content = reply.locator(".content")
    text = content.inner_text()
    assert "<script>window.__xss='script'</script>" in text
    assert "<img src=x onerror=\"window.__xss='img'\">" in text
    for tag in ("script", "img", "iframe", "svg", "b"):
        assert content.locator(tag).count() == 0, tag
    assert content.locator("a[href^='javascript' i]").count() == 0  # the links lost their target
    content.get_by_text("click me").click()
    assert all(
        a.get_attribute("href") in (None, "https://evil.example/p.png") for a in content.locator("a").all()
    )
    assert content.locator(".code-block .copy-code").count() == 1
    assert content.locator("code.language-python .hljs-built_in").inner_text() == "print"
    page.click(".msg.assistant .reasoning summary")
    assert reply.locator(".reasoning-text").inner_text() == "<img src=y onerror=\"window.__xss='r'\">"
    page.click(".msg.assistant .tool-call summary")
    assert reply.locator(".tool-call code").inner_text() == "<svg onload=alert(1)>"
    assert reply.locator(".tool-call pre").inner_text() == '{"q": "<script>'
    assert page.locator(".msg.user .content").inner_text().startswith("<img src=z")
    assert "9 tokens" in reply.locator(".stats").inner_text()
    page.reload()  # rendered again from the store
    page.wait_for_selector("body[data-ready=true]")
    assert "<script>window.__xss='script'</script>" in ui.replies().last.locator(".content").inner_text()
    assert page.evaluate("window.__xss") is None
    assert not any("evil.example" in u for u in ui.requests)


def test_phone_layout_and_dark_mode(open_ui: Callable[..., UI]) -> None:
    ui = open_ui(viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True, has_touch=True)
    ui.open()
    page = ui.page
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
    assert not page.locator("#sidebar").is_visible() or page.locator("#sidebar").bounding_box()["x"] < -100
    page.click("#menu")
    wait_until(page, "document.getElementById('sidebar').getBoundingClientRect().x >= 0")
    page.click("#backdrop", position={"x": 370, "y": 400})
    box = page.locator("#composer").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.click("#menu")
    page.click("#theme")  # auto → dark
    page.click("#theme")  # dark → light
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != dark == "rgb(23, 25, 29)"


@pytest.mark.parametrize(("path", "ready"), [("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")])
def test_docs_in_the_browser(browser: Any, server: RunningServer, path: str, ready: str) -> None:
    ctx = browser.new_context(extra_http_headers={"Authorization": f"Bearer {server.api_key}"})
    try:
        page = ctx.new_page()
        hosts: set[str] = set()
        blocked: list[str] = []
        errors: list[str] = []

        def on_request(r: Any) -> None:
            if not r.url.startswith(("data:", "blob:")):
                hosts.add(urlsplit(r.url).netloc)

        page.on("requestfinished", on_request)
        # ReDoc's footer logo points at its CDN: the page's CSP stops it before it leaves the browser.
        page.on("requestfailed", lambda r: blocked.append(f"{r.url} {r.failure}"))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.base_url + path)
        page.wait_for_selector(ready, timeout=30_000)
        assert "llamabind" in page.locator(ready).first.inner_text()
        assert hosts == {urlsplit(server.base_url).netloc}
        assert all(b.endswith((" csp", "ERR_BLOCKED_BY_CSP")) for b in blocked), blocked
        assert errors == []
        assert page.locator("img[src^=http]").count() == 0  # ReDoc's CDN logo: blocked, removed
    finally:
        ctx.close()


def test_rename_export_delete(open_ui: Callable[..., UI]) -> None:
    ui = open_ui()
    ui.open()
    page = ui.page
    base = {"id": "chatcmpl-y", "object": "chat.completion.chunk", "created": 0, "model": "smollm2-test"}
    canned = _sse(
        [
            {
                **base,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Canned **reply**."}}],
            },
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
    )
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=canned),
    )
    ui.settings(system="Be brief.", temperature=0.3, top_p=0.5, max_tokens=77)
    ui.send("First question")
    ui.wait_idle()
    assert ui.replies().last.locator(".content strong").inner_text() == "reply"
    page.click("#conv-list li.active .rename")
    page.fill("#modal-input", "Renamed chat")
    page.click("#modal-ok")
    assert page.locator("#title").inner_text() == "Renamed chat"
    assert page.locator("#conv-list li.active .conv-title").inner_text() == "Renamed chat"
    with page.expect_download() as download:
        page.click("#conv-list li.active .export")
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["title"] == "Renamed chat"
    assert exported["settings"] == {"system": "Be brief.", "temperature": 0.3, "top_p": 0.5, "max_tokens": 77}
    assert [(m["role"], m["content"]) for m in exported["messages"]] == [
        ("user", "First question"),
        ("assistant", "Canned **reply**."),
    ]
    page.click("#conv-list li.active .delete")
    page.click("#modal-cancel")  # asks first
    assert page.locator("#conv-list li").count() == 1
    page.click("#conv-list li.active .delete")
    page.click("#modal-ok")
    assert page.locator("#conv-list li").count() == 0 and page.locator(".msg").count() == 0
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#conv-list li").count() == 0


def test_image_attachment_with_a_projector(
    open_ui: Callable[..., UI],
    make_server: Callable[[ServerConfig], RunningServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    proj = fx.build_vision_projector(tmp_path_factory.mktemp("mmproj"))
    mm = make_server(
        ServerConfig(
            model_alias=ALIAS,
            scheduler=SchedulerConfig(parallel=1, ctx_per_slot=512, n_batch=256, max_queue=4),
            sampling=GREEDY,
            mmproj=str(proj),
        )
    )
    ui = open_ui(on=mm)
    ui.open()  # no API key on this server: no question
    page = ui.page
    assert page.locator("#attach").is_visible()
    bodies: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: r.url.endswith("/v1/chat/completions") and bodies.append(json.loads(r.post_data or "{}")),
    )
    image = tmp_path_factory.mktemp("img") / "sample.png"
    image.write_bytes(fx.png_bytes(fx.sample_image()))
    page.set_input_files("#file", str(image))
    page.wait_for_selector("#attachments .thumb img")
    ui.settings(max_tokens=4)
    ui.send("What is in this image?")
    ui.wait_idle()
    content = bodies[0]["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "What is in this image?"}
    assert content[1]["type"] == "image_url" and content[1]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )
    assert page.locator(".msg.user img.attachment").get_attribute("src") == content[1]["image_url"]["url"]
    assert page.locator("#attachments .thumb").count() == 0
    reply = ui.replies().last
    assert reply.locator(".error").is_hidden() and "tokens" in reply.locator(".stats").inner_text()
