"""A single-model server answers any ``model`` name (as llama-server does) and names its alias in the
response; ``strict_model_name`` (``--strict-model-name``) restores 404 for unknown names."""

from __future__ import annotations

import anthropic
import openai
import pytest

from .conftest import ALIAS, API_KEY, RunningServer

MSG = [{"role": "user", "content": "Name a color."}]


def test_any_name_is_served(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-3.5-turbo", messages=MSG, max_tokens=8)  # type: ignore[arg-type]
    assert r.choices[0].message.content
    assert r.model == ALIAS  # the served model's alias, not the name asked for
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=MSG,  # type: ignore[arg-type]
        max_tokens=4,
        stream=True,
    )
    chunks = list(stream)
    assert chunks and all(c.model == ALIAS for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    c = client.completions.create(model="text-davinci-003", prompt="The sky is", max_tokens=4)
    assert c.choices[0].text and c.model == ALIAS
    e = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert len(e.data[0].embedding) > 0 and e.model == ALIAS
    # /v1/models still lists only the one served model
    assert [m.id for m in client.models.list().data] == [ALIAS]


def test_any_name_anthropic(server: RunningServer) -> None:
    ac = anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120.0)
    r = ac.messages.create(
        model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
    )
    assert r.model == ALIAS
    assert any(b.type == "text" and b.text for b in r.content)


def test_strict_known_names(strict_server: RunningServer) -> None:
    client = strict_server.client()
    r = client.chat.completions.create(model=ALIAS, messages=MSG, max_tokens=4)  # type: ignore[arg-type]
    assert r.choices[0].message.content and r.model == ALIAS


def test_strict_unknown_name_404(strict_server: RunningServer) -> None:
    client = strict_server.client()
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="gpt-3.5-turbo", messages=MSG, max_tokens=4)  # type: ignore[arg-type]
    body = ei.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found" and body["param"] == "model"
    assert "gpt-3.5-turbo" in body["message"] and ALIAS in body["message"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="davinci", prompt="x", max_tokens=1)
    ac = anthropic.Anthropic(base_url=strict_server.base_url, api_key="unused", max_retries=0, timeout=60.0)
    with pytest.raises(anthropic.NotFoundError):
        ac.messages.create(
            model="claude-sonnet-4-5", max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
        )
