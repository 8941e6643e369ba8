"""The one boundary between llamabind and huggingface_hub: list, download, and look up the local cache.

`HubClient` is the protocol the resolver talks to; `HfHubClient` implements it with
huggingface_hub. Tests replace either the whole client, or only its `api` (an object with
``list_repo_files``, like ``HfApi``) and `download` (a function like ``hf_hub_download``).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from llamabind.errors import HubError, HubUnreachableError

__all__ = [
    "HfHubClient",
    "HubClient",
    "HubUnreachableError",
    "default_cache_dir",
    "env_offline",
    "env_token",
]

log = logging.getLogger("llamabind.hub")

_TRUE = {"1", "ON", "YES", "TRUE"}


def env_offline() -> bool:
    """True when HF_HUB_OFFLINE (read now, not at import) asks for offline mode."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE


def env_token() -> str | None:
    """The access token from HF_TOKEN (or the legacy HUGGING_FACE_HUB_TOKEN), if set."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def default_cache_dir() -> Path:
    """The standard Hugging Face hub cache, from the environment as it is now.

    HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else
    ${XDG_CACHE_HOME:-~/.cache}/huggingface/hub: the same rules as huggingface_hub, but read at
    call time so that changing the environment after import takes effect.
    """
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = os.environ.get(name)
        if value:
            return Path(value).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(xdg).expanduser() / "huggingface" / "hub"


@runtime_checkable
class HubClient(Protocol):
    """What the resolver needs from the Hub; all paths are repo-relative POSIX paths."""

    def list_files(self, repo: str, *, revision: str | None = None) -> list[str]:
        """All files of `repo` on the Hub. Raises HubError (HubUnreachableError when offline/unreachable)."""
        ...

    def download(
        self, repo: str, filename: str, *, revision: str | None = None, progress: bool = True
    ) -> Path:
        """Download one file into the cache (or reuse it) and return its local path. Raises HubError."""
        ...

    def cached_files(self, repo: str, *, revision: str | None = None) -> tuple[str, list[str]] | None:
        """(commit hash, files) of the cached snapshot of `repo`, or None when nothing is cached."""
        ...

    def cached_path(self, repo: str, filename: str, *, revision: str | None = None) -> Path | None:
        """Local path of a cached file, or None."""
        ...


def _hf_errors() -> dict[str, type[BaseException]]:
    from huggingface_hub import utils as hf_utils

    names = (
        "GatedRepoError",
        "RepositoryNotFoundError",
        "RevisionNotFoundError",
        "EntryNotFoundError",
        "LocalEntryNotFoundError",
        "HFValidationError",
        "HfHubHTTPError",
        "OfflineModeIsEnabled",
    )
    out: dict[str, type[BaseException]] = {}
    for n in names:
        cls = getattr(hf_utils, n, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            out[n] = cls
    return out


def _is(exc: BaseException, errors: dict[str, type[BaseException]], name: str) -> bool:
    cls = errors.get(name)
    return cls is not None and isinstance(exc, cls)


def _translate(exc: Exception, repo: str, filename: str | None = None) -> HubError:
    """A clear HubError for an exception raised by huggingface_hub."""
    errors = _hf_errors()
    what = f"file {filename!r} in {repo!r}" if filename else f"repository {repo!r}"
    if _is(exc, errors, "GatedRepoError"):
        return HubError(
            f"repository {repo!r} is gated: accept its terms on the Hugging Face Hub and set HF_TOKEN to a token "
            "with access"
        )
    if _is(exc, errors, "RepositoryNotFoundError"):
        return HubError(
            f"repository {repo!r} not found on the Hugging Face Hub (check the name; private repositories need "
            "HF_TOKEN)"
        )
    if _is(exc, errors, "RevisionNotFoundError"):
        return HubError(f"revision not found for repository {repo!r}: {exc}")
    if _is(exc, errors, "EntryNotFoundError") and not _is(exc, errors, "LocalEntryNotFoundError"):
        return HubError(f"{what} not found on the Hugging Face Hub")
    if _is(exc, errors, "HFValidationError"):
        return HubError(f"invalid repository id or file name for {what}: {exc}")
    if _is(exc, errors, "OfflineModeIsEnabled") or _is(exc, errors, "LocalEntryNotFoundError"):
        return HubUnreachableError(f"could not reach the Hugging Face Hub for {what}: {exc}")
    if _is(exc, errors, "HfHubHTTPError"):
        return HubError(f"Hugging Face Hub request for {what} failed: {exc}")
    if _is_network_error(exc):
        return HubUnreachableError(f"could not reach the Hugging Face Hub for {what}: {exc}")
    return HubError(f"Hugging Face Hub request for {what} failed: {type(exc).__name__}: {exc}")


_NETWORK_MODULES = {"httpx", "httpcore", "requests", "urllib3", "aiohttp"}


def _is_network_error(exc: BaseException) -> bool:
    """A transport failure (DNS, refused connection, timeout) from the HTTP stack huggingface_hub uses."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    for cls in type(exc).__mro__:
        # httpx / httpx2 / requests ... (a trailing major version in the module name is ignored)
        if cls.__module__.split(".")[0].rstrip("0123456789") in _NETWORK_MODULES:
            return True
    return False


