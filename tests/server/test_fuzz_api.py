"""Property-based tests of every HTTP route from the app's own OpenAPI schema (``schemathesis``):
whatever a client sends, the answer is not a 5xx (other than the engine-crash error), it comes
within a timeout, and the server still answers /health and a normal completion afterwards.

Bounded to keep the suite short: ``MAX_EXAMPLES`` generated requests per operation, and the
generation lengths of a request (``max_tokens``, ``max_completion_tokens``, ``n_predict``) clamped
to ``MAX_TOKENS`` (absent ones set to it) so a case costs milliseconds of generation, not seconds.
"""

from __future__ import annotations

from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

from .conftest import ALIAS, API_KEY, RunningServer  # noqa: E402

MAX_EXAMPLES = 10
MAX_TOKENS = 4
TIMEOUT_S = 60.0
AUTH = {"Authorization": f"Bearer {API_KEY}"}
_LENGTHS = ("max_tokens", "max_completion_tokens", "n_predict")
_GENERATING = ("/v1/chat/completions", "/v1/completions", "/infill")


@pytest.fixture(scope="module")
def api_schema(server: RunningServer) -> Any:
    return schemathesis.openapi.from_url(server.base_url + "/openapi.json", headers=AUTH)


def _bounded(path: str, body: Any) -> Any:
    if not isinstance(body, dict) or path not in _GENERATING:
        return body
    body = dict(body)
    for key in _LENGTHS:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and (value < 0 or value > MAX_TOKENS):
            body[key] = MAX_TOKENS
    if all(body.get(k) is None for k in _LENGTHS):
        body["max_tokens"] = MAX_TOKENS
    return body


def _check(case: Any, server: RunningServer) -> None:
    if isinstance(case.body, dict):
        case.body = _bounded(case.path, case.body)
    r = case.call(base_url=server.base_url, headers=AUTH, timeout=TIMEOUT_S)
    if r.status_code >= 500:
        code = None
        try:
            code = r.json().get("error", {}).get("code")
        except ValueError:
            pass
        assert code in ("engine_crashed", "server_busy"), (
            case.method,
            case.path,
            case.body,
            r.status_code,
            r.text[:500],
        )


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors(api_schema: Any, server: RunningServer, mode: str) -> None:
    """Every operation of the schema, with valid (positive) and schema-violating (negative)
    generated requests."""
    gen_mode = schemathesis.GenerationMode(mode)
    labels = []
    for result in api_schema.get_all_operations():
        op = result.ok()
        if op.path in ("/metrics",):
            continue
        labels.append(op.label)

        @given(case=op.as_strategy(generation_mode=gen_mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: Any) -> None:
            _check(case, server)

        try:
            run()
        except Unsatisfiable:  # negative mode: an operation without inputs has nothing to violate
            assert mode == "negative", op.label
    assert any("/v1/chat/completions" in label for label in labels), labels


def test_server_alive_after_fuzzing(server: RunningServer) -> None:
    """Runs after the generated cases (file order): the server still serves."""
    with server.http() as h:
        assert h.get("/health").status_code == 200
        r = h.post(
            "/v1/chat/completions",
            json={"model": ALIAS, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        )
        assert r.status_code == 200, r.text
        slots = h.get("/slots").json()
        assert isinstance(slots, (list, dict))
