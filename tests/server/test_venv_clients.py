"""The client matrix, part two: LlamaIndex (``llama-index-llms-openai-like``) and ``instructor``.

Both pin what the project venv has newer (``llama-index-llms-openai`` wants ``openai<3``,
``instructor`` wants ``jiter<0.15``; the project has openai 3.x, which needs jiter >= 0.16), so they
live in a small virtualenv of their own, ``.venv-clients`` (tests/server/venv_clients/requirements.txt,
made by ``make test``; no llamabind in it). Each library runs unmodified in a subprocess of that venv
(the scripts in tests/server/venv_clients/) against the real session server (default model, greedy)
and prints what it got as JSON; the tests assert on that, and compare it with what the ``openai`` SDK
of this venv gets for the same request.

Under ``make test`` (``LLAMABIND_CLIENTS_VENV`` set) a missing venv fails; a plain ``pytest`` without
``.venv-clients`` skips these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from .conftest import ALIAS, API_KEY, RunningServer

SCRIPTS = Path(__file__).parent / "venv_clients"
REPO = Path(__file__).resolve().parents[2]
ENV_VAR = "LLAMABIND_CLIENTS_VENV"


@pytest.fixture(scope="module")
def venv_python() -> Path:
    """The clients venv's interpreter (skip or fail before any server starts)."""
    required = os.environ.get(ENV_VAR)
    venv = Path(required) if required else REPO / ".venv-clients"
    python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    if not python.exists():
        if required:
            pytest.fail(f"{ENV_VAR}={required} but {python} does not exist (make clients-venv)")
        pytest.skip(f"no {venv} (make clients-venv creates it; make test always does)")
    return python


def _client_env() -> dict[str, str]:
    """The parent's environment without our source tree on the path, and with every HTTP proxy
    pointed at a closed loopback port: the server is on loopback (NO_PROXY), and any other request
    a library might make (telemetry, tokenizer downloads) fails at once instead of leaving the box."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = "http://127.0.0.1:9"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(HF_HUB_OFFLINE="1", DO_NOT_TRACK="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _run(python: Path, script: str, server: RunningServer) -> dict[str, Any]:
    proc = subprocess.run(
        [str(python), str(SCRIPTS / script), server.v1, API_KEY, ALIAS],
        env=_client_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _ok(results: dict[str, Any], scenario: str) -> Any:
    value = results[scenario]
    assert not (isinstance(value, dict) and "error" in value), value.get("error")
    return value


# ------------------------------------------------------------------------------------------------
# LlamaIndex
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llamaindex(venv_python: Path, server: RunningServer) -> dict[str, Any]:
    return _run(venv_python, "llamaindex_client.py", server)


def test_llamaindex_complete_posts_to_completions(llamaindex: dict[str, Any], client: openai.OpenAI) -> None:
    got = _ok(llamaindex, "complete")
    assert got["text"].strip()
    assert "".join(got["stream"]) == got["text"]  # greedy: stream_complete says the same
    sdk = client.completions.create(model=ALIAS, prompt="The sky is", max_tokens=16, temperature=0)
    assert got["text"] == sdk.choices[0].text


def test_llamaindex_chat(llamaindex: dict[str, Any], client: openai.OpenAI) -> None:
    got = _ok(llamaindex, "chat")
    assert got["role"] == "assistant" and got["content"].strip()
    assert got["model"] == ALIAS
    assert got["finish_reason"] in ("stop", "length") and got["completion_tokens"] > 0
    sdk = client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "Name three colors."}],
        max_tokens=16,
        temperature=0,
    )
    assert got["content"] == sdk.choices[0].message.content


def test_llamaindex_stream_chat(llamaindex: dict[str, Any]) -> None:
    got = _ok(llamaindex, "stream_chat")
    assert len([d for d in got["deltas"] if d]) > 1  # token by token, not one block
    assert "".join(got["deltas"]) == got["content"] == _ok(llamaindex, "chat")["content"]


def test_llamaindex_tool_call(llamaindex: dict[str, Any]) -> None:
    got = _ok(llamaindex, "tool_call")
    call = got["calls"][0]
    assert call["name"] == "get_weather"
    assert set(call["kwargs"]) == {"city"} and isinstance(call["kwargs"]["city"], str)
    assert call["kwargs"]["city"].strip()
    assert got["result"] == f"sunny in {call['kwargs']['city']}"  # the tool ran on the parsed call


@pytest.mark.parametrize("scenario", ["structured_tools", "structured_schema"])
def test_llamaindex_structured_predict(llamaindex: dict[str, Any], scenario: str) -> None:
    # function calling (tool_choice="required") or response_format json_schema: a validated City
    city = _ok(llamaindex, scenario)
    assert set(city) == {"name", "country"}
    assert all(isinstance(v, str) and v.strip() for v in city.values()), city


# ------------------------------------------------------------------------------------------------
# instructor
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def instructor_results(venv_python: Path, server: RunningServer) -> dict[str, Any]:
    return _run(venv_python, "instructor_client.py", server)


def _person(got: dict[str, Any]) -> dict[str, Any]:
    person: dict[str, Any] = got["person"]
    assert got["type"] == "Person" and got["model"] == ALIAS
    assert set(person) == {"name", "age"}
    assert isinstance(person["name"], str) and 0 < len(person["name"]) <= 30
    assert isinstance(person["age"], int) and 0 <= person["age"] <= 120
    return person


def test_instructor_json_schema_mode(instructor_results: dict[str, Any]) -> None:
    got = _ok(instructor_results, "json_schema")
    person = _person(got)
    assert got["finish_reason"] == "stop" and not got["tool_calls"]
    assert json.loads(got["content"]) == person  # the validated model is the message's JSON


def test_instructor_tools_mode(instructor_results: dict[str, Any]) -> None:
    got = _ok(instructor_results, "tools")
    person = _person(got)
    assert got["finish_reason"] == "tool_calls" and not got["content"]
    (call,) = got["tool_calls"]
    assert call["name"] == "Person"
    assert json.loads(call["arguments"]) == person


def test_instructor_partial_stream(instructor_results: dict[str, Any]) -> None:
    partials = _ok(instructor_results, "partial")
    assert len(partials) > 2
    assert any(p["age"] is None for p in partials[:-1])  # the object grew chunk by chunk
    assert partials[-1] == _person(_ok(instructor_results, "json_schema"))
