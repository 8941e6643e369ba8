"""GGUF metadata mutations and hostile JSON schemas against the library, native part in a worker
process (issue 14): a mutated model file is refused with a llamabind error or loads and decodes a
token; a schema is refused with SchemaError/GrammarError or its grammar compiles in llama.cpp."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.helpers.fuzz_client import FuzzClient  # noqa: E402
from tests.helpers.fuzz_gguf import F32, I64, gguf_cases  # noqa: E402
from tests.helpers.fuzz_schema import schema_cases  # noqa: E402


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzClient]:
    client = FuzzClient(timeout=30.0, workdir=tmp_path_factory.mktemp("gguf-fuzz"))
    yield client
    client.close()


def _check(worker: FuzzClient, case: dict[str, object]) -> str:
    reply = worker.run(case)
    assert "result" in reply, f"{reply} for case {case!r}"
    return reply["result"]


def _gguf(*mutations: dict[str, object], **overrides: object) -> dict[str, object]:
    return {"kind": "gguf", "mutations": list(mutations), "overrides": overrides}


def test_unmutated_copy_loads_and_decodes(worker: FuzzClient) -> None:
    assert _check(worker, _gguf()) == "ok"


# what the fuzzer found: each of these aborted llama.cpp (or raised a Python error) before the fix
FOUND = {
    # a NUL byte cuts a token short in llama.cpp ("a\0b" is "a"): a duplicate → GGML_ASSERT abort
    "nul-in-token": (
        _gguf({"op": "array_item", "key": "tokenizer.ggml.tokens", "at": 0.0, "value": "nul", "count": 1}),
        "ModelLoadError: ",
        "holds the token 'a' twice (ids 0 and",
    ),
    # a negative or NaN rms epsilon: GGML_ASSERT(eps >= 0) in the first decode
    "negative-epsilon": (
        _gguf({"op": "set", "key": "llama.attention.layer_norm_rms_epsilon", "type": F32, "value": -1.0}),
        "ModelLoadError: ",
        "llama.attention.layer_norm_rms_epsilon=-1.0 must be a number >= 0",
    ),
    "nan-epsilon": (
        _gguf(
            {"op": "set", "key": "llama.attention.layer_norm_rms_epsilon", "type": F32, "value": float("nan")}
        ),
        "ModelLoadError: ",
        "layer_norm_rms_epsilon=nan must be",
    ),
    # an integer vocabulary with equal items: the duplicate check raised AttributeError
    "int-tokens": (
        _gguf(
            {"op": "array_type", "key": "tokenizer.ggml.tokens", "sub": I64},
            {"op": "array_item", "key": "tokenizer.ggml.tokens", "at": 0.5, "value": "nul", "count": 2},
        ),
        "ModelLoadError: ",
        "invalid gguf type for tokenizer.ggml.tokens",
    ),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_fuzz_findings_are_refused(worker: FuzzClient, name: str) -> None:
    case, kind, fragment = FOUND[name]
    result = _check(worker, case)
    assert result.startswith(f"refused: {kind}") and fragment in result, result


def test_empty_tokens_are_not_duplicates(worker: FuzzClient) -> None:
    # llama.cpp names an empty token "[EMPTY_<id>]": two of them load (and decode) fine
    empty = {"op": "array_item", "key": "tokenizer.ggml.tokens", "at": 0.5, "value": "empty", "count": 2}
    assert _check(worker, _gguf(empty)) == "ok"


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(case=gguf_cases())
def test_fuzz_gguf_metadata(worker: FuzzClient, case: dict[str, object]) -> None:
    _check(worker, case)


def test_issue_schemas_are_refused_or_compile(worker: FuzzClient) -> None:
    deep: object = {"type": "string"}
    for _ in range(200):
        deep = {"type": "array", "items": deep}
    for schema in (
        deep,
        {"$ref": "#"},
        {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        {"type": "string", "pattern": "(a)\\1"},
    ):
        result = _check(worker, {"kind": "schema", "schema": schema, "seed": 1})
        assert result == "ok" or result.startswith(("refused: SchemaError", "refused: GrammarError")), result


def test_redos_pattern_with_enum_is_bounded(worker: FuzzClient) -> None:
    schema = {"type": "string", "pattern": "^(a+)+$", "enum": ["a" * 40 + "!"]}
    worker.timeout = 5.0  # a hang here restarts the worker; 2^40 steps never finish
    try:
        result = _check(worker, {"kind": "schema", "schema": schema, "seed": 1})
    finally:
        worker.timeout = 30.0
    assert result.startswith("refused: SchemaError"), result


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(case=schema_cases())
def test_fuzz_json_schemas(worker: FuzzClient, case: dict[str, object]) -> None:
    result = _check(worker, case)
    assert result == "ok" or result.startswith(("refused: SchemaError", "refused: GrammarError")), result
