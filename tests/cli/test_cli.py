"""The `llamabind` command: subcommands, flag groups, exit codes, split/merge, --hf offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LB = [sys.executable, "-m", "llamabind"]
PROMPT = "The capital of France is"


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LB, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env={**os.environ, **(env or {})},
    )


def assert_usage_error(out: subprocess.CompletedProcess[str], needle: str) -> None:
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr
    assert "Traceback" not in out.stderr
    assert len([line for line in out.stderr.splitlines() if "error" in line.lower()]) >= 1


def test_version_and_help() -> None:
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("llamabind ")
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("complete", "chat", "info", "tokenize", "split", "merge", "rpc-server", "serve", "bench"):
        assert cmd in out.stdout
    assert run().returncode == 2  # no subcommand


def test_complete_greedy_default_model_json() -> None:
    out = run("complete", "-p", PROMPT, "-n", "8", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["text"].startswith(" Paris")
    assert data["completion_tokens"] == len(data["tokens"]) == 8
    assert data["prompt_tokens"] == 5
    assert set(data["timings"]) >= {"prompt_ms", "generation_tokens_per_second", "ttft_ms"}


def test_complete_prompt_sources_and_stop(tmp_path: Path) -> None:
    f = tmp_path / "prompt.txt"
    f.write_text(PROMPT)
    a = run("complete", "-f", str(f), "-n", "6")
    b = run("complete", "-n", "6", stdin=PROMPT)
    c = run("complete", "-p", PROMPT, "-n", "6")
    assert a.returncode == b.returncode == c.returncode == 0
    assert a.stdout == b.stdout == c.stdout
    stopped = run("complete", "-p", PROMPT, "-n", "16", "--stop", ".", "--json")
    assert json.loads(stopped.stdout)["text"] == " Paris"


def test_complete_json_schema_and_grammar(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
    }
    out = run(
        "complete",
        "-p",
        "Answer in JSON. " + PROMPT,
        "-n",
        "40",
        "--json-schema",
        json.dumps(schema),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    assert "city" in json.loads(json.loads(out.stdout)["text"])
    g = tmp_path / "yes.gbnf"
    g.write_text('root ::= "yes" | "no"\n')
    out = run("complete", "-p", "Is Paris in France?", "-n", "4", "--grammar-file", str(g), "--json")
    assert json.loads(out.stdout)["text"] in ("yes", "no")


def test_complete_closes_a_json_schema_document_within_n_predict() -> None:
    schema = json.dumps({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    args = ("complete", "-p", "Answer in JSON. " + PROMPT, "-n", "8", "--json-schema", schema, "--json")
    closed = json.loads(run(*args).stdout)
    assert closed["text"] == '{\n    "city":""}' and closed["completion_tokens"] == 8
    assert closed["finish_reason"] == "length" and closed["closed_on_budget"] is True
    cut = json.loads(run(*args, "--no-close-on-budget").stdout)
    assert cut["text"] == '{\n    "city": "' and cut["closed_on_budget"] is False


def test_bad_inputs_exit_codes(tmp_path: Path) -> None:
    out = run("complete", "-m", str(tmp_path / "missing.gguf"), "-p", "x")
    assert out.returncode == 1 and "model file not found" in out.stderr and "Traceback" not in out.stderr
    assert_usage_error(run("complete", "-p", "x", "-c", "-3"), "ctx-size")
    assert_usage_error(run("complete", "-p", "x", "--temp", "warm"), "--temp")
    assert_usage_error(run("complete", "-p", "x", "--kv-type", "q9_9"), "unknown ggml type")
    assert_usage_error(run("complete", "-p", "x", "--override-kv", "nonsense"), "KEY=TYPE:VALUE")
    assert_usage_error(run("complete", "-p", "x", "--grammar", 'root ::= "a'), "GBNF")
    assert_usage_error(run("complete", "-p", "x", "--json-schema", "{not json"), "not valid JSON")
    assert_usage_error(run("complete", "-p", "x", "-m", "a.gguf", "--hf", "org/repo"), "not both")
    assert_usage_error(run("split", "nothing.gguf", "out", "--max-tensors", "5"), "input model not found")
    assert_usage_error(run("complete", "-p", "x", "--top-p", "2"), "top_p")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    out = run("info", "-m", str(bad))
    assert out.returncode == 1 and "not a GGUF file" in out.stderr


def test_override_kv_and_context_flags() -> None:
    out = run(
        "complete",
        "-p",
        PROMPT,
        "-n",
        "4",
        "--json",
        "-c",
        "512",
        "-b",
        "64",
        "-ub",
        "32",
        "-t",
        "1",
        "--threads-batch",
        "2",
        "--kv-type-k",
        "q8_0",
        "--no-flash-attn",
        "--seed",
        "7",
        "--override-kv",
        "tokenizer.ggml.add_bos_token=bool:false",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["completion_tokens"] == 4
    out = run("complete", "-p", PROMPT, "-n", "4", "--kv-type", "q8_0", "--no-flash-attn")
    assert out.returncode == 1 and "a quantized V cache needs flash attention" in out.stderr


def test_info_and_tokenize() -> None:
    info = json.loads(run("info", "--json").stdout)
    assert info["model"]["architecture"] == "llama" and info["model"]["n_layer"] == 30
    assert any(d["type"] == "cpu" for d in info["devices"])
    toks = json.loads(run("tokenize", "Hello world", "--json").stdout)
    assert [t["piece"] for t in toks] == ["Hello", " world"]
    assert run("tokenize", "Hello", "--ids").stdout.split() == [str(toks[0]["id"])]


def test_split_load_generate_and_merge(tmp_path: Path, model_path: Path) -> None:
    out = run("split", str(model_path), str(tmp_path / "smol"), "--max-tensors", "100", "--json")
    assert out.returncode == 0, out.stderr
    shards = [Path(p) for p in json.loads(out.stdout)]
    assert [p.name for p in shards] == [f"smol-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    whole = json.loads(run("complete", "-p", PROMPT, "-n", "12", "--json").stdout)["tokens"]
    split = json.loads(run("complete", "-m", str(shards[0]), "-p", PROMPT, "-n", "12", "--json").stdout)[
        "tokens"
    ]
    assert split == whole
    merged = tmp_path / "merged.gguf"
    out = run("merge", str(shards[0]), "-o", str(merged))
    assert out.returncode == 0, out.stderr
    assert merged.read_bytes() == model_path.read_bytes()
    out = run("split", str(model_path), str(tmp_path / "bysize"), "--max-size", "40M", "--json")
    assert len(json.loads(out.stdout)) >= 3


def _hf_cache(root: Path, model_path: Path) -> None:
    repo = root / "hub" / "models--acme--smol-GGUF"
    rev = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    shutil.copy(model_path, snap / "smol-Q4_1.gguf")


def test_hf_offline_from_local_cache(tmp_path: Path, model_path: Path) -> None:
    _hf_cache(tmp_path, model_path)
    env = {"HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = run("complete", "--hf", "acme/smol-GGUF:Q4_1", "-p", PROMPT, "-n", "6", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["text"].startswith(" Paris")
    out = run("complete", "--hf", "acme/smol-GGUF:Q8_0", "-p", PROMPT, "-n", "6", env=env)
    assert out.returncode == 1 and "Q8_0" in out.stderr and "Traceback" not in out.stderr
    out = run("complete", "--hf", "acme/other", "-p", PROMPT, "-n", "6", env=env)
    assert out.returncode == 1 and "acme/other" in out.stderr


@pytest.mark.parametrize(
    "cmd", ["complete", "chat", "info", "tokenize", "split", "merge", "rpc-server", "bench", "serve"]
)
def test_every_subcommand_has_help(cmd: str) -> None:
    out = run(cmd, "--help", timeout=60)
    assert out.returncode == 0 and "usage: llamabind" in out.stdout
