"""``llamabind bench`` end to end (subprocess) and the bench engine's bookkeeping."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

import llamabind as lb
from llamabind.bench import BenchConfig, BenchResult, Repetition, format_markdown, run_bench


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamabind", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bench_json_shape() -> None:
    proc = _cli("-p", "16", "-n", "8", "-r", "1", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert set(doc) == {"model", "library", "results"}
    assert doc["model"]["description"] == "llama 256M Q4_1"
    assert doc["model"]["n_params"] == 134_515_008
    assert doc["library"]["llama_cpp_python"] == "0.3.36"
    assert [r["test"] for r in doc["results"]] == ["pp16", "tg8"]
    for r, kind, n in zip(doc["results"], ("pp", "tg"), (16, 8), strict=True):
        assert r["kind"] == kind and r["n_tokens"] == n
        assert r["repetitions"] == 1 and len(r["samples"]) == 1
        # llama.cpp caps n_batch at n_ctx (the largest test here): the actual values are reported
        assert r["n_threads"] >= 1 and r["n_batch"] == 16 and r["n_ubatch"] == 16
        assert r["tokens_per_s"]["mean"] > 0 and r["tokens_per_s"]["std"] == 0
        assert r["native_tokens_per_s"]["mean"] >= r["tokens_per_s"]["mean"] * 0.9
        assert -0.5 < r["overhead"]["mean"] < 1.0
        sample = r["samples"][0]
        assert sample["wall_s"] > 0 and sample["native_ms"] > 0
        assert set(r["overhead_excl_sampling"]) == {"mean", "std"}
    assert doc["results"][1]["samples"][0]["sample_ms"] >= 0


def test_bench_markdown_table() -> None:
    proc = _cli("-p", "8", "-n", "0", "-r", "2", "-t", "1", "--no-warmup")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "| model | size | params | backend | threads | test | t/s | overhead |"
    assert len(lines) == 3
    assert lines[2].startswith("| llama 256M Q4_1 | ") and "| 1 | pp8 | " in lines[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-r", "0"], "repetitions must be at least 1"),
        (["-p", "0", "-n", "0"], "nothing to run: every prompt and generation size is 0"),
        (["-p", "-5"], "prompt sizes must be >= 0"),
    ],
)
def test_bench_usage_errors(args: list[str], message: str) -> None:
    proc = _cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"llamabind bench: error: {message}"


def test_bench_bad_list() -> None:
    proc = _cli("-p", "12,abc")
    assert proc.returncode == 2
    assert "expected comma-separated integers, got '12,abc'" in proc.stderr


def test_run_bench_in_process(model: lb.Model) -> None:
    seen: list[str] = []
    cfg = BenchConfig(prompt_sizes=[8, 0], gen_sizes=[4], repetitions=2, threads=[1], warmup=False)
    results = run_bench(model, cfg, on_result=lambda r: seen.append(r.test))
    assert seen == [r.test for r in results] == ["pp8", "tg4"]
    for r in results:
        assert len(r.repetitions) == 2
        assert all(rep.wall_s > 0 and rep.native_ms > 0 for rep in r.repetitions)
    table = format_markdown(model, results)
    assert table.count("\n") == 3


def test_result_statistics() -> None:
    r = BenchResult("tg", 100, 2, 2048, 512)
    r.repetitions += [Repetition(1.0, 990.0, 5.0), Repetition(2.0, 1960.0, 20.0)]
    mean, std = r.tokens_per_s()
    assert mean == pytest.approx(75.0) and std == pytest.approx(math.sqrt(2 * 25.0**2))
    assert r.overhead()[0] == pytest.approx((0.01 + 0.02) / 2)
    assert r.overhead_excl_sampling()[0] == pytest.approx((0.005 + 0.01) / 2)
    assert r.test == "tg100"
    assert r.to_dict()["samples"][1] == {"wall_s": 2.0, "native_ms": 1960.0, "sample_ms": 20.0}
