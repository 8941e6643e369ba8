"""The one exception → HTTP answer mapping, the known-routes label set, and ServerState cleanup
(no generation: these run without decoding)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import llamabind as lb
import llamabind.server.state as state_mod
from llamabind import errors
from llamabind.batching import SchedulerConfig
from llamabind.server import ServerConfig, create_app
from llamabind.server.errors import error_from_exception


def test_every_exception_class_lives_in_errors() -> None:
    import llamabind.batching as batching
    import llamabind.chat as chat
    import llamabind.multimodal as mm
    import llamabind.server.files as files
    from llamabind._native.fatal import FatalNativeError
    from llamabind.chat import ChatRequestError

    for cls in (
        batching.QueueFullError,
        chat.MessageError,
        chat.ToolChoiceError,
        mm.MediaError,
        files.FileStoreError,
        FatalNativeError,
        ChatRequestError,
    ):
        assert cls.__module__ == "llamabind.errors", cls
        assert issubclass(cls, errors.LlamabindError), cls


def test_internal_value_error_is_a_generic_500() -> None:
    err = error_from_exception(ValueError("secret internal detail"), param="prompt")
    assert err.status == 500
    assert err.body() == {
        "error": {
            "message": "internal server error",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }


def test_internal_llamabind_error_hides_its_message() -> None:
    err = error_from_exception(errors.DecodeError("secret decode detail", -3))
    assert (err.status, err.code, err.message) == (500, "internal_error", "internal server error")


def test_mapping_walks_the_mro() -> None:
    class MySchemaError(errors.SchemaError):
        pass

    class Teapot(errors.ContextOverflowError):
        http_status = 418
        error_code = "teapot"

    err = error_from_exception(MySchemaError("no $ref here"))
    assert (err.status, err.code, err.param) == (400, "invalid_schema", "response_format")
    assert err.message == "invalid JSON schema: no $ref here"
    err = error_from_exception(Teapot("too long"), param="prompt")
    assert (err.status, err.code, err.param) == (418, "teapot", "prompt")
    err = error_from_exception(errors.GrammarError("bad rule"))
    assert (err.status, err.code, err.param, err.message) == (
        400,
        "invalid_grammar",
        "grammar",
        "invalid grammar: bad rule",
    )


def test_instance_status_and_param_win() -> None:
    err = error_from_exception(errors.MediaError("too big", status=413), param="input")
    assert (err.status, err.code, err.param) == (413, "invalid_media", "input")
    err = error_from_exception(errors.ChatRequestError("bad", param="tool_choice"), param="messages")
    assert err.param == "tool_choice"
    err = error_from_exception(errors.QueueFullError("busy"), param="messages")
    assert (err.status, err.code, err.param, err.message) == (503, "server_busy", None, "busy")


@pytest.fixture()
def modelless_client() -> Iterator[TestClient]:
    """An app whose model failed to load: the routes that need no model still answer."""

    def fail() -> lb.Model:
        raise errors.ModelLoadError("no model here")

    with TestClient(create_app(fail, ServerConfig())) as client:
        yield client


def _counter(client: TestClient, route: str, status: int) -> float:
    needle = f'llamabind_http_requests_total{{route="{route}",status="{status}"}} '
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(needle):
            return float(line[len(needle) :])
    return 0.0


def test_files_routes_are_known_routes(modelless_client: TestClient) -> None:
    c = modelless_client
    assert c.get("/v1/files").status_code == 200
    assert c.put("/v1/files").status_code == 405
    assert c.get("/v1/files/file-nope").status_code == 404
    assert c.get("/v1/nothing-here").status_code == 404
    assert _counter(c, "/v1/files", 200) == 1
    assert _counter(c, "/v1/files", 405) == 1
    assert _counter(c, "/v1/files/{file_id}", 404) == 1
    assert _counter(c, "other", 404) == 1


def test_lora_failure_closes_projector_and_draft(
    model: lb.Model, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    drafts: list[lb.Model] = []

    class FakeProjector:
        marker = "<__media__>"

        def __init__(self, *_a: Any, **_k: Any) -> None:
            pass

        def close(self) -> None:
            closed.append("mtmd")

    class RecordingModel(lb.Model):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            drafts.append(self)

    monkeypatch.setattr(state_mod, "MtmdContext", FakeProjector)
    monkeypatch.setattr(state_mod, "Model", RecordingModel)
    cfg = ServerConfig(
        mmproj="projector.gguf",
        scheduler=SchedulerConfig(parallel=1, ctx_per_slot=256, spec="draft", n_draft=2),
        draft_model=str(model_path),
        loras=[("not an adapter", 1.0)],
    )
    with pytest.raises(TypeError, match="LoraAdapter"):
        state_mod.ServerState(model, cfg)
    assert closed == ["mtmd"]
    assert len(drafts) == 1
    assert drafts[0].closed
