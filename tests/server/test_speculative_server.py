"""Server-side speculative decoding: n-gram and draft-model slots give the plain greedy output."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from llamabind.batching import SchedulerConfig
from llamabind.server import ServerConfig

from .conftest import GREEDY, RunningServer

# an input-echoing task: n-gram lookup finds its drafts in the prompt
TEXT = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog."
PROMPT = f"Repeat exactly: {TEXT}\nRepeated: {TEXT[:20]}"


def _complete(srv: RunningServer) -> str:
    out = srv.client().completions.create(
        model="SmolLM2-135M-Instruct.Q4_1", prompt=PROMPT, max_tokens=24, temperature=0
    )
    return out.choices[0].text


def _metric(srv: RunningServer, name: str) -> float:
    text = srv.http().get("/metrics").text
    for line in text.splitlines():
        if line.startswith(f"llamabind_{name} ") or line.startswith(f"llamabind_{name}_total "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def test_ngram_and_draft_model_servers_match_plain(
    make_server: Callable[[ServerConfig], RunningServer], model_path: object
) -> None:
    plain = make_server(
        ServerConfig(scheduler=SchedulerConfig(parallel=1, ctx_per_slot=512), sampling=GREEDY)
    )
    expected = _complete(plain)
    ngram = make_server(
        ServerConfig(
            scheduler=SchedulerConfig(parallel=2, ctx_per_slot=512, spec="ngram", n_draft=4), sampling=GREEDY
        )
    )
    assert _complete(ngram) == expected
    assert _metric(ngram, "draft_tokens") > 0
    assert _metric(ngram, "draft_tokens_accepted") > 0
    draft = make_server(
        ServerConfig(
            scheduler=SchedulerConfig(parallel=2, ctx_per_slot=512, spec="draft", n_draft=4),
            sampling=GREEDY,
            draft_model=str(model_path),
        )
    )
    assert _complete(draft) == expected
    # SmolLM2 drafting for itself: every drafted token is accepted
    assert _metric(draft, "draft_tokens_accepted") == _metric(draft, "draft_tokens") > 0


def test_serve_spec_flag_errors() -> None:
    base = [sys.executable, "-m", "llamabind", "serve", "--port", "1"]
    for extra, needle in (
        (["--spec", "draft"], "--spec draft needs --draft MODEL"),
        (["--draft", "/nonexistent.gguf"], "draft model not found"),
        (["--spec", "ngram", "--spec-ngram-min", "5", "--spec-ngram-max", "3"], "must not exceed"),
    ):
        out = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=120)
        assert out.returncode in (1, 2), out.stderr
        assert needle in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