def _silent_tqdm() -> Any:
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    class _Silent(tqdm):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return _Silent


class HfHubClient:
    """HubClient over huggingface_hub: ``HfApi.list_repo_files``, ``hf_hub_download`` and the cache.

    `token` defaults to HF_TOKEN, `cache_dir` to default_cache_dir() (both read at construction).
    `api` and `download` replace ``HfApi(...)`` and ``hf_hub_download`` (for tests or custom
    transports); `download` receives the keyword arguments of ``hf_hub_download``.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        endpoint: str | None = None,
        api: Any = None,
        download: Callable[..., Any] | None = None,
    ) -> None:
        self.token = token if token is not None else env_token()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.endpoint = endpoint
        self._api = api
        self._download = download

    @property
    def api(self) -> Any:
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(endpoint=self.endpoint, token=self.token)
        return self._api

    def list_files(self, repo: str, *, revision: str | None = None) -> list[str]:
        try:
            files = self.api.list_repo_files(repo, revision=revision, repo_type="model", token=self.token)
        except HubError:
            raise
        except Exception as exc:
            raise _translate(exc, repo) from exc
        return [str(f) for f in files]

    def download(
        self, repo: str, filename: str, *, revision: str | None = None, progress: bool = True
    ) -> Path:
        fn = self._download
        if fn is None:
            from huggingface_hub import hf_hub_download

            fn = hf_hub_download
        kwargs: dict[str, Any] = {
            "repo_id": repo,
            "filename": filename,
            "revision": revision,
            "repo_type": "model",
            "cache_dir": str(self.cache_dir),
            "token": self.token,
        }
        if self.endpoint is not None:
            kwargs["endpoint"] = self.endpoint
        if not progress and _accepts(fn, "tqdm_class"):
            kwargs["tqdm_class"] = _silent_tqdm()
        try:
            path = fn(**kwargs)
        except HubError:
            raise
        except Exception as exc:
            raise _translate(exc, repo, filename) from exc
        return Path(str(path))

    def cached_files(self, repo: str, *, revision: str | None = None) -> tuple[str, list[str]] | None:
        from huggingface_hub import scan_cache_dir

        if not self.cache_dir.is_dir():
            return None
        try:
            info = scan_cache_dir(self.cache_dir)
        except Exception as exc:  # CacheNotFound, CorruptedCacheException
            log.debug("cannot scan the Hugging Face cache %s: %s", self.cache_dir, exc)
            return None
        for cached in info.repos:
            if cached.repo_type != "model" or cached.repo_id != repo:
                continue
            revisions = list(cached.revisions)
            if not revisions:
                return None
            if revision is not None:
                picked = [
                    r for r in revisions if revision in r.refs or r.commit_hash.startswith(revision.lower())
                ]
            else:
                picked = [r for r in revisions if "main" in r.refs]
            if not picked:
                if revision is not None:
                    return None
                picked = sorted(revisions, key=lambda r: r.last_modified, reverse=True)
            rev = picked[0]
            snapshot = Path(rev.snapshot_path)
            files = sorted(Path(f.file_path).relative_to(snapshot).as_posix() for f in rev.files)
            return rev.commit_hash, files
        return None

    def cached_path(self, repo: str, filename: str, *, revision: str | None = None) -> Path | None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, filename, cache_dir=str(self.cache_dir), revision=revision)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
        return None


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
