"""LlamaIndex's ``OpenAILike`` against a llamabind server; runs in .venv-clients, not the project venv.

Usage: ``python llamaindex_client.py BASE_URL API_KEY MODEL``. Prints one JSON object, a key per
scenario, each either what the library returned or ``{"error": ...}`` (so one failing scenario
leaves the others' results readable). tests/server/test_venv_clients.py asserts on it.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

from llama_index.core.llms import ChatMessage
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai_like import OpenAILike
from pydantic import BaseModel

QUESTION = "Name three colors."


class City(BaseModel):
    name: str
    country: str


def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"sunny in {city}"


def main(base_url: str, api_key: str, model: str) -> dict[str, Any]:
    common: dict[str, Any] = {
        "model": model,
        "api_base": base_url,
        "api_key": api_key,
        "temperature": 0.0,
        "max_retries": 0,
        "timeout": 120.0,
        "context_window": 1024,
    }
    # is_chat_model=False: complete() posts to /v1/completions
    text_llm = OpenAILike(is_chat_model=False, max_tokens=16, **common)
    chat_llm = OpenAILike(is_chat_model=True, max_tokens=16, **common)
    # tools and structured prediction: function calling (tool_choice) or response_format json_schema
    tools_llm = OpenAILike(is_chat_model=True, is_function_calling_model=True, max_tokens=64, **common)
    schema_llm = OpenAILike(is_chat_model=True, should_use_structured_outputs=True, max_tokens=64, **common)
    messages = [ChatMessage(role="user", content=QUESTION)]
    city_prompt = PromptTemplate("Give the name and the country of the capital of {country}.")

    def complete() -> dict[str, Any]:
        r = text_llm.complete("The sky is")
        streamed = [c.delta for c in text_llm.stream_complete("The sky is")]
        return {"text": r.text, "stream": streamed}

    def chat() -> dict[str, Any]:
        r = chat_llm.chat(messages)
        raw = r.raw
        return {
            "role": r.message.role.value,
            "content": r.message.content,
            "model": raw.model,
            "finish_reason": raw.choices[0].finish_reason,
            "completion_tokens": raw.usage.completion_tokens,
        }

    def stream_chat() -> dict[str, Any]:
        chunks = list(chat_llm.stream_chat(messages))
        return {"deltas": [c.delta for c in chunks], "content": chunks[-1].message.content}

    def tool_call() -> dict[str, Any]:
        tool = FunctionTool.from_defaults(fn=get_weather)
        r = tools_llm.chat_with_tools([tool], user_msg="What is the weather in Paris?", tool_required=True)
        calls = tools_llm.get_tool_calls_from_response(r, error_on_no_tool_call=True)
        return {
            "calls": [{"name": c.tool_name, "kwargs": c.tool_kwargs} for c in calls],
            "result": tool(**calls[0].tool_kwargs).content,
        }

    def structured_tools() -> dict[str, Any]:
        return tools_llm.structured_predict(City, city_prompt, country="France").model_dump()

    def structured_schema() -> dict[str, Any]:
        return schema_llm.structured_predict(City, city_prompt, country="France").model_dump()

    scenarios: dict[str, Callable[[], Any]] = {
        "complete": complete,
        "chat": chat,
        "stream_chat": stream_chat,
        "tool_call": tool_call,
        "structured_tools": structured_tools,
        "structured_schema": structured_schema,
    }
    out: dict[str, Any] = {}
    for name, run in scenarios.items():
        try:
            out[name] = run()
        except Exception:
            out[name] = {"error": traceback.format_exc()}
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
