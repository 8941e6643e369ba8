"""ggml RPC: layers split over two loopback workers + the local CPU; a worker killed mid-run."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import llamabind as lb
from llamabind.errors import RpcError
from llamabind.generation.generator import Generator
from llamabind.rpc import check_endpoint, is_loopback
from tests.helpers.core import GREEDY, free_port

PROMPT = "The three primary colors are"


def _start_worker(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llamabind", "rpc-server", "--port", str(port), "-t", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            check_endpoint(f"127.0.0.1:{port}", timeout=0.5)
            return proc
        except RpcError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "worker died") from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("RPC worker did not start")


@pytest.fixture(scope="module")
def workers() -> Iterator[list[str]]:
    ports = [free_port(), free_port()]
    procs = [_start_worker(p) for p in ports]
    yield [f"127.0.0.1:{p}" for p in ports]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def _greedy(model: lb.Model, n: int = 24) -> list[int]:
    # flash attention is not offered by the RPC backend: keep the math identical on both sides
    with lb.Context(model, n_ctx=256, n_batch=64, flash_attn="off") as ctx:
        return Generator(ctx).complete(PROMPT, max_tokens=n, sampling=GREEDY, ignore_eos=True).tokens


def test_split_over_two_workers_and_cpu_matches_local(model_path: Path, workers: list[str]) -> None:
    with lb.Model(model_path) as local:
        expected = _greedy(local)
    # 20 of 30 layers offloaded, split evenly over the two workers; the rest stays on the CPU
    with lb.Model(model_path, rpc_servers=workers, n_gpu_layers=20, tensor_split=[1, 1]) as remote:
        got = _greedy(remote)
    assert got == expected


def test_worker_stops_cleanly_on_sigterm() -> None:
    port = free_port()
    proc = _start_worker(port)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert proc.stderr is not None
    assert b"stopped" in proc.stderr.read()


def test_unreachable_worker_is_a_clear_error(model_path: Path) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(RpcError, match=rf"127\.0\.0\.1:{port} unreachable"):
        lb.Model(model_path, rpc_servers=[f"127.0.0.1:{port}"], n_gpu_layers=99)
    with pytest.raises(RpcError, match="expected HOST:PORT"):
        lb.Model(model_path, rpc_servers=["no-port-here"], n_gpu_layers=99)


def test_rpc_server_refuses_non_loopback_without_flag() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost")
    out = subprocess.run(
        [sys.executable, "-m", "llamabind", "rpc-server", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "refusing to bind RPC worker to non-loopback address '0.0.0.0'" in out.stderr
    assert "Traceback" not in out.stderr


def test_killing_a_worker_mid_generation_errors_and_client_survives(model_path: Path) -> None:
    port = free_port()
    worker = _start_worker(port)
    script = textwrap.dedent(
        f"""
        import os, sys, time
        import llamabind as lb
        from llamabind.generation.generator import Generator
        from llamabind.generation.sampling import SamplingParams
        m = lb.Model({str(model_path)!r}, rpc_servers=["127.0.0.1:{port}"], n_gpu_layers=99, rpc_timeout=30)
        ctx = lb.Context(m, n_ctx=4096, n_batch=64)
        g = Generator(ctx)
        print("READY", flush=True)
        t0 = time.monotonic()
        try:
            for _ in range(100000):
                for chunk in g.stream("Once upon a time", max_tokens=2000, sampling=SamplingParams(temperature=0),
                                      ignore_eos=True):
                    pass
                g.reset()
            print("NO ERROR", flush=True)
        except lb.RpcError as exc:
            print("ERROR", type(exc).__name__, str(exc)[:200], flush=True)
            print("ELAPSED", round(time.monotonic() - t0, 1), flush=True)
            # the process is still alive and can keep working without the dead worker
            local = lb.Model({str(model_path)!r})
            print("ALIVE", local.n_layer, flush=True)
        sys.stdout.flush()
        os._exit(0)
        """
    )
    client = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert client.stdout is not None
        line = client.stdout.readline()
        assert line.strip() == "READY", line + (client.stderr.read() if client.stderr else "")
        time.sleep(1.0)  # mid-generation
        killed_at = time.monotonic()
        worker.kill()
        out, err = client.communicate(timeout=90)
        elapsed = time.monotonic() - killed_at
    finally:
        worker.kill()
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, err
    assert "ERROR RpcError" in out, out + err
    assert "ALIVE 30" in out, out + err
    assert elapsed < 60
