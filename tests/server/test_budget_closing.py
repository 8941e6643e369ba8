"""Budget closing through the OpenAI-compatible server: a ``response_format`` document that
``max_tokens`` would cut comes back complete and valid, with ``finish_reason: "length"`` and
``"closed_on_budget": true`` on the choice; ``close_on_budget: false`` gives the cut."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel

from .conftest import ALIAS, RunningServer

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "age": {"type": "integer"},
    },
    "required": ["name", "tags", "age"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
MESSAGES: list[Any] = [{"role": "user", "content": "Give a JSON person with name, tags, age."}]
#: the prompt decoded afresh: a prefix reused from the slot's cache was decoded in other batches,
#: whose rounding can change a greedy pick (the exact texts below hold for a fresh decode)
FRESH = {"cache_prompt": False}


def _valid(text: str | None) -> bool:
    try:
        jsonschema.validate(json.loads(text or ""), PERSON)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def test_chat_json_schema_closes_within_max_tokens(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=ALIAS,
        messages=MESSAGES,
        response_format=FORMAT,  # type: ignore[arg-type]
        max_tokens=21,
        extra_body=FRESH,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "length"
    assert getattr(choice, "closed_on_budget", None) is True
    assert _valid(choice.message.content), choice.message.content
    assert r.usage is not None and r.usage.completion_tokens <= 21
    assert choice.message.content == '{\n  "name": "Mara",\n  "tags": [\n   ],"age":0}'


def test_close_on_budget_false_gives_the_cut(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=ALIAS,
        messages=MESSAGES,
        response_format=FORMAT,  # type: ignore[arg-type]
        max_tokens=21,
        extra_body={"close_on_budget": False},
    )
    choice = r.choices[0]
    assert choice.finish_reason == "length" and getattr(choice, "closed_on_budget", None) is None
    assert not _valid(choice.message.content)
    assert r.usage is not None and r.usage.completion_tokens == 21


def test_streamed_chat_closes_and_says_so(server: RunningServer) -> None:
    body = {"model": ALIAS, "messages": MESSAGES, "response_format": FORMAT, "max_tokens": 21, "stream": True}
    chunks = []
    with server.http() as h, h.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert _valid(text), text
    last = chunks[-1]["choices"][0]
    assert last["finish_reason"] == "length" and last["closed_on_budget"] is True
    assert all("closed_on_budget" not in c["choices"][0] for c in chunks[:-1])


def test_sdk_parse_sees_length_but_the_content_is_whole(client: openai.OpenAI) -> None:
    """The SDK's ``parse`` refuses any ``finish_reason: "length"`` (LengthFinishReasonError); the
    completion it carries holds the closed document, which the model class validates."""

    class Person(BaseModel):
        name: str
        tags: list[str]
        age: int

    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    with pytest.raises(openai.LengthFinishReasonError) as info:
        parse(model=ALIAS, messages=MESSAGES, response_format=Person, max_tokens=21, extra_body=FRESH)
    content = info.value.completion.choices[0].message.content
    person = Person.model_validate_json(content or "")
    assert person.name == "Mara" and person.tags == [] and person.age == 0


def test_text_completion_with_grammar_closes(http: httpx.Client) -> None:
    grammar = 'root ::= "[" item (", " item)* "]"\nitem ::= "\\"" [a-z]+ "\\""'
    r = http.post(
        "/v1/completions",
        json={"model": ALIAS, "prompt": "A list of fruits as JSON:", "grammar": grammar, "max_tokens": 9},
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length" and choice["closed_on_budget"] is True
    items = json.loads(choice["text"])
    assert isinstance(items, list) and all(isinstance(x, str) and x for x in items)
    off = http.post(
        "/v1/completions",
        json={
            "model": ALIAS,
            "prompt": "A list of fruits as JSON:",
            "grammar": grammar,
            "max_tokens": 9,
            "close_on_budget": False,
        },
    ).json()["choices"][0]
    assert off["finish_reason"] == "length" and "closed_on_budget" not in off
    with pytest.raises(ValueError):
        json.loads(off["text"])


def test_close_on_budget_must_be_a_boolean(http: httpx.Client) -> None:
    r = http.post(
        "/v1/chat/completions",
        json={"model": ALIAS, "messages": MESSAGES, "max_tokens": 2, "close_on_budget": "maybe"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] is not None
