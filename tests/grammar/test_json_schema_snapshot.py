"""The grammar text of every schema of the benchmark corpus, pinned by digest.

The converter's output for benchmarks/data/schema_corpus.json is compared, schema by schema and
for five option sets, with tests/data/schema_corpus_gbnf.json: a change in any grammar (or in
what strict mode refuses) fails here and must be deliberate. After an intended change:

    PYTHONPATH=src python tests/grammar/test_json_schema_snapshot.py --update
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from llamabind.errors import SchemaError
from llamabind.grammar.json_schema import convert_unchecked

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "benchmarks" / "data" / "schema_corpus.json"
SNAPSHOT = ROOT / "tests" / "data" / "schema_corpus_gbnf.json"

# (strict, strict_properties, whitespace)
OPTIONS: list[tuple[bool, bool, Any]] = [
    (False, True, "bounded"),
    (False, True, "compact"),
    (False, False, "bounded"),
    (False, False, "compact"),
    (True, True, "bounded"),
]


def _digest(schema: Any, strict: bool, strict_properties: bool, whitespace: Any) -> str:
    try:
        text, relaxed = convert_unchecked(
            schema, strict=strict, strict_properties=strict_properties, whitespace=whitespace
        )
        data = json.dumps([text, list(relaxed)])
    except SchemaError as exc:
        data = "refused: " + str(exc)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def digests() -> dict[str, list[str]]:
    corpus = json.loads(CORPUS.read_text(encoding="utf-8"))
    return {e["id"]: [_digest(e["schema"], *o) for o in OPTIONS] for e in corpus}


def test_corpus_grammars_are_unchanged() -> None:
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    got = digests()
    assert got.keys() == expected.keys()
    changed = [
        f"{k} {o}" for k in got for o, a, b in zip(OPTIONS, got[k], expected[k], strict=True) if a != b
    ]
    assert not changed, f"{len(changed)} grammars changed, e.g. {changed[:5]}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(digests().items())]
        SNAPSHOT.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    else:
        sys.exit(__doc__)
