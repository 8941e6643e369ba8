"""Fill-in-the-middle: /v1/completions with `suffix` and llama.cpp's /infill."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

import llamabind as lb
from llamabind.batching import SchedulerConfig
from llamabind.generation.generator import Generator
from llamabind.generation.infill import fim_prompt, supports_fim
from llamabind.server import ServerConfig

from .conftest import ALIAS, GREEDY, RunningServer

# SmolLM2 has no FIM tokens; give three of its unused special tokens the FIM roles
FIM = {
    "tokenizer.ggml.fim_pre_token_id": 3,
    "tokenizer.ggml.fim_suf_token_id": 4,
    "tokenizer.ggml.fim_mid_token_id": 6,
}
PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"


def test_model_without_fim_tokens_is_a_clear_400(server: RunningServer) -> None:
    with server.http() as http:
        r = http.post("/v1/completions", json={"model": ALIAS, "prompt": PREFIX, "suffix": SUFFIX})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "unsupported" and "fill-in-the-middle" in err["message"]
        r = http.post("/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX})
        assert r.status_code == 400 and "fill-in-the-middle" in r.json()["error"]["message"]


def test_infill_and_suffix_match_the_library(
    model_path: Path, serve_with: Callable[[lb.Model, ServerConfig], RunningServer]
) -> None:
    # not closed here: the per-test server still runs on it until the fixture's teardown
    fim_model = lb.Model(model_path, kv_overrides=FIM)
    assert supports_fim(fim_model)
    tokens = fim_prompt(fim_model, PREFIX, SUFFIX)
    assert tokens[0] == 3 and tokens.count(4) == 1 and tokens[-1] == 6
    with lb.Context(fim_model, n_ctx=512) as ctx:
        expected = Generator(ctx).complete(tokens, max_tokens=12, sampling=GREEDY).text
    srv = serve_with(fim_model, ServerConfig(scheduler=SchedulerConfig(parallel=1, ctx_per_slot=512)))
    with httpx.Client(base_url=srv.base_url, timeout=120) as http:
        body = {"max_tokens": 12, "temperature": 0}
        a = http.post("/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX, **body})
        b = http.post("/v1/completions", json={"prompt": PREFIX, "suffix": SUFFIX, **body})
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json()["choices"][0]["text"] == b.json()["choices"][0]["text"] == expected
    assert a.json()["usage"]["prompt_tokens"] == len(tokens)
