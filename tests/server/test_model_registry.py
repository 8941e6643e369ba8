"""The router's model registry: ``--models-dir`` scanning and ``--models-preset`` TOML parsing with
line-numbered errors; and ``llamabind models list``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llamabind.cli.main import main
from llamabind.server.model_registry import PresetError, parse_presets, parse_presets_text, scan_models_dir


def _gguf(path: Path, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + b"\0" * (size - 4))
    return path


def test_scan_models_dir(tmp_path: Path) -> None:
    _gguf(tmp_path / "qwen-Q4_K_M.gguf")
    _gguf(tmp_path / "big-model-Q8_0-00001-of-00002.gguf")
    _gguf(tmp_path / "big-model-Q8_0-00002-of-00002.gguf")
    _gguf(tmp_path / "mmproj-qwen-F16.gguf")
    _gguf(tmp_path / "vision" / "gemma-3-4b-it-Q4_K_M.gguf")
    _gguf(tmp_path / "vision" / "mmproj-model-f16.gguf")
    (tmp_path / "notes.txt").write_text("not a model")
    entries = {e.name: e for e in scan_models_dir(tmp_path)}
    assert sorted(entries) == ["big-model-Q8_0", "qwen-Q4_K_M", "vision"]
    big = entries["big-model-Q8_0"]
    assert big.path is not None and big.path.name == "big-model-Q8_0-00001-of-00002.gguf"
    assert big.mmproj is None  # the directory's projector belongs to qwen by its name
    assert entries["qwen-Q4_K_M"].mmproj == str(tmp_path / "mmproj-qwen-F16.gguf")
    vision = entries["vision"]  # a subdirectory with one model: named after it, projector attached
    assert vision.mmproj == str(tmp_path / "vision" / "mmproj-model-f16.gguf")
    assert "gemma-3-4b-it-Q4_K_M" in vision.names and "gemma-3-4b-it-Q4_K_M.gguf" in vision.names
    with pytest.raises(ValueError, match="not found"):
        scan_models_dir(tmp_path / "missing")


def test_parse_presets(tmp_path: Path) -> None:
    _gguf(tmp_path / "models" / "chat.gguf")
    _gguf(tmp_path / "draft.gguf")
    _gguf(tmp_path / "adapter.gguf")
    preset = tmp_path / "presets.toml"
    preset.write_text(
        """
# my models
[chat]
path = "models/chat.gguf"
alias = ["gpt-4o-mini", "chat-latest"]
ctx_size = 8192
parallel = 2
chat_template = "chatml"
draft = "draft.gguf"
kv_type = "Q8_0"
lora = ["adapter.gguf:0.5"]
ttl = 600
n_gpu_layers = 99

