"""Fuzz worker: reads one JSON case per line on stdin, runs it (fuzz_cases.run_case) and writes one
JSON line per case: {"result": "ok" | "refused: ..."} or {"unexpected": "<traceback>"}.

A native crash kills this process; its parent then knows the last case it sent is the culprit.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("LLAMABIND_THREADS", "1")


def main() -> None:
    from fuzz_cases import run_case

    import llamabind as lb

    model = lb.Model(os.environ.get("LLAMABIND_FUZZ_MODEL") or lb.default_model_path())
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        try:
            reply: dict[str, str] = {"result": run_case(model, case)}
        except Exception:
            reply = {"unexpected": traceback.format_exc(limit=6)}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
