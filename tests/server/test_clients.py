"""The client matrix: real frameworks from PyPI, unmodified, against the real server (no mocks).

`openai` and `anthropic` have their own files (test_openai_api.py, test_anthropic.py); here are
LangChain (`langchain-openai`), `pydantic-ai` and `litellm`, each asserting real output of the default
model (SmolLM2-135M, greedy, few tokens); LlamaIndex and `instructor`, whose pins clash with this venv,
run from their own venv in test_venv_clients.py. Nothing may reach the network: telemetry and remote cost
maps are switched off before the libraries are imported.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")
os.environ["LANGCHAIN_TRACING_V2"] = "false"
os.environ["LANGSMITH_TRACING"] = "false"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

from typing import Any

import pytest
from pydantic import BaseModel

from .conftest import ALIAS, API_KEY, RunningServer

QUESTION = "Name three colors."


class City(BaseModel):
    name: str
    country: str


def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"sunny in {city}"


# ------------------------------------------------------------------------------------------------
# LangChain
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_model(server: RunningServer) -> Any:
    from langchain_openai import ChatOpenAI

    # no model argument: LangChain sends its default name, which a single-model server answers
    return ChatOpenAI(base_url=server.v1, api_key=API_KEY, temperature=0, max_tokens=16, max_retries=0)


def test_langchain_invoke_and_stream(chat_model: Any) -> None:
    msg = chat_model.invoke(QUESTION)
    assert isinstance(msg.content, str) and msg.content.strip()
    assert msg.response_metadata["model_name"] == ALIAS
    assert msg.usage_metadata["output_tokens"] > 0
    chunks = list(chat_model.stream(QUESTION))
    text = "".join(c.content for c in chunks if isinstance(c.content, str))
    assert text.strip()
    assert text == msg.content  # greedy: the stream says the same as the one-shot answer


def _chat_model(server: RunningServer, max_tokens: int) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=ALIAS, base_url=server.v1, api_key=API_KEY, temperature=0, max_tokens=max_tokens, max_retries=0
    )


def test_langchain_tools(server: RunningServer) -> None:
    from langchain_core.tools import tool

    weather = tool(get_weather)
    bound = _chat_model(server, 64).bind_tools([weather], tool_choice="get_weather")
    msg = bound.invoke("What is the weather in Paris?")
    assert msg.tool_calls, msg
    call = msg.tool_calls[0]
    assert call["name"] == "get_weather"
    assert isinstance(call["args"].get("city"), str) and call["args"]["city"]
    assert weather.invoke(call["args"]).startswith("sunny in ")


def test_langchain_structured_output(server: RunningServer) -> None:
    # (LangChain rewrites method="json_schema" to function calling for "gpt-3.5-turbo": name the model)
    structured = _chat_model(server, 64).with_structured_output(City, method="json_schema", strict=True)
    city = structured.invoke("Give the name and the country of the capital of France as JSON.")
    assert isinstance(city, City)
    assert city.name and city.country


def test_langchain_embeddings(server: RunningServer) -> None:
    from langchain_openai import OpenAIEmbeddings

    # tiktoken would download its encodings: let the server count tokens instead
    emb = OpenAIEmbeddings(
        base_url=server.v1,
        api_key=API_KEY,  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
        tiktoken_enabled=False,
        max_retries=0,
    )
    docs = emb.embed_documents(["The cat sat on the mat.", "Stock markets fell today."])
    query = emb.embed_query("Where did the cat sit?")
    with server.client() as client:
        dim = len(client.embeddings.create(model=ALIAS, input="x").data[0].embedding)
    assert dim > 0
    assert len(docs) == 2 and all(len(v) == dim for v in docs) and len(query) == dim
    assert all(isinstance(x, float) for x in query)
    assert docs[0] != docs[1]


# ------------------------------------------------------------------------------------------------
# pydantic-ai
# ------------------------------------------------------------------------------------------------


def _agent_model(server: RunningServer) -> Any:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel(ALIAS, provider=OpenAIProvider(base_url=server.v1, api_key=API_KEY))


def test_pydantic_ai_text(server: RunningServer) -> None:
    from pydantic_ai import Agent

    agent = Agent(_agent_model(server), model_settings={"temperature": 0.0, "max_tokens": 16})
    result = agent.run_sync(QUESTION)
    assert isinstance(result.output, str) and result.output.strip()
    assert result.usage.output_tokens > 0


def test_pydantic_ai_structured_output(server: RunningServer) -> None:
    from pydantic_ai import Agent

    agent = Agent(
        _agent_model(server),
        output_type=City,
        model_settings={"temperature": 0.0, "max_tokens": 64},
    )
    result = agent.run_sync("What is the capital of France? Answer with its name and country.")
    assert isinstance(result.output, City)
    assert result.output.name and result.output.country


# ------------------------------------------------------------------------------------------------
# litellm
# ------------------------------------------------------------------------------------------------


def test_litellm(server: RunningServer) -> None:
    import litellm

    litellm.telemetry = False
    kwargs: dict[str, Any] = {
        "model": f"openai/{ALIAS}",
        "api_base": server.v1,
        "api_key": API_KEY,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 16,
        "temperature": 0,
        "num_retries": 0,
    }
    r = litellm.completion(**kwargs)
    text = r.choices[0].message.content
    assert isinstance(text, str) and text.strip()
    assert r.usage.completion_tokens > 0
    parts = [c.choices[0].delta.content or "" for c in litellm.completion(stream=True, **kwargs) if c.choices]
    assert "".join(parts) == text
