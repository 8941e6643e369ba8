"""Hugging Face Hub resolution, mocked at the client boundary (HfApi / hf_hub_download); no network."""

from __future__ import annotations

import hashlib
import io
import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
from huggingface_hub.utils import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

from llamabind.errors import HubError
from llamabind.hub import (
    DEFAULT_QUANT_PREFERENCE,
    HfHubClient,
    console_choose,
    default_cache_dir,
    group_gguf_files,
    list_gguf_models,
    parse_spec,
    quant_tag,
    resolve_model,
)
from llamabind.hub import resolve as resolve_mod

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hf_error(cls: type[Exception], msg: str) -> Exception:
    # huggingface_hub's HTTP errors want a response object (httpx in 1.x/2.x, requests before)
    response = types.SimpleNamespace(headers={}, request=None, status_code=404)
    try:
        return cls(msg, response=response)
    except TypeError:
        return cls(msg)


def write_cache(
    cache_dir: Path, repo: str, files: dict[str, bytes], *, commit: str = COMMIT, ref: str = "main"
) -> Path:
    """Lay out `files` as the Hugging Face cache does: blobs/, snapshots/<commit>/ symlinks, refs/<ref>."""
    root = cache_dir / ("models--" + repo.replace("/", "--"))
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    snap = root / "snapshots" / commit
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        blob = root / "blobs" / digest
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snap


class FakeApi:
    """Stands in for HfApi: answers list_repo_files from a dict, records calls."""

    def __init__(self, repos: dict[str, list[str]], error: Exception | None = None) -> None:
        self.repos = repos
        self.error = error
        self.calls: list[dict[str, Any]] = []

    def list_repo_files(self, repo_id: str, **kwargs: Any) -> list[str]:
        self.calls.append({"repo_id": repo_id, **kwargs})
        if self.error is not None:
            raise self.error
        if repo_id not in self.repos:
            raise _hf_error(RepositoryNotFoundError, f"404 Repository Not Found for url: .../{repo_id}")
        return list(self.repos[repo_id])


class FakeDownload:
    """Stands in for hf_hub_download: writes the file into the cache layout and returns its path."""

    def __init__(self, repos: dict[str, list[str]]) -> None:
        self.repos = repos
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        repo, filename = kwargs["repo_id"], kwargs["filename"]
        if filename not in self.repos.get(repo, []):
            raise _hf_error(EntryNotFoundError, f"404 Entry Not Found: {filename}")
        snap = write_cache(Path(kwargs["cache_dir"]), repo, {filename: f"{repo}/{filename}".encode()})
        return str(snap / filename)


@pytest.fixture
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face home in tmp; online; no token; no real Hub calls possible."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    for var in (
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a test tried to reach the Hugging Face Hub")

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", no_network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(resolve_mod, "_stdin_is_tty", lambda: False)
    return home / "hub"


def make_client(repos: dict[str, list[str]], **kwargs: Any) -> tuple[HfHubClient, FakeApi, FakeDownload]:
    api = FakeApi(repos, kwargs.pop("error", None))
    dl = FakeDownload(repos)
    return HfHubClient(api=api, download=dl, **kwargs), api, dl


QUANTS_REPO = "bartowski/Tiny-Model-GGUF"
QUANTS_FILES = [
    ".gitattributes",
    "README.md",
    "Tiny-Model-Q2_K.gguf",
    "Tiny-Model-Q4_0.gguf",
    "Tiny-Model-Q4_K_M.gguf",
    "Tiny-Model-Q8_0.gguf",
    "Tiny-Model-f16.gguf",
    "Tiny-Model.imatrix.gguf",
]


# --- parsing and grouping ---------------------------------------------------------------------


def test_parse_spec() -> None:
    assert parse_spec("owner/name") == ("owner/name", None)
    assert parse_spec("owner/name:Q4_K_M") == ("owner/name", "Q4_K_M")
    assert parse_spec(" hf://owner/Name-1.5B-GGUF:q8_0 ") == ("owner/Name-1.5B-GGUF", "q8_0")
    assert parse_spec("https://huggingface.co/owner/name") == ("owner/name", None)
    for bad in ("name-only", "owner/name:", "/x", "a/b/c", "owner/na me", "owner/name:Q4 K"):
        with pytest.raises(HubError, match="invalid"):
            parse_spec(bad)


