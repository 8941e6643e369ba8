"""/v1/rerank: scores from the model's classification head (rank pooling), best first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import llamabind as lb
from llamabind.batching import SchedulerConfig
from llamabind.embeddings import rerank
from llamabind.server import ServerConfig
from tests.helpers.fixtures_gguf import build_minilm_reranker

from .conftest import ALIAS, RunningServer

QUERY = "what do bees make?"
DOCS = [
    "Bees make honey and wax.",
    "The train leaves at noon.",
    "Honeybees live in hives.",
    "Rust is a language.",
]


def test_chat_model_is_not_a_reranker(server: RunningServer) -> None:
    with server.http() as http:
        r = http.post("/v1/rerank", json={"model": ALIAS, "query": QUERY, "documents": DOCS})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "unsupported" and "not a reranker" in err["message"]
        r = http.post("/v1/rerank", json={"model": ALIAS, "query": QUERY, "documents": []})
        assert r.status_code == 400 and r.json()["error"]["param"] == "documents"


def test_rerank_matches_the_library(
    fixture_dir: Path, serve_with: Callable[[lb.Model, ServerConfig], RunningServer]
) -> None:
    # No reranker can be downloaded here: MiniLM with a random classification head stands in.
    path, _head = build_minilm_reranker(fixture_dir)
    model = lb.Model(path)  # closed by garbage collection after the per-test server stops
    expected = rerank(QUERY, DOCS, model, n_threads=1)
    srv = serve_with(model, ServerConfig(scheduler=SchedulerConfig(parallel=1, ctx_per_slot=512)))
    with httpx.Client(base_url=srv.base_url, timeout=120) as http:
        r = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [x["index"] for x in body["results"]] == [e.index for e in expected[:3]]
        for got, want in zip(body["results"], expected, strict=False):
            assert got["relevance_score"] == pytest.approx(want.score, rel=1e-4, abs=1e-5)
            assert got["document"]["text"] == DOCS[got["index"]]
        assert body["usage"]["prompt_tokens"] > len(DOCS)
        r = http.post("/rerank", json={"query": QUERY, "documents": DOCS, "return_documents": False})
        assert r.status_code == 200 and all("document" not in x for x in r.json()["results"])
        assert len(r.json()["results"]) == len(DOCS)
