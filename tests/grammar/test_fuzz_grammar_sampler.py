"""Hostile grammars and sampler parameters against the library, native part in a worker process:
only llamabind errors or ValueError may come back, never a crash or a hang (issue 14)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

import llamabind as lb  # noqa: E402
from llamabind.core.sampler import MAX_DRY_SEQUENCE_BREAKERS  # noqa: E402
from llamabind.errors import GrammarError  # noqa: E402
from tests.helpers.fuzz_cases import cases  # noqa: E402
from tests.helpers.fuzz_client import FuzzClient  # noqa: E402


@pytest.fixture(scope="module")
def worker() -> Iterator[FuzzClient]:
    client = FuzzClient(timeout=30.0)
    yield client
    client.close()


def _check(worker: FuzzClient, case: dict[str, object]) -> str:
    reply = worker.run(case)
    assert "result" in reply, f"{reply} for case {case!r}"
    return reply["result"]


def test_logit_bias_that_empties_the_grammar_is_a_clear_error(worker: FuzzClient) -> None:
    a = 81  # the token "a" of SmolLM2's vocabulary (checked below)
    for seed in (1, 2):  # greedy and sampled
        case = {"kind": "grammar", "text": 'root ::= "a"', "bias": {a: -math.inf}, "seed": seed}
        assert _check(worker, case).startswith("refused: GrammarError: grammar exhausted")
    # banning every token but one the grammar cannot use either
    case = {"kind": "grammar", "text": 'root ::= "a"', "bias": {"all_but": 0}, "seed": 3}
    assert "grammar exhausted" in _check(worker, case)
    # and without the bias the grammar gives its one answer
    assert _check(worker, {"kind": "grammar", "text": 'root ::= "a"', "bias": {}, "seed": 3}) == "ok"


def test_issue_grammars_are_refused_in_the_worker(worker: FuzzClient) -> None:
    tower = "root ::= a0\n" + "".join(f"a{i} ::= a{i + 1} | a{i + 1}\n" for i in range(40)) + 'a40 ::= "x"'
    chain = "root ::= r0\n" + "".join(f"r{i} ::= r{i + 1}\n" for i in range(100_000)) + 'r100000 ::= "x"'
    for text in (tower, chain):
        t0 = time.perf_counter()
        result = _check(worker, {"kind": "grammar", "text": text, "bias": {}, "seed": 1})
        assert result.startswith("refused: GrammarError"), result
        assert time.perf_counter() - t0 < 30


def test_huge_penalty_windows_do_not_allocate_gigabytes(worker: FuzzClient) -> None:
    for name in ("repeat_last_n", "dry_penalty_last_n"):
        params = {name: 2**31 - 1, "repeat_penalty": 1.1, "dry_multiplier": 0.8}
        assert _check(worker, {"kind": "params", "params": params, "seed": 1}) == "ok"
        refused = _check(worker, {"kind": "params", "params": {name: -2, "dry_multiplier": 0.8}, "seed": 1})
        assert refused.startswith("refused: ValueError") and name in refused


def test_many_dry_breakers_are_refused(worker: FuzzClient) -> None:
    many = {"dry_multiplier": 0.8, "dry_sequence_breakers": ["x"] * 3000}
    assert "at most 8" in _check(worker, {"kind": "params", "params": many, "seed": 1})
    long = {"dry_multiplier": 0.8, "dry_sequence_breakers": ["y" * 41]}
    assert "at most 40" in _check(worker, {"kind": "params", "params": long, "seed": 1})
    total = {"dry_multiplier": 0.8, "dry_sequence_breakers": ["z" * 40, "w" * 30]}
    assert "at most 64" in _check(worker, {"kind": "params", "params": total, "seed": 1})


def test_dry_breakers_at_the_bound_build_fast(model: lb.Model) -> None:
    breakers = [chr(ord("a") + i) * 8 for i in range(MAX_DRY_SEQUENCE_BREAKERS)]  # 64 characters
    t0 = time.perf_counter()
    with lb.SamplingParams(dry_multiplier=0.8, dry_sequence_breakers=breakers).build(model):
        pass
    assert time.perf_counter() - t0 < 10.0  # ~0.5 s on a busy 2-core machine; 3 000 took minutes


def test_windows_are_clamped_to_the_training_context(model: lb.Model) -> None:
    with lb.Sampler(model).penalties(2**31 - 1, 1.1).dry(last_n=2**31 - 1).greedy() as s:
        assert s.names == ["penalties", "dry", "greedy"]
    with pytest.raises(ValueError, match="last_n"):
        lb.Sampler(model).penalties(-5, 1.1)


def test_accepting_a_token_the_grammar_forbids_raises(model: lb.Model) -> None:
    a, b = model.tokenize("a", add_special=False)[0], model.tokenize("b", add_special=False)[0]
    assert a == 81
    with lb.Sampler(model).grammar('root ::= "a"').greedy() as s:
        with pytest.raises(GrammarError, match="does not allow"):
            s.accept(b)
        with pytest.raises(GrammarError, match="does not allow"):
            s.accept(model.vocab.eos)  # end of generation before the grammar is complete
        s.accept(a)


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(case=cases())
def test_fuzz_grammars_and_sampler_params(worker: FuzzClient, case: dict[str, object]) -> None:
    _check(worker, case)