def test_quant_tag() -> None:
    assert quant_tag("Llama-3.2-1B-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert quant_tag("model.q8_0.gguf") == "Q8_0"
    assert quant_tag("Qwen2.5-7B-Instruct-IQ4_XS.gguf") == "IQ4_XS"
    assert quant_tag("model-UD-Q4_K_XL-00001-of-00002.gguf") == "Q4_K_XL"
    assert quant_tag("Q4_K_M/model-00001-of-00003.gguf") == "Q4_K_M"
    assert quant_tag("gemma-3-4b-it-BF16.gguf") == "BF16"
    assert quant_tag("mmproj-model-f16.gguf") == "F16"
    assert quant_tag("Qwen3-0.6B.gguf") is None


def test_group_shards_and_projectors() -> None:
    files = [
        "README.md",
        "Q4_K_M/m-Q4_K_M-00002-of-00003.gguf",
        "Q4_K_M/m-Q4_K_M-00001-of-00003.gguf",
        "Q4_K_M/m-Q4_K_M-00003-of-00003.gguf",
        "m-Q8_0-00001-of-00002.gguf",
        "m-Q8_0-00002-of-00002.gguf",
        "m-F16.gguf",
        "mmproj-m-F16.gguf",
        "mmproj-m-F32.gguf",
    ]
    g = group_gguf_files(files)
    assert [m.files for m in g.models] == [
        (
            "Q4_K_M/m-Q4_K_M-00001-of-00003.gguf",
            "Q4_K_M/m-Q4_K_M-00002-of-00003.gguf",
            "Q4_K_M/m-Q4_K_M-00003-of-00003.gguf",
        ),
        ("m-F16.gguf",),
        ("m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"),
    ]
    assert [m.quant for m in g.models] == ["Q4_K_M", "F16", "Q8_0"]
    assert all(m.complete for m in g.models)
    assert g.models[0].label == "Q4_K_M/m-Q4_K_M-00001-of-00003.gguf (3 shards)"
    assert g.mmproj == ("mmproj-m-F16.gguf", "mmproj-m-F32.gguf")
    assert DEFAULT_QUANT_PREFERENCE == ("Q4_K_M", "Q4_K_S", "Q4_0", "Q5_K_M", "Q8_0")


# --- online (mocked) resolution ---------------------------------------------------------------


def test_default_quant_preference(hf_env: Path) -> None:
    client, api, dl = make_client({QUANTS_REPO: QUANTS_FILES})
    r = resolve_model(QUANTS_REPO, client=client, progress=False)
    assert r.files == ["Tiny-Model-Q4_K_M.gguf"] and r.quant == "Q4_K_M"
    assert r.paths == [
        hf_env / "models--bartowski--Tiny-Model-GGUF" / "snapshots" / COMMIT / "Tiny-Model-Q4_K_M.gguf"
    ]
    assert r.path.read_bytes() == f"{QUANTS_REPO}/Tiny-Model-Q4_K_M.gguf".encode()
    assert r.mmproj is None and not r.from_cache
    assert [c["filename"] for c in dl.calls] == ["Tiny-Model-Q4_K_M.gguf"]
    assert dl.calls[0]["cache_dir"] == str(hf_env)  # the standard cache under HF_HOME
    assert api.calls[0]["repo_id"] == QUANTS_REPO


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["m-Q8_0.gguf", "m-Q5_K_M.gguf", "m-Q4_K_S.gguf"], "m-Q4_K_S.gguf"),
        (["m-Q8_0.gguf", "m-Q5_K_M.gguf"], "m-Q5_K_M.gguf"),
        (["m-Q8_0.gguf", "m-Q6_K.gguf"], "m-Q8_0.gguf"),
        (["m-Q6_K.gguf", "m-F16.gguf"], "m-F16.gguf"),  # none preferred: the first in the repo
    ],
)
def test_preference_fallbacks(hf_env: Path, files: list[str], expected: str) -> None:
    client, _, _ = make_client({"o/r": files})
    assert resolve_model("o/r", client=client, progress=False).files == [expected]


def test_quant_is_case_insensitive(hf_env: Path) -> None:
    client, _, _ = make_client({QUANTS_REPO: QUANTS_FILES})
    assert resolve_model(f"{QUANTS_REPO}:q8_0", client=client, progress=False).files == [
        "Tiny-Model-Q8_0.gguf"
    ]
    assert resolve_model(f"{QUANTS_REPO}:F16", client=client, progress=False).files == ["Tiny-Model-f16.gguf"]


def test_unknown_quant_lists_available(hf_env: Path) -> None:
    client, _, dl = make_client({QUANTS_REPO: QUANTS_FILES})
    with pytest.raises(
        HubError, match=r"quant 'Q3_K_L' not found.*available quants: Q2_K, Q4_0, Q4_K_M, Q8_0, F16"
    ):
        resolve_model(f"{QUANTS_REPO}:Q3_K_L", client=client, progress=False)
    assert dl.calls == []


