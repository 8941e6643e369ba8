"""Resolve ``REPO[:QUANT]`` (or REPO + file) to local GGUF paths, downloading through huggingface_hub."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from llamabind.errors import HubError

from .client import HfHubClient, HubClient, HubUnreachableError, env_offline
from .files import (
    GGUFModelFiles,
    RepoGGUFFiles,
    best_mmproj,
    find_by_file,
    group_gguf_files,
    match_quant,
    preference_order,
    preferred_model,
)

__all__ = [
    "ResolvedModel",
    "console_choose",
    "list_gguf_models",
    "parse_spec",
    "resolve_model",
]

log = logging.getLogger("llamabind.hub")

Chooser = Callable[[list[str]], str]

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_URL_PREFIXES = ("hf://", "https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/")


@dataclass(frozen=True)
class ResolvedModel:
    """A model resolved to local files.

    `paths` are the local model files (all shards, in order: pass ``paths[0]``, or the whole list,
    to the model loader); `files` their repo-relative names. `mmproj` is the matching multimodal
    projector, when the repository has one and it was requested.
    """

    repo: str
    files: list[str]
    paths: list[Path]
    mmproj: Path | None = None
    mmproj_file: str | None = None
    quant: str | None = None
    revision: str | None = None
    from_cache: bool = field(default=False, compare=False)

    @property
    def path(self) -> Path:
        """The first (or only) model file: what llama.cpp loads a split model from."""
        return self.paths[0]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``OWNER/NAME[:QUANT]`` into (repo, quant or None). ``hf://`` and hub URLs are accepted."""
    text = spec.strip()
    for prefix in _URL_PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
            break
    repo, sep, quant = text.partition(":")
    repo = repo.strip().strip("/")
    quant = quant.strip()
    if not _REPO_RE.match(repo):
        raise HubError(f"invalid Hugging Face model {spec!r}: expected OWNER/NAME or OWNER/NAME:QUANT")
    if sep and not quant:
        raise HubError(f"invalid Hugging Face model {spec!r}: empty quant after ':'")
    if quant and not re.fullmatch(r"[A-Za-z0-9._-]+", quant):
        raise HubError(f"invalid quant {quant!r} in {spec!r}")
    return repo, (quant or None)


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def console_choose(
    options: list[str], *, stream: TextIO | None = None, read: Callable[[str], str] = input
) -> str:
    """A terminal picker: numbered options on stderr, Enter takes the first (the default)."""
    out = stream if stream is not None else sys.stderr
    print("Several GGUF files match; choose one:", file=out)
    for i, opt in enumerate(options, 1):
        print(f"  {i:>2}) {opt}{'  [default]' if i == 1 else ''}", file=out)
    for _ in range(3):
        try:
            answer = read(f"choice [1-{len(options)}, Enter = 1]: ").strip()
        except EOFError:
            return options[0]
        if not answer:
            return options[0]
        if answer.isdigit() and 1 <= int(answer) <= len(options):
            return options[int(answer) - 1]
        if answer in options:
            return answer
        print(f"not a choice: {answer!r}", file=out)
    return options[0]


def _choose(candidates: Sequence[GGUFModelFiles], choose: Chooser | None) -> GGUFModelFiles:
    if len(candidates) == 1 or choose is None or not _stdin_is_tty():
        return candidates[0]
    labels = [c.label for c in candidates]
    picked = choose(labels)
    for c, label in zip(candidates, labels, strict=True):
        if picked in (label, c.first):
            return c
    raise HubError(f"the picker returned {picked!r}, which is not one of the offered files")


def _describe(repo_files: RepoGGUFFiles) -> str:
    quants = repo_files.quants()
    if quants:
        return "available quants: " + ", ".join(quants)
    return "available files: " + ", ".join(m.first for m in repo_files.models)


def _select(
    repo: str,
    all_files: Sequence[str],
    *,
    quant: str | None,
    file: str | None,
    choose: Chooser | None,
    where: str,
) -> tuple[GGUFModelFiles, RepoGGUFFiles]:
    repo_files = group_gguf_files(all_files)
    if file is not None:
        model = find_by_file(repo_files.models, file)
        if model is None:
            ggufs = [f for f in all_files if f.lower().endswith(".gguf")]
            listing = ", ".join(ggufs) if ggufs else "none"
            raise HubError(f"file {file!r} not found in {repo!r} ({where}); GGUF files there: {listing}")
    else:
        if not repo_files.models:
            raise HubError(f"repository {repo!r} has no GGUF model files ({where})")
        if quant is not None:
            candidates = match_quant(repo_files.models, quant)
            if not candidates:
                raise HubError(f"quant {quant!r} not found in {repo!r} ({where}); {_describe(repo_files)}")
            model = _choose(candidates, choose)
        elif len(repo_files.models) > 1 and choose is not None and _stdin_is_tty():
            model = _choose(preference_order(repo_files.models), choose)
        else:
            model = preferred_model(repo_files.models)
    if not model.complete:
        raise HubError(
            f"split model {model.first!r} in {repo!r} should have {model.split_count} shards but "
            f"{len(model.files)} are listed ({where})"
        )
    return model, repo_files


