"""Slot save / restore / erase over HTTP, the prompt cache's counters in /metrics and usage, and a
restarted ``llamabind serve --cache-disk`` reusing a long system prompt."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai

from llamabind.batching import SchedulerConfig
from llamabind.server import ServerConfig

from .conftest import GREEDY, RunningServer

SYSTEM = (
    "You are the careful assistant of a small public library. Answer in one short sentence, name "
    "the shelf of every book you mention, never invent titles, and say so when you do not know."
)


def _complete(http: httpx.Client, prompt: str, n: int = 3) -> dict[str, object]:
    r = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": n, "temperature": 0})
    assert r.status_code == 200, r.text
    out: dict[str, object] = r.json()
    return out


def _slot0(http: httpx.Client) -> dict[str, object]:
    slots: list[dict[str, object]] = http.get("/slots").json()
    return slots[0]


def test_slot_save_restore_erase_and_bad_names(
    serve_with: Callable[[object, ServerConfig], RunningServer], model: object, tmp_path: Path
) -> None:
    save_dir = tmp_path / "slots"
    srv = serve_with(
        model,
        ServerConfig(
            scheduler=SchedulerConfig(
                parallel=1, ctx_per_slot=512, n_batch=256, slot_save_path=str(save_dir), prompt_cache_min=8
            ),
            sampling=GREEDY,
        ),
    )
    http = srv.http()
    prompt = "Once upon a time, in a small village by the sea, there lived an old fisherman who"
    first = _complete(http, prompt)
    n_cached = _slot0(http)["n_cached"]
    assert isinstance(n_cached, int) and n_cached > 5
    r = http.post("/slots/0?action=save", json={"filename": "story.bin"})
    assert r.status_code == 200, r.text
    assert r.json()["n_saved"] == n_cached and (save_dir / "story.bin").is_file()
    r = http.post("/slots/0?action=erase")
    assert r.status_code == 200 and r.json()["n_erased"] == n_cached
    assert _slot0(http)["n_cached"] == 0
    r = http.post("/slots/0?action=restore", json={"filename": "story.bin"})
    assert r.status_code == 200, r.text
    assert r.json()["n_restored"] == n_cached and _slot0(http)["n_cached"] == n_cached
    again = _complete(http, prompt)
    assert again["choices"] == first["choices"]  # type: ignore[comparison-overlap]
    usage = again["usage"]
    assert (
        isinstance(usage, dict)
        and usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1
    )
    # names only, inside the directory
    for bad in ["../escape.bin", "a/b.bin", ".hidden", "..", "x\\y", ""]:
        r = http.post("/slots/0?action=save", json={"filename": bad})
        assert r.status_code == 400, (bad, r.text)
    assert not (tmp_path / "escape.bin").exists()
    as_json = {"Content-Type": "application/json"}
    assert http.post("/slots/0?action=save", content=b"not json", headers=as_json).status_code == 400
    assert http.post("/slots/0?action=save", content=b"not json").status_code == 415  # not declared JSON
    assert http.post("/slots/0?action=save", json={}).status_code == 400
    assert http.post("/slots/0?action=restore", json={"filename": "missing.bin"}).status_code == 404
    assert http.post("/slots/7?action=erase").status_code == 404
    assert http.post("/slots/0?action=fly").status_code == 400
    # a damaged file is refused, the slot keeps working
    (save_dir / "broken.bin").write_bytes(b"LBSEQ01\n" + b"\xff" * 40)
    r = http.post("/slots/0?action=restore", json={"filename": "broken.bin"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "filename"
    assert _complete(http, prompt)["choices"] == first["choices"]


def test_slot_files_need_a_save_path_and_metrics_show_the_cache(server: RunningServer) -> None:
    http = server.http()
    r = http.post("/slots/0?action=save", json={"filename": "x.bin"})
    assert r.status_code == 501
    assert http.post("/slots/0?action=erase").status_code in (200, 409)
    text = http.get("/metrics").text
    for name in (
        "llamabind_prompt_cache_hits_total",
        "llamabind_prompt_cache_misses_total",
        "llamabind_prompt_cache_restored_tokens_total",
        "llamabind_prompt_cache_evictions_total",
        "llamabind_prompt_cache_bytes",
    ):
        assert name in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_once(cache_dir: Path, question: str) -> int:
    """Start ``llamabind serve --cache-disk``, ask one chat question, stop it; the cached tokens."""
    port = _free_port()
    cmd = [sys.executable, "-m", "llamabind", "serve", "--port", str(port), "--parallel", "1"]
    cmd += ["--ctx-size", "512", "--temp", "0", "--cache-ram", "0", "--cache-disk", str(cache_dir)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
        r = client.chat.completions.create(
            model="m",
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            max_tokens=2,
        )
        assert r.usage is not None and r.usage.prompt_tokens_details is not None
        return r.usage.prompt_tokens_details.cached_tokens or 0
    finally:
        proc.terminate()
        proc.wait(60)


def test_a_restarted_server_reuses_the_system_prompt_from_disk(tmp_path: Path) -> None:
    assert _serve_once(tmp_path, "Where are the atlases?") == 0
    assert list(tmp_path.glob("*.lbseq"))  # the slot's state, written at shutdown
    assert _serve_once(tmp_path, "Do you have any poetry?") > 30  # the system prompt, from disk
