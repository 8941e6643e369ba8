"""``llamabind models list|pull|rm``: the local models a user has (the Hugging Face cache and a
``--models-dir``), with their sizes and quant types; download one, or remove one from the cache."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..common import UsageError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "models",
        help="list, download and remove local models (Hugging Face cache, --models-dir)",
        description="Manage local GGUF models: those in the Hugging Face cache (HF_HUB_CACHE / HF_HOME) "
        "and those of a models directory (what `llamabind serve --models-dir` serves).",
    )
    s = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="list local models with their sizes and quant types")
    ls.add_argument("--models-dir", metavar="DIR", help="also list the models of DIR")
    ls.add_argument("--no-cache", action="store_true", help="do not list the Hugging Face cache")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run_list)
    pull = s.add_parser("pull", help="download REPO[:QUANT] from the Hugging Face Hub into the cache")
    pull.add_argument("spec", metavar="REPO[:QUANT]")
    pull.add_argument("--hf-file", metavar="FILE", help="an exact file of the repository instead of a quant")
    pull.set_defaults(func=run_pull)
    rm = s.add_parser("rm", help="remove REPO (every file) or REPO:QUANT from the Hugging Face cache")
    rm.add_argument("spec", metavar="REPO[:QUANT]")
    rm.add_argument("-n", "--dry-run", action="store_true", help="only say what would be removed")
    rm.set_defaults(func=run_rm)


@dataclass
class LocalModel:
    name: str  # REPO:QUANT for the cache, the router's name for a models directory
    quant: str | None
    size: int  # bytes, every shard
    path: str  # the first (or only) file
    source: str  # "hf-cache" or "models-dir"
    files: int = 1
    mmproj: str | None = None


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _cache_info() -> Any:
    """huggingface_hub's scan of the cache (None when there is no cache)."""
    from huggingface_hub import scan_cache_dir

    from ...hub import default_cache_dir

    cache = default_cache_dir()
    if not cache.is_dir():
        return None
    return scan_cache_dir(cache)


def cache_models() -> list[LocalModel]:
    """The GGUF models of the Hugging Face cache (one per repository and quant, newest revision)."""
    from ...hub import group_gguf_files

    info = _cache_info()
    if info is None:
        return []
    out: list[LocalModel] = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model":
            continue
        files: dict[str, Any] = {}
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified):
            for f in rev.files:
                files[str(f.file_path.relative_to(rev.snapshot_path))] = f
        grouped = group_gguf_files(files)
        for m in grouped.models:
            present = [files[p] for p in m.files if p in files]
            if len(present) != len(m.files) or not m.complete:
                continue  # a partial download
            name = f"{repo.repo_id}:{m.quant}" if m.quant else f"{repo.repo_id}:{m.first}"
            out.append(
                LocalModel(
                    name=name,
                    quant=m.quant,
                    size=sum(f.size_on_disk for f in present),
                    path=str(present[0].file_path),
                    source="hf-cache",
                    files=len(present),
                )
            )
    return out


def dir_models(directory: str) -> list[LocalModel]:
    from ...hub import quant_tag
    from ...server.model_registry import scan_models_dir, shard_files

    try:
        entries = scan_models_dir(directory)
    except ValueError as exc:
        raise UsageError(f"--models-dir: {exc}") from None
    out = []
    for e in entries:
        assert e.path is not None
        shards = [p for p in shard_files(e.path) if p.is_file()]
        out.append(
            LocalModel(
                name=e.name,
                quant=quant_tag(e.path.name),
                size=sum(p.stat().st_size for p in shards),
                path=str(e.path),
                source="models-dir",
                files=len(shards),
                mmproj=Path(e.mmproj).name if e.mmproj else None,
            )
        )
    return out


def run_list(args: argparse.Namespace) -> int:
    models: list[LocalModel] = []
    if not args.no_cache:
        models += cache_models()
    if args.models_dir:
        models += dir_models(args.models_dir)
    if args.json:
        print(json.dumps([asdict(m) for m in models], indent=2))
        return 0
    if not models:
        print("no local models", file=sys.stderr)
        return 0
    width = max(len(m.name) for m in models)
    print(f"{'NAME':<{width}}  {'QUANT':<8}  {'SIZE':>9}  SOURCE      PATH")
    for m in models:
        extra = f" (+ {m.mmproj})" if m.mmproj else ""
        shards = f" [{m.files} shards]" if m.files > 1 else ""
        print(
            f"{m.name:<{width}}  {m.quant or '-':<8}  {human_size(m.size):>9}  {m.source:<10}  "
            f"{m.path}{shards}{extra}"
        )
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from ...hub import console_choose, resolve_model

    choose = console_choose if sys.stdin.isatty() and sys.stderr.isatty() else None
    resolved = resolve_model(args.spec, file=args.hf_file, choose=choose)
    size = sum(p.stat().st_size for p in resolved.paths)
    print(f"{resolved.repo}:{resolved.quant or resolved.files[0]}  {human_size(size)}  {resolved.path}")
    if resolved.mmproj is not None:
        print(f"  projector {resolved.mmproj}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    """Remove a repository (every revision) or one quant's files from the cache."""
    from ...hub import parse_spec, quant_tag

    repo_id, quant = parse_spec(args.spec)
    info = _cache_info()
    repo = next((r for r in (info.repos if info else ()) if r.repo_id == repo_id), None)
    if repo is None:
        raise UsageError(f"{repo_id} is not in the Hugging Face cache")
    if quant is None:
        strategy = info.delete_revisions(*(r.commit_hash for r in repo.revisions))
        print(
            f"{'would remove' if args.dry_run else 'removing'} {repo_id} ({strategy.expected_freed_size_str})"
        )
        if not args.dry_run:
            strategy.execute()
        return 0
    victims = [
        f
        for rev in repo.revisions
        for f in rev.files
        if f.file_name.lower().endswith(".gguf")
        and (quant_tag(str(f.file_path.relative_to(rev.snapshot_path))) or "").upper() == quant.upper()
    ]
    if not victims:
        raise UsageError(f"no {quant} files of {repo_id} in the Hugging Face cache")
    kept_blobs = {
        f.blob_path for rev in repo.revisions for f in rev.files if f not in victims and f.blob_path
    }
    freed = sum(f.size_on_disk for f in victims if f.blob_path not in kept_blobs)
    print(
        f"{'would remove' if args.dry_run else 'removing'} {len(victims)} file(s) of {repo_id}:{quant.upper()} "
        f"({human_size(freed)})"
    )
    if args.dry_run:
        return 0
    for f in victims:
        Path(f.file_path).unlink(missing_ok=True)
        if f.blob_path not in kept_blobs:
            Path(f.blob_path).unlink(missing_ok=True)
    return 0