def test_split_model_downloads_every_shard(hf_env: Path) -> None:
    files = [
        "Q4_K_M/big-Q4_K_M-00001-of-00003.gguf",
        "Q4_K_M/big-Q4_K_M-00002-of-00003.gguf",
        "Q4_K_M/big-Q4_K_M-00003-of-00003.gguf",
        "big-Q8_0.gguf",
    ]
    client, _, dl = make_client({"o/big": files})
    r = resolve_model("o/big:Q4_K_M", client=client, progress=True)
    assert r.files == files[:3]
    assert [p.name for p in r.paths] == [Path(f).name for f in files[:3]]
    assert all(p.is_file() for p in r.paths)
    assert [c["filename"] for c in dl.calls] == files[:3]
    # default preference picks the split Q4_K_M too
    assert resolve_model("o/big", client=client, progress=False).files == files[:3]


def test_incomplete_split_is_an_error(hf_env: Path) -> None:
    client, _, _ = make_client({"o/r": ["m-Q4_K_M-00001-of-00003.gguf", "m-Q4_K_M-00003-of-00003.gguf"]})
    with pytest.raises(HubError, match="should have 3 shards but 2 are listed"):
        resolve_model("o/r", client=client, progress=False)


def test_mmproj_is_returned_beside_the_model(hf_env: Path) -> None:
    files = ["gemma-Q4_K_M.gguf", "gemma-Q8_0.gguf", "mmproj-gemma-BF16.gguf", "mmproj-gemma-F16.gguf"]
    client, _, dl = make_client({"ggml-org/gemma-GGUF": files})
    r = resolve_model("ggml-org/gemma-GGUF", client=client, progress=False)
    assert r.files == ["gemma-Q4_K_M.gguf"]
    assert r.mmproj_file == "mmproj-gemma-F16.gguf"
    assert r.mmproj is not None and r.mmproj.is_file()
    assert [c["filename"] for c in dl.calls] == ["gemma-Q4_K_M.gguf", "mmproj-gemma-F16.gguf"]
    r2 = resolve_model("ggml-org/gemma-GGUF:Q8_0", client=client, progress=False, mmproj=False)
    assert r2.mmproj is None and r2.mmproj_file is None


def test_mmproj_in_the_models_directory_wins() -> None:
    from llamabind.hub.files import best_mmproj

    g = group_gguf_files(["a/m-Q4_K_M.gguf", "mmproj-F16.gguf", "a/mmproj-Q8_0.gguf", "b/mmproj-F16.gguf"])
    assert best_mmproj(g.models[0], g.mmproj) == "a/mmproj-Q8_0.gguf"
    g2 = group_gguf_files(["m-Q8_0.gguf", "mmproj-F16.gguf", "mmproj-Q8_0.gguf"])
    assert best_mmproj(g2.models[0], g2.mmproj) == "mmproj-Q8_0.gguf"  # same quant as the model
    assert best_mmproj(group_gguf_files(["b/m.gguf", "a/mmproj.gguf"]).models[0], ["a/mmproj.gguf"]) is None


def test_explicit_file(hf_env: Path) -> None:
    client, _, _ = make_client({QUANTS_REPO: QUANTS_FILES})
    r = resolve_model(QUANTS_REPO, file="Tiny-Model-Q2_K.gguf", client=client, progress=False)
    assert r.files == ["Tiny-Model-Q2_K.gguf"] and r.quant == "Q2_K"
    with pytest.raises(
        HubError, match=r"file 'nope.gguf' not found in 'bartowski/Tiny-Model-GGUF'.*Q4_K_M\.gguf"
    ):
        resolve_model(QUANTS_REPO, file="nope.gguf", client=client, progress=False)
    with pytest.raises(HubError, match="either a quant"):
        resolve_model(f"{QUANTS_REPO}:Q8_0", file="Tiny-Model-Q2_K.gguf", client=client)


def test_explicit_shard_file_brings_the_whole_set(hf_env: Path) -> None:
    files = ["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"]
    client, _, _ = make_client({"o/r": files})
    assert resolve_model("o/r", file="m-00002-of-00002.gguf", client=client, progress=False).files == files


