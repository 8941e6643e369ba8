"""Fuzz worker: reads one JSON case per line on stdin, runs it (fuzz_cases.run_case) and writes one
JSON line per case: {"result": "ok" | "refused: ..."} or {"unexpected": "<traceback>"}. Cases of
kind "gguf" (fuzz_gguf.py) write and load a mutated model file under $LLAMABIND_FUZZ_WORKDIR.

A native crash kills this process; its parent then knows the last case it sent is the culprit.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("LLAMABIND_THREADS", "1")


def main() -> None:
    from fuzz_cases import run_case
    from fuzz_gguf import run_gguf_case
    from fuzz_schema import run_schema_case

    import llamabind as lb

    model: lb.Model | None = None  # loaded for the first grammar or sampler case
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        try:
            if case["kind"] == "gguf":
                # the mutated files go to the parent's work directory (one shared model copy)
                result = run_gguf_case(case, Path(os.environ["LLAMABIND_FUZZ_WORKDIR"]))
            else:
                if model is None:
                    model = lb.Model(os.environ.get("LLAMABIND_FUZZ_MODEL") or lb.default_model_path())
                result = run_schema_case(model, case) if case["kind"] == "schema" else run_case(model, case)
            reply: dict[str, str] = {"result": result}
        except Exception:
            reply = {"unexpected": traceback.format_exc(limit=6)}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
