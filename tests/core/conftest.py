"""Fixtures of the core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import llamabind as lb
from tests.helpers.core import THREADS


@pytest.fixture()
def ctx(model: lb.Model) -> Iterator[lb.Context]:
    """Like the root conftest's ``ctx`` but explicitly single-threaded (fast and steady on the shared
    2-core machine, whatever ``$LLAMABIND_THREADS`` says)."""
    with lb.Context(model, n_ctx=1024, n_batch=512, n_threads=THREADS) as c:
        yield c