def test_missing_repo_and_no_gguf(hf_env: Path) -> None:
    client, _, _ = make_client({"o/docs-only": ["README.md", "model.safetensors"]})
    with pytest.raises(HubError, match=r"repository 'o/missing' not found on the Hugging Face Hub"):
        resolve_model("o/missing", client=client)
    with pytest.raises(HubError, match=r"repository 'o/docs-only' has no GGUF model files"):
        resolve_model("o/docs-only", client=client)


def test_gated_repo_and_missing_file_errors(hf_env: Path) -> None:
    client, _, _ = make_client({}, error=_hf_error(GatedRepoError, "403 gated"))
    with pytest.raises(HubError, match=r"gated.*HF_TOKEN"):
        resolve_model("o/gated", client=client)
    client2 = HfHubClient(api=FakeApi({"o/r": ["m.gguf"]}), download=FakeDownload({"o/r": []}))
    with pytest.raises(HubError, match=r"file 'm.gguf' in 'o/r' not found"):
        resolve_model("o/r", client=client2, progress=False)


def test_token_from_environment(hf_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_for_test")
    client, api, dl = make_client({QUANTS_REPO: QUANTS_FILES})
    assert client.token == "hf_secret_for_test"
    resolve_model(QUANTS_REPO, client=client, progress=False)
    assert api.calls[0]["token"] == "hf_secret_for_test"
    assert dl.calls[0]["token"] == "hf_secret_for_test"


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    assert HfHubClient().cache_dir == tmp_path / "cache"


def test_quiet_download_passes_a_silent_progress_bar(hf_env: Path) -> None:
    seen: dict[str, Any] = {}

    def download(repo_id: str, filename: str, *, tqdm_class: Any = None, **kwargs: Any) -> str:
        seen["tqdm_class"] = tqdm_class
        return str(write_cache(Path(kwargs["cache_dir"]), repo_id, {filename: b"x"}) / filename)

    client = HfHubClient(api=FakeApi({"o/r": ["m.gguf"]}), download=download)
    resolve_model("o/r", client=client, progress=False)
    bar = seen["tqdm_class"](total=3, file=io.StringIO())
    assert bar.disable
    resolve_model("o/r", client=client, progress=True)
    assert seen["tqdm_class"] is None  # huggingface_hub's own progress bar


# --- interactive picker -----------------------------------------------------------------------


def test_picker_is_used_only_on_a_tty(hf_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _, _ = make_client({QUANTS_REPO: QUANTS_FILES})
    offered: list[list[str]] = []

    def choose(options: list[str]) -> str:
        offered.append(options)
        return "Tiny-Model-Q8_0.gguf"

    r = resolve_model(QUANTS_REPO, client=client, choose=choose, progress=False)
    assert r.files == ["Tiny-Model-Q4_K_M.gguf"] and offered == []  # not a terminal: default pick

    monkeypatch.setattr(resolve_mod, "_stdin_is_tty", lambda: True)
    r = resolve_model(QUANTS_REPO, client=client, choose=choose, progress=False)
    assert r.files == ["Tiny-Model-Q8_0.gguf"]
    assert offered[0][0] == "Tiny-Model-Q4_K_M.gguf"  # the default comes first
    assert sorted(offered[0]) == sorted(f for f in QUANTS_FILES if f.endswith(".gguf") and "imatrix" not in f)

    # an explicit quant that matches one file asks nothing
    r = resolve_model(f"{QUANTS_REPO}:Q2_K", client=client, choose=choose, progress=False)
    assert r.files == ["Tiny-Model-Q2_K.gguf"] and len(offered) == 1

    with pytest.raises(HubError, match="picker returned"):
        resolve_model(QUANTS_REPO, client=client, choose=lambda opts: "other.gguf", progress=False)


def test_console_choose() -> None:
    answers = iter(["9", "x", "2"])
    out = io.StringIO()
    assert console_choose(["a", "b", "c"], stream=out, read=lambda prompt: next(answers)) == "b"
    assert "not a choice" in out.getvalue() and "[default]" in out.getvalue()
    assert console_choose(["a", "b"], stream=out, read=lambda prompt: "") == "a"

    def eof(prompt: str) -> str:
        raise EOFError

    assert console_choose(["a", "b"], stream=out, read=eof) == "a"


# --- offline: local cache only ----------------------------------------------------------------


def _offline_cache(hf_env: Path) -> Path:
    return write_cache(
        hf_env,
        QUANTS_REPO,
        {
            "Tiny-Model-Q4_K_M.gguf": b"q4km",
            "Tiny-Model-Q8_0.gguf": b"q8",
            "split/s-Q4_0-00001-of-00002.gguf": b"s1",
            "split/s-Q4_0-00002-of-00002.gguf": b"s2",
            "mmproj-Tiny-F16.gguf": b"mm",
        },
    )


def test_offline_resolves_from_the_cache(hf_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = _offline_cache(hf_env)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = resolve_model(QUANTS_REPO, progress=False)  # default client: HF_HOME cache, no network
    assert r.from_cache and r.revision == COMMIT
    assert r.files == ["Tiny-Model-Q4_K_M.gguf"]
    assert r.paths == [snap / "Tiny-Model-Q4_K_M.gguf"] and r.path.read_bytes() == b"q4km"
    assert r.mmproj == snap / "mmproj-Tiny-F16.gguf"
    r = resolve_model(f"{QUANTS_REPO}:q4_0", progress=False)
    assert r.files == ["split/s-Q4_0-00001-of-00002.gguf", "split/s-Q4_0-00002-of-00002.gguf"]
    assert [p.read_bytes() for p in r.paths] == [b"s1", b"s2"]
    assert list_gguf_models(QUANTS_REPO).quants() == ["Q4_K_M", "Q8_0", "Q4_0"]


def test_offline_cache_misses(hf_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match=r"offline mode \(HF_HUB_OFFLINE\).*'o/absent' is not in the local"):
        resolve_model("o/absent")
    _offline_cache(hf_env)
    with pytest.raises(HubError, match=r"quant 'Q6_K' not found.*local cache.*Q4_K_M"):
        resolve_model(f"{QUANTS_REPO}:Q6_K")
    with pytest.raises(HubError, match="not found in 'bartowski/Tiny-Model-GGUF' \\(in the local cache\\)"):
        resolve_model(QUANTS_REPO, file="Tiny-Model-Q2_K.gguf")
    with pytest.raises(HubError, match="revision 'v2' is not in the local"):
        resolve_model(QUANTS_REPO, revision="v2")


def test_offline_argument_overrides_environment(hf_env: Path) -> None:
    snap = _offline_cache(hf_env)
    client, api, dl = make_client({QUANTS_REPO: QUANTS_FILES})
    r = resolve_model(f"{QUANTS_REPO}:Q8_0", offline=True, client=client)
    assert r.paths == [snap / "Tiny-Model-Q8_0.gguf"]
    assert api.calls == [] and dl.calls == []


def test_unreachable_hub_falls_back_to_the_cache(hf_env: Path) -> None:
    snap = _offline_cache(hf_env)
    client, _, dl = make_client({}, error=ConnectionError("Name or service not known"))
    r = resolve_model(QUANTS_REPO, client=client, progress=False)
    assert r.from_cache and r.paths == [snap / "Tiny-Model-Q4_K_M.gguf"] and dl.calls == []
    with pytest.raises(HubError, match=r"Hub is unreachable.*'o/other' is not in the local"):
        resolve_model("o/other", client=client)


def test_a_custom_client_only_needs_the_protocol(tmp_path: Path) -> None:
    class Mini:
        def list_files(self, repo: str, *, revision: str | None = None) -> list[str]:
            return ["x-Q4_0.gguf"]

        def download(
            self, repo: str, filename: str, *, revision: str | None = None, progress: bool = True
        ) -> Path:
            p = tmp_path / filename
            p.write_bytes(b"")
            return p

        def cached_files(self, repo: str, *, revision: str | None = None) -> tuple[str, list[str]] | None:
            return None

        def cached_path(self, repo: str, filename: str, *, revision: str | None = None) -> Path | None:
            return None

    chooser: Callable[[list[str]], str] | None = None
    r = resolve_model("a/b", client=Mini(), choose=chooser, offline=False)
    assert r.paths == [tmp_path / "x-Q4_0.gguf"]


def test_transport_errors_of_any_http_stack_count_as_unreachable(hf_env: Path) -> None:
    snap = _offline_cache(hf_env)
    connect_error = type("ConnectError", (Exception,), {"__module__": "httpx2._exceptions"})
    client, _, _ = make_client({}, error=connect_error("[Errno -2] Name or service not known"))
    r = resolve_model(f"{QUANTS_REPO}:Q8_0", client=client, progress=False)
    assert r.paths == [snap / "Tiny-Model-Q8_0.gguf"]
    with pytest.raises(HubError, match=r"unreachable.*not in the local Hugging Face cache \(could not reach"):
        resolve_model("o/other", client=client)
    client2, _, _ = make_client({}, error=ValueError("unexpected"))
    with pytest.raises(HubError, match="failed: ValueError: unexpected"):
        resolve_model("o/other", client=client2)
