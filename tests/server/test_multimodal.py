"""Images through the OpenAI API: data URLs, uploaded file ids, remote URLs (refused), upload
limits, and a text-only model given an image — all through the `openai` SDK.

The projector is the tiny random-weight LLaVA-style one from tests/helpers/fixtures_mtmd.py (16 image
tokens per image, n_embd 576 like SmolLM2). Tests that need the server's multimodal wiring
(``ServerConfig.mmproj``, ``/v1/files``) skip until it exists.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

import tests.helpers.fixtures_mtmd as fx
from llamabind.batching import SchedulerConfig
from llamabind.server import ServerConfig

from .conftest import ALIAS, GREEDY, RunningServer

PNG = fx.png_bytes(fx.sample_image())
N_IMG = fx.vision_n_tokens(32, 8)
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
WIRED = any(f.name == "mmproj" for f in dataclasses.fields(ServerConfig))
needs_wiring = pytest.mark.skipif(
    not WIRED, reason="the server has no multimodal wiring yet (ServerConfig.mmproj)"
)


def image_message(url: str, text: str = "What is in this image?") -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}],
        }
    ]


def test_text_only_model_given_an_image_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=ALIAS, messages=image_message(DATA_URL), max_tokens=2)  # type: ignore[arg-type]
    err = ei.value.body
    assert isinstance(err, dict) and err.get("message")
    message = str(err["message"]).lower()
    assert "image" in message and ("multimodal" in message or "mmproj" in message or "text-only" in message)
    assert err.get("code") == "unsupported_media" and err.get("param") == "messages"


@pytest.fixture(scope="module")
def mm_server(
    make_server: Callable[[ServerConfig], RunningServer], tmp_path_factory: pytest.TempPathFactory
) -> RunningServer:
    if not WIRED:
        pytest.skip("the server has no multimodal wiring yet (ServerConfig.mmproj)")
    proj: Path = fx.build_vision_projector(tmp_path_factory.mktemp("mmproj"))
    fields: dict[str, Any] = {
        "model_alias": ALIAS,
        "scheduler": SchedulerConfig(parallel=2, ctx_per_slot=512, n_batch=256, max_queue=8),
        "sampling": GREEDY,
        "mmproj": str(proj),
        "allow_remote_media": False,
        "files_max_bytes": 64 * 1024,
    }
    return make_server(ServerConfig(**fields))


@needs_wiring
def test_data_url_image(mm_server: RunningServer) -> None:
    client = mm_server.client()
    r = client.chat.completions.create(model=ALIAS, messages=image_message(DATA_URL), max_tokens=4)  # type: ignore[arg-type]
    assert r.choices[0].message.content
    assert r.usage is not None and r.usage.prompt_tokens > N_IMG
    # the same image again: its KV comes from the slot's prefix cache (keyed by content hash)
    again = client.chat.completions.create(model=ALIAS, messages=image_message(DATA_URL), max_tokens=4)  # type: ignore[arg-type]
    assert again.choices[0].message.content == r.choices[0].message.content
    details = again.usage.prompt_tokens_details if again.usage else None
    assert details is not None and (details.cached_tokens or 0) >= N_IMG


@needs_wiring
def test_streaming_with_an_image(mm_server: RunningServer) -> None:
    stream = mm_server.client().chat.completions.create(
        model=ALIAS,
        messages=image_message(DATA_URL),  # type: ignore[arg-type]
        max_tokens=4,
        stream=True,
    )
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@needs_wiring
def test_uploaded_file_id(mm_server: RunningServer) -> None:
    client = mm_server.client()
    up = client.files.create(file=("cat.png", PNG, "image/png"), purpose="vision")
    assert up.id.startswith("file-") and up.bytes == len(PNG)
    by_url = client.chat.completions.create(model=ALIAS, messages=image_message(up.id), max_tokens=4)  # type: ignore[arg-type]
    by_data = client.chat.completions.create(model=ALIAS, messages=image_message(DATA_URL), max_tokens=4)  # type: ignore[arg-type]
    assert by_url.choices[0].message.content == by_data.choices[0].message.content
    part = {"type": "image_file", "image_file": {"file_id": up.id}}
    msgs = [{"role": "user", "content": [{"type": "text", "text": "What is in this image?"}, part]}]
    by_part = client.chat.completions.create(model=ALIAS, messages=msgs, max_tokens=4)  # type: ignore[arg-type]
    assert by_part.choices[0].message.content
    client.files.delete(up.id)
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(model=ALIAS, messages=image_message(up.id), max_tokens=2)  # type: ignore[arg-type]
    assert ei.value.status_code in (400, 404)


@needs_wiring
def test_remote_url_is_refused(mm_server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        mm_server.client().chat.completions.create(
            model=ALIAS,
            messages=image_message("http://169.254.169.254/latest/meta-data/cat.png"),  # type: ignore[arg-type]
            max_tokens=2,
        )
    assert "remote media" in str(ei.value)


@needs_wiring
def test_oversize_upload_is_refused(mm_server: RunningServer) -> None:
    with pytest.raises(openai.APIStatusError) as ei:
        mm_server.client().files.create(file=("big.bin", b"\0" * (65 * 1024), "image/png"), purpose="vision")
    assert ei.value.status_code == 413


@needs_wiring
def test_undecodable_image_is_a_400(mm_server: RunningServer) -> None:
    bad = "data:image/png;base64," + base64.b64encode(PNG[:50]).decode()
    with pytest.raises(openai.BadRequestError) as ei:
        mm_server.client().chat.completions.create(model=ALIAS, messages=image_message(bad), max_tokens=2)  # type: ignore[arg-type]
    assert "decode" in str(ei.value)