def list_gguf_models(
    repo: str,
    *,
    offline: bool | None = None,
    client: HubClient | None = None,
    revision: str | None = None,
) -> RepoGGUFFiles:
    """The GGUF models (shards grouped) and projectors of `repo`, from the Hub or, offline, the cache."""
    repo, _ = parse_spec(repo)
    hub = client if client is not None else HfHubClient()
    if offline if offline is not None else env_offline():
        cached = hub.cached_files(repo, revision=revision)
        if cached is None:
            raise HubError(f"offline mode: repository {repo!r} is not in the local Hugging Face cache")
        return group_gguf_files(cached[1])
    return group_gguf_files(hub.list_files(repo, revision=revision))


def resolve_model(
    spec: str,
    *,
    file: str | None = None,
    offline: bool | None = None,
    client: HubClient | None = None,
    choose: Chooser | None = None,
    progress: bool = True,
    revision: str | None = None,
    mmproj: bool = True,
) -> ResolvedModel:
    """Resolve a Hugging Face model to local GGUF files, downloading what is missing.

    `spec` is ``OWNER/NAME`` or ``OWNER/NAME:QUANT`` (quant case-insensitive, e.g. ``Q4_K_M``,
    ``q8_0``); `file` picks an exact file instead (a shard brings its whole set). Without either,
    the first of Q4_K_M > Q4_K_S > Q4_0 > Q5_K_M > Q8_0 in the repository is taken, else its first
    model. When several files match and `choose` is given and stdin is a terminal, ``choose`` gets
    the candidates' labels (the default first) and returns one of them.

    All shards of a split model are downloaded into the standard Hugging Face cache (with progress
    bars unless `progress` is false), plus the matching ``mmproj*.gguf`` projector when `mmproj`.
    `offline` (default: the HF_HUB_OFFLINE environment variable) resolves from the local cache
    only; when the Hub cannot be reached, the cache is used as well. The token comes from HF_TOKEN
    unless `client` says otherwise. Raises HubError with a clear message on any failure.
    """
    repo, quant = parse_spec(spec)
    if file is not None and quant is not None:
        raise HubError(f"give either a quant ({spec!r}) or a file ({file!r}), not both")
    hub = client if client is not None else HfHubClient()
    is_offline = offline if offline is not None else env_offline()

    if not is_offline:
        try:
            listing = hub.list_files(repo, revision=revision)
        except HubUnreachableError as exc:
            log.warning("%s; trying the local cache", exc)
            return _resolve_cached(
                repo,
                quant=quant,
                file=file,
                hub=hub,
                choose=choose,
                revision=revision,
                mmproj=mmproj,
                why=str(exc),
            )
        model, repo_files = _select(repo, listing, quant=quant, file=file, choose=choose, where="on the Hub")
        projector = best_mmproj(model, repo_files.mmproj) if mmproj else None
        wanted = [*model.files, *([projector] if projector else [])]
        paths = _download_all(hub, repo, wanted, revision=revision, progress=progress)
        return ResolvedModel(
            repo=repo,
            files=list(model.files),
            paths=paths[: len(model.files)],
            mmproj=paths[-1] if projector else None,
            mmproj_file=projector,
            quant=model.quant,
            revision=revision,
        )
    return _resolve_cached(
        repo, quant=quant, file=file, hub=hub, choose=choose, revision=revision, mmproj=mmproj, why=None
    )


def _resolve_cached(
    repo: str,
    *,
    quant: str | None,
    file: str | None,
    hub: HubClient,
    choose: Chooser | None,
    revision: str | None,
    mmproj: bool,
    why: str | None,
) -> ResolvedModel:
    reason = "offline mode (HF_HUB_OFFLINE)" if why is None else "the Hub is unreachable"
    cached = hub.cached_files(repo, revision=revision)
    if cached is None:
        rev = f" at revision {revision!r}" if revision else ""
        detail = f" ({why})" if why else ""
        raise HubError(f"{reason}: repository {repo!r}{rev} is not in the local Hugging Face cache{detail}")
    commit, files = cached
    model, repo_files = _select(
        repo, files, quant=quant, file=file, choose=choose, where="in the local cache"
    )
    projector = best_mmproj(model, repo_files.mmproj) if mmproj else None
    paths: list[Path] = []
    for name in model.files:
        path = hub.cached_path(repo, name, revision=commit)
        if path is None:
            raise HubError(f"{reason}: file {name!r} of {repo!r} is not in the local Hugging Face cache")
        paths.append(path)
    mm_path = hub.cached_path(repo, projector, revision=commit) if projector else None
    if projector and mm_path is None:
        log.warning("projector %s of %s is listed in the cache but missing; ignoring it", projector, repo)
        projector = None
    return ResolvedModel(
        repo=repo,
        files=list(model.files),
        paths=paths,
        mmproj=mm_path,
        mmproj_file=projector,
        quant=model.quant,
        revision=commit,
        from_cache=True,
    )


def _download_all(
    hub: HubClient, repo: str, files: Sequence[str], *, revision: str | None, progress: bool
) -> list[Path]:
    if not progress or len(files) == 1:
        return [hub.download(repo, f, revision=revision, progress=progress) for f in files]
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    paths: list[Path] = []
    with tqdm(total=len(files), desc=f"{repo}: files", unit="file") as bar:
        for f in files:
            bar.set_postfix_str(f.rsplit("/", 1)[-1])
            paths.append(hub.download(repo, f, revision=revision, progress=progress))
            bar.update(1)
    return paths
