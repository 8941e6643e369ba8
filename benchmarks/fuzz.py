"""Long fuzz run against the library: hostile GBNF grammars and sampler parameters, mutated GGUF
model headers, hostile JSON schemas.

    python benchmarks/fuzz.py --minutes 2 [--target all|grammar|gguf|schema] [--seed N] [--timeout 30]

Uses the suite's hypothesis strategies (tests/helpers/fuzz_cases.py, fuzz_gguf.py, fuzz_schema.py) at scale; every case runs in one
worker process (tests/helpers/fuzz_worker.py) that is restarted after a native crash, so crashes and
hangs are counted, not fatal. Prints inputs tried, refused, accepted and failures (crash, hang,
unexpected Python exception), each failure with its case; exits 1 if any were found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "helpers"))

from fuzz_cases import cases
from fuzz_client import FuzzClient
from fuzz_gguf import gguf_cases
from fuzz_schema import schema_cases
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

TARGETS = {"grammar": cases, "gguf": gguf_cases, "schema": schema_cases}


class _TimeUp(Exception):
    pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--target", choices=["all", *TARGETS], default="all")
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds before a case counts as a hang")
    args = ap.parse_args()
    os.environ.setdefault("LLAMABIND_THREADS", "1")

    workdir = tempfile.TemporaryDirectory(prefix="llamabind-fuzz-")  # the GGUF cases' files
    client = FuzzClient(timeout=args.timeout, workdir=workdir.name)
    strategy = st.one_of(*(f() for f in TARGETS.values())) if args.target == "all" else TARGETS[args.target]()
    counts: Counter[str] = Counter()
    failures: list[tuple[dict[str, Any], dict[str, str]]] = []
    t_end = time.monotonic() + args.minutes * 60

    @settings(
        max_examples=10**9,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # keep every failure as found; no shrinking in a timed run
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: dict[str, Any]) -> None:
        if time.monotonic() > t_end:
            raise _TimeUp
        reply = client.run(case)
        if "result" in reply:
            counts["refused" if reply["result"].startswith("refused") else "accepted"] += 1
            counts[f"{case['kind']} cases"] += 1
        else:
            counts["failures"] += 1
            failures.append((case, reply))
            print("FAILURE", json.dumps(reply)[:400], json.dumps(case)[:400], flush=True)

    if args.seed is not None:
        run = seed(args.seed)(run)
    t0 = time.monotonic()
    try:
        run()
    except _TimeUp:
        pass
    finally:
        client.close()
        workdir.cleanup()
    tried = counts["accepted"] + counts["refused"] + counts["failures"]
    elapsed = time.monotonic() - t0
    print(
        f"inputs tried: {tried} in {elapsed:.0f} s ({tried / max(elapsed, 1e-9):.1f}/s): "
        f"{counts['grammar cases']} grammars, {counts['params cases']} sampler settings, "
        f"{counts['gguf cases']} GGUF mutations, {counts['schema cases']} JSON schemas; "
        f"accepted {counts['accepted']}, refused {counts['refused']}, failures {counts['failures']} "
        f"(worker restarts {client.restarts})"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