["minilm.v2"]
hf = "second-state/All-MiniLM-L6-v2-Embedding-GGUF:Q8_0"
role = "embedding"
"""
    )
    chat, emb = parse_presets(preset)
    assert chat.name == "chat" and chat.path == tmp_path / "models" / "chat.gguf"
    assert chat.aliases == ("gpt-4o-mini", "chat-latest")
    assert (chat.ctx_size, chat.parallel, chat.kv_type, chat.ttl, chat.n_gpu_layers) == (
        8192,
        2,
        "q8_0",
        600.0,
        99,
    )
    assert chat.chat_template == "chatml" and chat.draft == str(tmp_path / "draft.gguf")
    assert chat.loras == ((str(tmp_path / "adapter.gguf"), 0.5),)
    assert chat.line == 3 and chat.source == "preset"
    assert emb.name == "minilm.v2" and emb.hf is not None and emb.path is None
    assert emb.role == "embedding" and emb.line == 15


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[a]\npath = "m.gguf"\ncontext = 4096\n', r"<p>:3: \[a\] context: unknown key 'context'"),
        ('[a]\npath = "m.gguf"\n\nparallel = "two"\n', r"<p>:4: \[a\] parallel: expected an integer"),
        ('[a]\npath = "m.gguf"\nparallel = 0\n', r"<p>:3: .*at least 1"),
        ('[a]\npath = "m.gguf"\nrole = "chat"\n', r"<p>:3: \[a\] role: expected one of generation"),
        ('[a]\npath = "m.gguf"\nkv_type = "q3"\n', r"<p>:3: \[a\] kv_type"),
        ('[a]\npath = "m.gguf"\nttl = -1\n', r"<p>:3: \[a\] ttl"),
        ('[a]\npath = "missing.gguf"\n', r"<p>:2: \[a\] path: file not found"),
        ('\n[a]\nalias = "x"\n', r"<p>:2: \[a\]: give exactly one of 'path'"),
        ('[a]\npath = "m.gguf"\nhf = "o/r"\n', r"<p>:1: \[a\]: give exactly one"),
        ('[a]\npath = "m.gguf"\nalias = [1]\n', r"<p>:3: \[a\] alias: expected a string"),
        ('[a]\npath = "m.gguf"\nctx_size = 64\nparallel = 8\n', r"<p>:3: .*fewer than 16 tokens"),
        ('[a]\npath = "m.gguf"\n[b]\npath = "m.gguf"\nalias = "a"\n', r"<p>:3: the name 'a'.*already used"),
        ('[a]\npath = "m.gguf"\nparallel = = 2\n', r"<p>:3: invalid TOML"),
        ('name = "x"\n', r"<p>:1: 'name': each model is a \[table\]"),
        ('[a.b]\npath = "m.gguf"\n', r"<p>:1: \[a\] b: unknown key 'b'"),
        ("", r"<p>: no model tables"),
    ],
)
def test_bad_presets_name_the_line(tmp_path: Path, text: str, match: str) -> None:
    _gguf(tmp_path / "m.gguf")
    with pytest.raises(PresetError, match=match):
        parse_presets_text(text, source="<p>", base=tmp_path)


def _hf_cache(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """The Hugging Face cache layout: blobs, a snapshot of symlinks, a ref."""
    root = cache / ("models--" + repo.replace("/", "--"))
    commit = "a" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (root / "blobs").mkdir()
    for i, (name, data) in enumerate(files.items()):
        blob = root / "blobs" / f"{i:040x}"
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / name)


def test_models_list_pull_rm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _hf_cache(
        cache,
        "owner/Tiny-GGUF",
        {
            "Tiny-Q4_K_M.gguf": b"GGUF" + b"\0" * 1000,
            "Tiny-Q8_0.gguf": b"GGUF" + b"\0" * 2000,
            "README.md": b"# tiny",
        },
    )
    d = tmp_path / "models"
    _gguf(d / "local-Q5_K_M.gguf", 3000)
    assert main(["models", "list", "--models-dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert "owner/Tiny-GGUF:Q4_K_M" in out and "owner/Tiny-GGUF:Q8_0" in out
    assert "local-Q5_K_M" in out and "Q5_K_M" in out and "models-dir" in out
    assert main(["models", "list", "--models-dir", str(d), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["owner/Tiny-GGUF:Q8_0"]["size"] == 2004 and rows["owner/Tiny-GGUF:Q8_0"]["quant"] == "Q8_0"
    assert rows["local-Q5_K_M"] == {
        "name": "local-Q5_K_M",
        "quant": "Q5_K_M",
        "size": 3000,
        "path": str(d / "local-Q5_K_M.gguf"),
        "source": "models-dir",
        "files": 1,
        "mmproj": None,
    }
    # pull from the cache (offline), then remove one quant, then the repository
    assert main(["models", "pull", "owner/Tiny-GGUF:Q8_0"]) == 0
    assert "Tiny-Q8_0.gguf" in capsys.readouterr().out
    assert main(["models", "rm", "owner/Tiny-GGUF:Q8_0"]) == 0
    assert main(["models", "list", "--json"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["owner/Tiny-GGUF:Q4_K_M"]
    assert main(["models", "rm", "owner/Tiny-GGUF"]) == 0
    assert not (cache / "models--owner--Tiny-GGUF").exists()
    assert main(["models", "rm", "owner/Tiny-GGUF"]) == 2  # no longer there: a usage error


def test_serve_refuses_a_bad_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preset = tmp_path / "p.toml"
    preset.write_text('[a]\npath = "missing.gguf"\n')
    assert main(["serve", "--models-preset", str(preset)]) == 2
    err = capsys.readouterr().err
    assert f"{preset}:2: [a] path: file not found" in err
    assert main(["serve", "--models-dir", str(tmp_path / "nowhere")]) == 2
    assert "models directory not found" in capsys.readouterr().err
    assert main(["serve", "--models-max", "2"]) == 2
    assert "go with --models-dir" in capsys.readouterr().err
