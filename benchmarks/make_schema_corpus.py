"""Write benchmarks/data/schema_corpus.json: our own corpus of realistic JSON schemas.

Written for llamabind in the styles of the sets JSONSchemaBench draws from (function-calling
argument schemas, GitHub-API-like objects, SchemaStore-like config files, Kubernetes-like
manifests, Snowplow-like event schemas) — no third-party data. Hand-written base schemas, each
expanded deterministically (seeded) into variants the way real schemas differ: which properties
are required, open or closed objects, draft-4 vs 2020-12 spellings, descriptions.

    python benchmarks/make_schema_corpus.py
"""

from __future__ import annotations

import copy
import json
import pathlib
import random
from typing import Any

S = {"type": "string"}
I = {"type": "integer"}  # noqa: E741
B = {"type": "boolean"}
N = {"type": "number"}


def obj(props: dict[str, Any], required: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    out.update(kw)
    return out


def arr(items: Any, **kw: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **kw}


FUNCTION_CALLING = [
    obj(
        {"location": {**S, "description": "City and country"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        ["location"],
    ),
    obj({"query": S, "max_results": {**I, "minimum": 1, "maximum": 50}, "safe_search": B}, ["query"]),
    obj(
        {
            "to": {**S, "format": "email"},
            "subject": {**S, "maxLength": 120},
            "body": S,
            "cc": arr({**S, "format": "email"}, maxItems=5),
            "priority": {"enum": ["low", "normal", "high"]},
        },
        ["to", "subject", "body"],
    ),
    obj(
        {
            "amount": {**N, "minimum": 0},
            "from_currency": {**S, "pattern": "^[A-Z]{3}$"},
            "to_currency": {**S, "pattern": "^[A-Z]{3}$"},
        },
        ["amount", "from_currency", "to_currency"],
    ),
    obj(
        {
            "title": S,
            "start": {**S, "format": "date-time"},
            "end": {**S, "format": "date-time"},
            "attendees": arr(obj({"name": S, "email": {**S, "format": "email"}}, ["email"]), maxItems=10),
            "reminder_minutes": {**I, "minimum": 0, "maximum": 1440},
        },
        ["title", "start"],
    ),
    obj(
        {"ticker": {**S, "pattern": "^[A-Z.]{1,6}$"}, "period": {"enum": ["1d", "5d", "1mo", "1y"]}},
        ["ticker"],
    ),
    obj(
        {
            "recipe_name": S,
            "servings": {**I, "minimum": 1},
            "dietary": arr({"enum": ["vegan", "vegetarian", "gluten-free", "nut-free"]}, uniqueItems=True),
        },
        ["recipe_name"],
    ),
    obj(
        {
            "origin": S,
            "destination": S,
            "date": {**S, "format": "date"},
            "passengers": {**I, "minimum": 1, "maximum": 9},
            "cabin": {"enum": ["economy", "premium", "business", "first"]},
        },
        ["origin", "destination", "date"],
    ),
    obj(
        {
            "text": S,
            "target_language": {**S, "minLength": 2, "maxLength": 5},
            "formality": {"enum": ["default", "more", "less"]},
        },
        ["text", "target_language"],
    ),
    obj(
        {
            "expression": {**S, "description": "A math expression"},
            "precision": {**I, "minimum": 0, "maximum": 15},
        },
        ["expression"],
    ),
    obj(
        {
            "path": S,
            "content": S,
            "mode": {"enum": ["overwrite", "append"]},
            "encoding": {"type": "string", "default": "utf-8"},
        },
        ["path", "content"],
    ),
    obj(
        {
            "sql": S,
            "params": arr({"type": ["string", "number", "boolean", "null"]}),
            "timeout_s": {**N, "exclusiveMinimum": 0, "maximum": 300},
        },
        ["sql"],
    ),
    obj(
        {
            "user_id": {"oneOf": [{**I, "minimum": 1}, {**S, "format": "uuid"}]},
            "fields": arr({"enum": ["name", "email", "plan", "created"]}, uniqueItems=True, minItems=1),
        },
        ["user_id"],
    ),
    obj(
        {
            "product_id": S,
            "quantity": {**I, "minimum": 1, "maximum": 99},
            "gift_wrap": B,
            "note": {**S, "maxLength": 200},
        },
        ["product_id", "quantity"],
    ),
    obj(
        {
            "latitude": {**N, "minimum": -90, "maximum": 90},
            "longitude": {**N, "minimum": -180, "maximum": 180},
            "radius_km": {**N, "minimum": 0.1, "maximum": 50},
        },
        ["latitude", "longitude"],
    ),
]

GITHUB_LIKE = [
    obj(
        {
            "id": I,
            "number": I,
            "title": S,
            "state": {"enum": ["open", "closed"]},
            "locked": B,
            "user": {"$ref": "#/$defs/user"},
            "labels": arr(
                obj(
                    {"id": I, "name": S, "color": {**S, "pattern": "^[0-9a-fA-F]{6}$"}, "default": B},
                    ["id", "name"],
                )
            ),
            "created_at": {**S, "format": "date-time"},
            "closed_at": {"type": ["string", "null"], "format": "date-time"},
            "body": {"type": ["string", "null"]},
        },
        ["id", "number", "title", "state", "user"],
        **{
            "$defs": {
                "user": obj(
                    {"login": S, "id": I, "type": {"enum": ["User", "Bot", "Organization"]}, "site_admin": B},
                    ["login", "id"],
                )
            }
        },
    ),
    obj(
        {
            "name": S,
            "full_name": {**S, "pattern": "^[^/]+/[^/]+$"},
            "private": B,
            "description": {"type": ["string", "null"]},
            "fork": B,
            "stargazers_count": {**I, "minimum": 0},
            "topics": arr({**S, "pattern": "^[a-z0-9][a-z0-9-]{0,49}$"}, maxItems=20),
            "license": {"anyOf": [{"type": "null"}, obj({"key": S, "name": S, "spdx_id": S}, ["key"])]},
            "visibility": {"enum": ["public", "private", "internal"]},
        },
        ["name", "full_name", "private"],
    ),
    obj(
        {
            "sha": {**S, "pattern": "^[0-9a-f]{40}$"},
            "commit": obj(
                {
                    "message": S,
                    "author": obj(
                        {"name": S, "email": S, "date": {**S, "format": "date-time"}}, ["name", "date"]
                    ),
                },
                ["message"],
            ),
            "parents": arr(obj({"sha": {**S, "pattern": "^[0-9a-f]{40}$"}}, ["sha"]), maxItems=2),
        },
        ["sha", "commit"],
    ),
    obj(
        {
            "action": {"enum": ["opened", "closed", "reopened", "synchronize", "edited"]},
            "number": I,
            "pull_request": obj(
                {
                    "title": S,
                    "draft": B,
                    "merged": B,
                    "head": obj({"ref": S, "sha": S}, ["ref"]),
                    "base": obj({"ref": S}, ["ref"]),
                },
                ["title", "head", "base"],
            ),
            "sender": obj({"login": S, "id": I}, ["login"]),
        },
        ["action", "number", "pull_request"],
    ),
    obj(
        {
            "tag_name": S,
            "name": {"type": ["string", "null"]},
            "draft": B,
            "prerelease": B,
            "assets": arr(
                obj(
                    {
                        "name": S,
                        "size": {**I, "minimum": 0},
                        "download_count": {**I, "minimum": 0},
                        "content_type": S,
                    },
                    ["name", "size"],
                ),
                maxItems=10,
            ),
        },
        ["tag_name", "draft", "prerelease"],
    ),
]

SCHEMASTORE_LIKE = [
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "package manifest",
        "type": "object",
        "properties": {
            "name": {
                "type": "string",
                "maxLength": 214,
                "minLength": 1,
                "pattern": "^(?:@[a-z0-9-~][a-z0-9-._~]*/)?[a-z0-9-~][a-z0-9-._~]*$",
            },
            "version": {"type": "string"},
            "description": {"type": "string"},
            "keywords": {"type": "array", "items": {"type": "string"}},
            "license": {"type": "string"},
            "private": {"type": "boolean"},
            "scripts": {"type": "object", "additionalProperties": {"type": "string"}},
            "dependencies": {"$ref": "#/definitions/dependency"},
            "devDependencies": {"$ref": "#/definitions/dependency"},
            "engines": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "definitions": {"dependency": {"type": "object", "additionalProperties": {"type": "string"}}},
    },
    {
        "type": "object",
        "properties": {
            "compilerOptions": {
                "type": "object",
                "properties": {
                    "target": {"enum": ["es5", "es2015", "es2020", "es2022", "esnext"]},
                    "module": {"enum": ["commonjs", "es2015", "esnext", "node16", "nodenext"]},
                    "strict": {"type": "boolean"},
                    "outDir": {"type": "string"},
                    "paths": {
                        "type": "object",
                        "patternProperties": {".*": {"type": "array", "items": {"type": "string"}}},
                    },
                    "lib": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                },
            },
            "include": {"type": "array", "items": {"type": "string"}},
            "exclude": {"type": "array", "items": {"type": "string"}},
            "extends": {"type": "string"},
        },
    },
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "root": {"type": "boolean"},
            "env": {"type": "object", "additionalProperties": {"type": "boolean"}},
            "extends": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "rules": {
                "type": "object",
                "additionalProperties": {
                    "oneOf": [
                        {"enum": [0, 1, 2, "off", "warn", "error"]},
                        {
                            "type": "array",
                            "items": [{"enum": [0, 1, 2, "off", "warn", "error"]}],
                            "minItems": 1,
                        },
                    ]
                },
            },
        },
    },
    {
        "type": "object",
        "required": ["version"],
        "properties": {
            "version": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
            "services": {
                "type": "object",
                "patternProperties": {
                    "^[a-zA-Z0-9._-]+$": {
                        "type": "object",
                        "properties": {
                            "image": {"type": "string"},
                            "ports": {
                                "type": "array",
                                "items": {"type": ["string", "integer"]},
                                "uniqueItems": True,
                            },
                            "environment": {
                                "oneOf": [
                                    {
                                        "type": "object",
                                        "additionalProperties": {"type": ["string", "number", "null"]},
                                    },
                                    {"type": "array", "items": {"type": "string"}},
                                ]
                            },
                            "restart": {"enum": ["no", "always", "on-failure", "unless-stopped"]},
                            "depends_on": {"type": "array", "items": {"type": "string"}},
                        },
                        "additionalProperties": False,
                    }
                },
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "on": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    {"type": "object"},
                ]
            },
            "jobs": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {
                    "type": "object",
                    "required": ["runs-on"],
                    "properties": {
                        "runs-on": {"type": "string"},
                        "timeout-minutes": {"type": "number", "minimum": 1},
                        "steps": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "uses": {"type": "string"},
                                    "run": {"type": "string"},
                                    "with": {
                                        "type": "object",
                                        "additionalProperties": {"type": ["string", "number", "boolean"]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
        "required": ["on", "jobs"],
    },
]

KUBERNETES_LIKE = [
    obj(
        {
            "apiVersion": {"const": "v1"},
            "kind": {"const": "ConfigMap"},
            "metadata": {"$ref": "#/definitions/meta"},
            "data": {"type": "object", "additionalProperties": S},
        },
        ["apiVersion", "kind", "metadata"],
        definitions={
            "meta": obj(
                {
                    "name": {**S, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                    "namespace": S,
                    "labels": {"type": "object", "additionalProperties": S},
                },
                ["name"],
            )
        },
    ),
    obj(
        {
            "apiVersion": {"const": "apps/v1"},
            "kind": {"const": "Deployment"},
            "metadata": obj({"name": S, "labels": {"type": "object", "additionalProperties": S}}, ["name"]),
            "spec": obj(
                {
                    "replicas": {**I, "minimum": 0, "maximum": 100},
                    "selector": obj({"matchLabels": {"type": "object", "additionalProperties": S}}),
                    "template": obj(
                        {
                            "spec": obj(
                                {
                                    "containers": arr(
                                        obj(
                                            {
                                                "name": S,
                                                "image": S,
                                                "ports": arr(
                                                    obj(
                                                        {
                                                            "containerPort": {
                                                                **I,
                                                                "minimum": 1,
                                                                "maximum": 65535,
                                                            },
                                                            "protocol": {"enum": ["TCP", "UDP"]},
                                                        },
                                                        ["containerPort"],
                                                    )
                                                ),
                                                "resources": obj(
                                                    {
                                                        "limits": obj({"cpu": S, "memory": S}),
                                                        "requests": obj({"cpu": S, "memory": S}),
                                                    }
                                                ),
                                            },
                                            ["name", "image"],
                                        ),
                                        minItems=1,
                                        maxItems=4,
                                    )
                                },
                                ["containers"],
                            )
                        }
                    ),
                },
                ["selector", "template"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
    obj(
        {
            "apiVersion": {"const": "v1"},
            "kind": {"const": "Service"},
            "metadata": obj({"name": S}, ["name"]),
            "spec": obj(
                {
                    "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                    "ports": arr(
                        obj(
                            {
                                "port": {**I, "minimum": 1, "maximum": 65535},
                                "targetPort": {"oneOf": [I, S]},
                                "name": S,
                            },
                            ["port"],
                        ),
                        minItems=1,
                    ),
                    "selector": {"type": "object", "additionalProperties": S},
                }
            ),
        },
        ["apiVersion", "kind", "spec"],
    ),
    obj(
        {
            "apiVersion": S,
            "kind": {"const": "CronJob"},
            "spec": obj(
                {
                    "schedule": {**S, "pattern": "^(\\S+ ){4}\\S+$"},
                    "concurrencyPolicy": {"enum": ["Allow", "Forbid", "Replace"]},
                    "suspend": B,
                    "successfulJobsHistoryLimit": {**I, "minimum": 0},
                },
                ["schedule"],
            ),
        },
        ["kind", "spec"],
    ),
    obj(
        {
            "apiVersion": S,
            "kind": {"const": "HorizontalPodAutoscaler"},
            "spec": obj(
                {
                    "minReplicas": {**I, "minimum": 1},
                    "maxReplicas": {**I, "minimum": 1},
                    "metrics": arr(
                        obj(
                            {
                                "type": {"enum": ["Resource", "Pods", "External"]},
                                "resource": obj(
                                    {
                                        "name": {"enum": ["cpu", "memory"]},
                                        "target": obj(
                                            {
                                                "type": {"enum": ["Utilization", "AverageValue"]},
                                                "averageUtilization": {**I, "minimum": 1, "maximum": 100},
                                            },
                                            ["type"],
                                        ),
                                    },
                                    ["name", "target"],
                                ),
                            },
                            ["type"],
                        )
                    ),
                },
                ["maxReplicas"],
            ),
        },
        ["kind", "spec"],
    ),
]

SNOWPLOW_LIKE = [
    {
        "$schema": "http://iglucentral.com/schemas/com.snowplowanalytics.self-desc/schema/jsonschema/1-0-0#",
        "self": {"vendor": "com.example", "name": "link_click", "format": "jsonschema", "version": "1-0-0"},
        "type": "object",
        "properties": {
            "targetUrl": {"type": "string", "format": "uri", "maxLength": 4096},
            "elementId": {"type": ["string", "null"], "maxLength": 255},
            "elementClasses": {"type": ["array", "null"], "items": {"type": "string", "maxLength": 255}},
            "elementTarget": {"type": ["string", "null"], "maxLength": 255},
        },
        "required": ["targetUrl"],
        "additionalProperties": False,
    },
    {
        "self": {"vendor": "com.example", "name": "add_to_cart", "format": "jsonschema", "version": "1-0-2"},
        "type": "object",
        "properties": {
            "sku": {"type": "string", "maxLength": 64},
            "name": {"type": ["string", "null"], "maxLength": 255},
            "category": {"type": ["string", "null"], "maxLength": 255},
            "unitPrice": {"type": ["number", "null"], "minimum": 0, "maximum": 9999999},
            "quantity": {"type": "integer", "minimum": 1, "maximum": 9999},
            "currency": {"type": ["string", "null"], "minLength": 3, "maxLength": 3},
        },
        "required": ["sku", "quantity"],
        "additionalProperties": False,
    },
    {
        "self": {"vendor": "com.example", "name": "screen_view", "format": "jsonschema", "version": "1-0-0"},
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 255},
            "id": {"type": "string", "format": "uuid", "maxLength": 36},
            "type": {"type": ["string", "null"], "maxLength": 64},
            "previousName": {"type": ["string", "null"], "maxLength": 255},
            "transitionType": {"type": ["string", "null"], "maxLength": 255},
        },
        "required": ["name", "id"],
        "additionalProperties": False,
    },
    {
        "self": {
            "vendor": "com.example",
            "name": "consent_granted",
            "format": "jsonschema",
            "version": "1-0-0",
        },
        "type": "object",
        "properties": {
            "basisForProcessing": {
                "enum": [
                    "consent",
                    "contract",
                    "legal_obligation",
                    "vital_interests",
                    "public_task",
                    "legitimate_interests",
                ]
            },
            "consentUrl": {"type": "string", "format": "uri"},
            "consentVersion": {"type": "string", "maxLength": 16},
            "consentScopes": {
                "type": "array",
                "items": {"type": "string", "maxLength": 64},
                "minItems": 1,
                "maxItems": 10,
            },
            "expiry": {"type": ["string", "null"], "format": "date-time"},
            "gdprApplies": {"type": ["boolean", "null"]},
        },
        "required": ["basisForProcessing", "consentScopes"],
        "additionalProperties": False,
    },
    {
        "self": {"vendor": "com.example", "name": "site_search", "format": "jsonschema", "version": "1-0-0"},
        "type": "object",
        "properties": {
            "terms": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 10},
            "filters": {
                "type": "object",
                "patternProperties": {"^[a-zA-Z0-9_]{1,32}$": {"type": ["string", "boolean"]}},
                "additionalProperties": False,
            },
            "totalResults": {"type": "integer", "minimum": 0, "maximum": 2147483647},
            "pageResults": {"type": "integer", "minimum": 0, "maximum": 2147483647},
        },
        "required": ["terms"],
        "additionalProperties": False,
        "minProperties": 1,
    },
]

STYLES = {
    "function_calling": FUNCTION_CALLING,
    "github": GITHUB_LIKE,
    "schemastore": SCHEMASTORE_LIKE,
    "kubernetes": KUBERNETES_LIKE,
    "snowplow": SNOWPLOW_LIKE,
}


def _objects(schema: Any) -> list[dict[str, Any]]:
    out = []
    stack = [schema]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if "properties" in v and isinstance(v["properties"], dict):
                out.append(v)
            stack.extend(x for k, x in v.items() if k not in ("self",))
        elif isinstance(v, list):
            stack.extend(v)
    return out


def variant(schema: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A deterministic variation: required sets, open/closed objects, draft-4 spellings, descriptions."""
    s = copy.deepcopy(schema)
    for o in _objects(s):
        names = list(o["properties"])
        roll = rng.random()
        if roll < 0.3:
            o["required"] = sorted(
                set(o.get("required", [])) | set(rng.sample(names, k=rng.randint(0, len(names)))),
                key=names.index,
            )
        elif roll < 0.45:
            o.pop("required", None)
        roll = rng.random()
        if roll < 0.2:
            o["additionalProperties"] = False
        elif roll < 0.3 and "additionalProperties" not in o:
            o["additionalProperties"] = True
        for name in names:
            p = o["properties"][name]
            if isinstance(p, dict) and rng.random() < 0.3:
                p["description"] = f"The {name.replace('_', ' ')}."
            if isinstance(p, dict) and p.get("type") == "integer" and "minimum" in p and rng.random() < 0.3:
                p["exclusiveMinimum"] = True  # draft-4 boolean form
                if p["minimum"] == p.get("maximum"):
                    p.pop("exclusiveMinimum")
    if rng.random() < 0.25 and "$schema" not in s:
        s["$schema"] = "http://json-schema.org/draft-04/schema#"
    else:
        for o in _objects(s):
            for p in o["properties"].values():
                if isinstance(p, dict) and p.get("exclusiveMinimum") is True:
                    p.pop("exclusiveMinimum")
    return s


def build(seed: int = 20260101, per_base: int = 4) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    corpus = []
    for style, bases in STYLES.items():
        for i, base in enumerate(bases):
            corpus.append({"id": f"{style}-{i:02d}-0", "style": style, "schema": base})
            for k in range(1, per_base + 1):
                corpus.append({"id": f"{style}-{i:02d}-{k}", "style": style, "schema": variant(base, rng)})
    return corpus


if __name__ == "__main__":
    out = pathlib.Path(__file__).parent / "data" / "schema_corpus.json"
    out.parent.mkdir(exist_ok=True)
    corpus = build()
    out.write_text(json.dumps(corpus, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(corpus)} schemas to {out}")
