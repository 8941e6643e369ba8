"""``instructor`` over the ``openai`` SDK against a llamabind server; runs in .venv-clients.

Usage: ``python instructor_client.py BASE_URL API_KEY MODEL``. Prints one JSON object, a key per
scenario (a mode of extraction), each either the validated model with the raw completion's facts or
``{"error": ...}``. tests/server/test_venv_clients.py asserts on it.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

import instructor
import openai
from pydantic import BaseModel, Field

PROMPT = "Extract the person: Ada Lovelace was 36 years old when she died."


class Person(BaseModel):
    name: str = Field(max_length=30)
    age: int = Field(ge=0, le=120)


def main(base_url: str, api_key: str, model: str) -> dict[str, Any]:
    sdk = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120.0)
    request: dict[str, Any] = {
        "model": model,
        "response_model": Person,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 48,
        "temperature": 0.0,
        "max_retries": 1,  # one attempt: the first answer must validate
    }
    out: dict[str, Any] = {}
    # (Mode.JSON, a bare json_object, is left out: SmolLM2-135M echoes the schema it is shown)
    for key, mode in (("json_schema", instructor.Mode.JSON_SCHEMA), ("tools", instructor.Mode.TOOLS)):
        client = instructor.from_openai(sdk, mode=mode)
        try:
            person, completion = client.chat.completions.create_with_completion(**request)
            message = completion.choices[0].message
            out[key] = {
                "person": person.model_dump(),
                "type": type(person).__name__,
                "model": completion.model,
                "finish_reason": completion.choices[0].finish_reason,
                "content": message.content,
                "tool_calls": [
                    {"name": c.function.name, "arguments": c.function.arguments}
                    for c in message.tool_calls or []
                ],
            }
        except Exception:
            out[key] = {"error": traceback.format_exc()}
    try:
        # the partial objects of a streamed response_format json_schema answer, as they grow
        client = instructor.from_openai(sdk, mode=instructor.Mode.JSON_SCHEMA)
        out["partial"] = [p.model_dump() for p in client.chat.completions.create_partial(**request)]
    except Exception:
        out["partial"] = {"error": traceback.format_exc()}
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
