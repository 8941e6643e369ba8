"""CLI: ``llamabind embed``, ``llamabind quantize`` and ``llamabind turbo-quant`` (run as subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.fixtures_gguf import build_minilm_gguf, minilm_reference


def cli(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "llamabind", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def minilm(fixture_dir: Path) -> Path:
    return build_minilm_gguf(fixture_dir)


# ------------------------------------------------------------------ embed


def test_embed_json_vectors_match_the_reference(minilm: Path) -> None:
    ref = minilm_reference()
    r = cli("embed", "-m", str(minilm), "-t", "1", "--json", *ref["texts"][:3])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dim"] == 384 and out["pooling"] == "mean" and out["n"] == 3 and out["normalized"]
    for got, want in zip(out["embeddings"], ref["embeddings"], strict=False):
        assert float(np.dot(got, want)) >= 0.99


def test_embed_plain_vectors_cosine_and_stdin(minilm: Path) -> None:
    r = cli("embed", "-m", str(minilm), "-t", "1", "a cat", "a dog")
    assert r.returncode == 0, r.stderr
    rows = [[float(x) for x in line.split()] for line in r.stdout.splitlines()]
    assert len(rows) == 2 and len(rows[0]) == 384
    assert abs(float(np.linalg.norm(rows[0])) - 1.0) < 1e-4
    r = cli("embed", "-m", str(minilm), "-t", "1", "--no-normalize", "a cat")
    assert abs(float(np.linalg.norm([float(x) for x in r.stdout.split()])) - 1.0) > 1e-3
    r = cli(
        "embed", "-m", str(minilm), "-t", "1", "--cosine", "--json", stdin="a cat\n\na dog\nstocks fell\n"
    )
    assert r.returncode == 0, r.stderr
    m = np.array(json.loads(r.stdout)["cosine"])
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 1.0, atol=1e-5)
    assert m[0, 1] > m[0, 2]
    r = cli("embed", "-m", str(minilm), "-t", "1", "--cosine", "a cat", "a dog")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3 and "[1]" in r.stdout


def test_embed_rerank_and_pooling_none(minilm: Path) -> None:
    r = cli("embed", "-m", str(minilm), "-t", "1", "--rerank", "pets", "a cat", "a dog", "stocks", "--json")
    assert r.returncode == 0, r.stderr
    assert "does not declare rank pooling" in r.stderr
    scores = [x["score"] for x in json.loads(r.stdout)["results"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    r = cli("embed", "-m", str(minilm), "-t", "1", "--pooling", "none", "hello world")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 4  # [CLS] hello world [SEP]


def test_embed_errors(minilm: Path, tmp_path: Path) -> None:
    r = cli("embed", "-m", str(minilm))
    assert r.returncode == 2 and "no text" in r.stderr
    r = cli("embed", "-m", str(minilm), "--pooling", "max", "x")
    assert r.returncode == 2
    r = cli("embed", "-m", str(minilm), "--pooling", "none", "--cosine", "x")
    assert r.returncode == 2 and "--cosine" in r.stderr
    r = cli("embed", "-m", str(minilm), "-t", "1", "word " * 700)
    assert (
        r.returncode == 1 and "ContextOverflowError" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    )
    r = cli("embed", "-m", str(tmp_path / "missing.gguf"), "x")
    assert r.returncode == 1 and "not found" in r.stderr


# ------------------------------------------------------------------ quantize


def test_quantize_list_types() -> None:
    r = cli("quantize", "--list-types", "--json")
    assert r.returncode == 0, r.stderr
    rows = {t["name"]: t for t in json.loads(r.stdout)}
    assert {"Q4_K_M", "Q8_0", "IQ4_XS", "IQ2_XXS", "COPY"} <= set(rows)
    assert rows["Q8_0"]["bpw"] == 8.5 and rows["IQ2_XXS"]["needs_imatrix"]
    r = cli("quantize", "--list-types")
    assert r.returncode == 0 and "Q4_K_M" in r.stdout and "bpw" in r.stdout


def test_quantize_dry_run_and_write(f16: Path, tmp_path: Path) -> None:
    r = cli("quantize", str(f16), "Q4_0", "--tensor-type", "ffn_down=q8_0", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    dry = json.loads(r.stdout)
    assert dry["dry_run"] and dry["files"] == [] and dry["file_bytes"] > 0
    out = tmp_path / "q.gguf"
    r = cli(
        "quantize", str(f16), str(out), "q4_0", "--tensor-type", "ffn_down=q8_0", "--nthreads", "2", "--json"
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["files"] == [str(out)] and out.stat().st_size == res["file_bytes"]
    assert abs(dry["file_bytes"] - res["file_bytes"]) / res["file_bytes"] < 0.01
    types = {t["name"]: t["type"] for t in res["tensors"]}
    assert types["blk.0.ffn_down.weight"] == "q8_0" and types["blk.0.ffn_up.weight"] == "q4_0"
    out.unlink()
    r = cli("quantize", str(f16), str(out), "Q8_0", "--prune-layers", "2-29", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "Q8_0: wrote" in r.stdout and out.is_file()


def test_quantize_errors(f16: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.gguf"
    cases = [
        (("quantize", str(f16), "Q9_9"), 2, "unknown quantization type"),
        (("quantize", str(f16)), 2, "expected INPUT"),
        (("quantize", str(f16), str(out), "Q8_0", "--prune-layers", "a-b"), 2, "--prune-layers"),
        (("quantize", str(f16), str(out), "Q8_0", "--tensor-type", "nope"), 2, "PATTERN=TYPE"),
        (("quantize", str(f16), str(out), "Q8_0", "--override-kv", "k=bad"), 2, "KEY=TYPE:VALUE"),
        (("quantize", str(tmp_path / "missing.gguf"), "Q8_0"), 1, "input model not found"),
        (("quantize", str(f16), str(out), "IQ2_XXS"), 1, "importance matrix"),
        (("quantize", str(f16), str(out), "Q8_0", "--prune-layers", "40"), 1, "out of range"),
        (("quantize", str(f16), str(tmp_path / "no" / "x.gguf"), "Q8_0"), 1, "does not exist"),
    ]
    for args, code, message in cases:
        r = cli(*args)
        assert r.returncode == code, (args, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


# ------------------------------------------------------------------ turbo-quant


def test_turbo_quant(tmp_path: Path) -> None:
    r = cli("turbo-quant", "--kv-type", "q4_0", "-n", "6", "-t", "1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    sizes = {s["type"]: s for s in out["kv_sizes"]}
    assert sizes["f16"]["bytes_at_n_ctx"] == 32768 * 23040
    assert sizes["q4_0"]["bytes_per_token"] == 6480
    assert [(x["type"], x["rotation"]) for x in out["runs"]] == [("q4_0", True), ("q4_0", False)]
    for x in out["runs"]:
        assert x["diverges_at"] is None or 0 <= x["diverges_at"] < 6
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 30)
    r = cli(
        "turbo-quant", "--kv-type", "q8_0", "-n", "4", "-t", "1", "--ppl-file", str(text), "--ppl-chunk", "64"
    )
    assert r.returncode == 0, r.stderr
    assert "KV cache of" in r.stdout and "q8_0 rot=on" in r.stdout and "perplexity on" in r.stdout
    r = cli("turbo-quant", "--kv-type", "q4_k")
    assert r.returncode == 2 and "--kv-type" in r.stderr
    r = cli("turbo-quant", "--ppl-file", str(tmp_path / "none.txt"))
    assert r.returncode == 2
