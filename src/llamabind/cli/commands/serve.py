"""``llamabind serve``: the OpenAI-compatible server (continuous batching over ``--parallel`` slots)."""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from ..common import (
    UsageError,
    add_context_args,
    add_model_args,
    add_sampling_args,
    context_params,
    load_model,
    model_params,
    nonneg_int,
    positive_int,
    resolve_model_path,
    sampling_params,
)
from ._serve_limits import add_limit_args, limits_from_args
from ._serve_router import add_router_args, is_router, router_entries

DEFAULT_CTX_PER_SLOT = 4096


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server with continuous batching",
        description="Serve a chat UI at / and /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, "
        "/health, /tokenize, /detokenize, /metrics and /slots. --parallel N requests generate at once in one "
        "context (continuous batching); more wait in a queue of --max-queue, beyond which the server "
        "answers 503.",
    )
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    g.add_argument(
        "-np",
        "--parallel",
        type=positive_int,
        default=4,
        metavar="N",
        help="slots (concurrent requests, default 4)",
    )
    g.add_argument(
        "--max-queue",
        type=nonneg_int,
        default=64,
        metavar="N",
        help="requests that may wait for a slot; more get 503 (default 64)",
    )
    g.add_argument(
        "--api-key", action="append", default=[], metavar="KEY", help="accepted API key; repeatable"
    )
    g.add_argument("--api-key-file", metavar="FILE", help="file with one accepted API key per line")
    g.add_argument(
        "--model-alias", "-a", metavar="NAME", help="model name clients use (default: the file's stem)"
    )
    g.add_argument(
        "--strict-model-name",
        action="store_true",
        help="answer 404 to a request whose model is not the alias or the file's name (default: serve "
        "any name; responses name the alias)",
    )
    g.add_argument(
        "--chat-template",
        metavar="TEMPLATE",
        help="Jinja chat template, or a llama.cpp built-in name (chatml, llama3, …)",
    )
    g.add_argument("--chat-template-file", metavar="FILE", help="Jinja chat template file")
    g.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allowed CORS origin ('*': any); repeatable",
    )
    g.add_argument(
        "--reasoning-format",
        choices=["auto", "none"],
        default="auto",
        help="auto: split <think> blocks into reasoning_content; none: leave them in content",
    )
    g.add_argument(
        "-n",
        "--n-predict",
        type=int,
        default=-1,
        metavar="N",
        help="default max_tokens of a request that sets none (-1: until end of turn or slot context)",
    )
    g.add_argument(
        "--prefill-chunk",
        type=positive_int,
        default=512,
        metavar="N",
        help="prompt tokens decoded per step (smaller keeps running streams smoother)",
    )
    g.add_argument(
        "--embeddings-ctx",
        type=positive_int,
        default=2048,
        metavar="N",
        help="longest embeddings input in tokens",
    )
    g.add_argument(
        "--no-webui", action="store_true", help="do not serve the chat UI at / (the API is unchanged)"
    )
    g.add_argument(
        "--engine",
        choices=["process", "thread"],
        default="process",
        help="process (default): the model runs in a supervised child process, so a llama.cpp crash "
        "or hang fails only the requests running in it and the engine restarts; thread: in the "
        "server process (needed for --mmproj)",
    )
    g.add_argument(
        "--watchdog-timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="engine process: a decode step or request preparation running longer than S seconds "
        "kills and restarts the engine (default 120)",
    )
    g.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="on SIGTERM/Ctrl-C: seconds open requests get to finish before they are cancelled "
        "and the engine is stopped (default 10)",
    )
    g.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    pc = p.add_argument_group("prompt cache (conversations that lost their slot skip their prefill)")
    pc.add_argument(
        "--cache-ram",
        type=int,
        default=-1,
        metavar="MiB",
        help="host memory for saved slot states (-1: 8192 MiB but at most half the available memory; 0: off)",
    )
    pc.add_argument(
        "--cache-disk",
        metavar="DIR",
        default=None,
        help="persistent prompt cache directory: states survive restarts (a long system prompt is "
        "decoded once per deployment)",
    )
    pc.add_argument(
        "--cache-disk-max",
        type=positive_int,
        default=10240,
        metavar="MiB",
        help="size bound of --cache-disk (default 10240 MiB; least recently used files go)",
    )
    pc.add_argument(
        "--slot-save-path",
        metavar="DIR",
        default=None,
        help="directory for POST /slots/{id}?action=save|restore (file names only)",
    )
    sp = p.add_argument_group("speculative decoding (per slot; greedy output unchanged)")
    sp.add_argument(
        "--spec",
        choices=["ngram", "draft", "mtp"],
        default=None,
        help="draft tokens by n-gram lookup, a draft model (--draft) or the model's MTP heads",
    )
    sp.add_argument("--draft", metavar="MODEL", default=None, help="draft model GGUF (implies --spec draft)")
    sp.add_argument(
        "-ngld",
        "--n-gpu-layers-draft",
        type=int,
        default=None,
        metavar="N",
        help="layers of the draft model to offload",
    )
    sp.add_argument(
        "--n-draft", type=positive_int, default=8, metavar="N", help="most tokens drafted per step"
    )
    sp.add_argument(
        "--spec-p-min",
        type=float,
        default=0.0,
        metavar="P",
        help="stop a draft at a token less probable than P (draft/MTP)",
    )
    sp.add_argument(
        "--spec-ngram-min", type=positive_int, default=2, metavar="N", help="shortest n-gram matched"
    )
    sp.add_argument(
        "--spec-ngram-max", type=positive_int, default=4, metavar="N", help="longest n-gram matched"
    )
    m = p.add_argument_group("multimodal (images and audio)")
    m.add_argument(
        "--mmproj",
        metavar="PATH",
        help="multimodal projector GGUF (default: an mmproj-*.gguf beside the model)",
    )
    m.add_argument("--no-mmproj", action="store_true", help="do not load a projector even if one is found")
    m.add_argument("--no-mmproj-offload", action="store_true", help="run the projector on the CPU")
    m.add_argument(
        "--allow-remote-media",
        action="store_true",
        help="fetch http(s) image URLs (size-limited, private/loopback addresses refused); "
        "off: only data: URLs and uploaded file ids",
    )
    m.add_argument(
        "--media-max-bytes",
        type=positive_int,
        default=20 << 20,
        metavar="N",
        help="largest image/audio input",
    )
    m.add_argument(
        "--files-max-bytes", type=positive_int, default=20 << 20, metavar="N", help="largest /v1/files upload"
    )
    add_limit_args(p)
    add_router_args(p)
    add_model_args(p)
    add_context_args(p, n_ctx=0)
    add_sampling_args(p, temp=0.8)
    p.set_defaults(func=run)


def _api_keys(args: argparse.Namespace) -> list[str]:
    for k in args.api_key:
        if not k.strip():
            raise UsageError("--api-key must not be empty (omit the flag to serve without authentication)")
    keys = [k.strip() for k in args.api_key]
    if args.api_key_file:
        path = Path(args.api_key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--api-key-file {path}: {exc}") from None
        keys += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not keys:
            raise UsageError(f"--api-key-file {path} holds no key")
    return keys


def build_config(args: argparse.Namespace) -> Any:
    """The ServerConfig the flags describe (``--ctx-size`` is the total over all slots, as in llama.cpp;
    0 gives each slot 4096 tokens)."""
    from ...batching import SchedulerConfig
    from ...server import ServerConfig

    cp = context_params(args)
    parallel = args.parallel
    if args.ctx_size:
        per_slot = args.ctx_size // parallel
        if per_slot < 16:
            raise UsageError(
                f"--ctx-size {args.ctx_size} leaves {per_slot} tokens per slot for --parallel {parallel}"
            )
    else:
        per_slot = DEFAULT_CTX_PER_SLOT
    if args.chat_template and args.chat_template_file:
        raise UsageError("give either --chat-template or --chat-template-file, not both")
    spec = args.spec
    if args.draft:
        if spec not in (None, "draft"):
            raise UsageError(f"--draft goes with --spec draft, not --spec {spec}")
        if not Path(args.draft).expanduser().is_file():
            raise UsageError(f"draft model not found: {args.draft}")
        spec = "draft"
    elif spec == "draft":
        raise UsageError("--spec draft needs --draft MODEL")
    if not 0.0 <= args.spec_p_min <= 1.0:
        raise UsageError("--spec-p-min must be in [0, 1]")
    if args.spec_ngram_min > args.spec_ngram_max:
        raise UsageError("--spec-ngram-min must not exceed --spec-ngram-max")
    sched = SchedulerConfig(
        spec=spec,
        n_draft=args.n_draft,
        spec_p_min=args.spec_p_min,
        spec_ngram_min=args.spec_ngram_min,
        spec_ngram_max=args.spec_ngram_max,
        parallel=parallel,
        ctx_per_slot=per_slot,
        n_batch=cp.n_batch,
        n_ubatch=cp.n_ubatch,
        prefill_chunk=min(args.prefill_chunk, cp.n_batch),
        max_queue=args.max_queue,
        n_threads=cp.n_threads,
        n_threads_batch=cp.n_threads_batch,
        type_k=str(cp.type_k),
        type_v=str(cp.type_v),
        attn_rotation=cp.attn_rotation,
        flash_attn=str(cp.flash_attn),
        cache_ram_bytes=None if args.cache_ram < 0 else args.cache_ram << 20,
        cache_disk_dir=str(Path(args.cache_disk).expanduser()) if args.cache_disk else None,
        cache_disk_max_bytes=args.cache_disk_max << 20,
        slot_save_path=str(Path(args.slot_save_path).expanduser()) if args.slot_save_path else None,
    )
    return ServerConfig(
        model_alias=args.model_alias,
        strict_model_name=args.strict_model_name,
        api_keys=_api_keys(args),
        cors_origins=list(args.cors_origin),
        chat_template=args.chat_template,
        chat_template_file=args.chat_template_file,
        reasoning=args.reasoning_format != "none",
        scheduler=sched,
        sampling=sampling_params(args),
        max_tokens=None if args.n_predict < 0 else args.n_predict,
        embeddings_n_ctx=args.embeddings_ctx,
        mmproj_use_gpu=not args.no_mmproj_offload,
        allow_remote_media=args.allow_remote_media,
        media_max_bytes=args.media_max_bytes,
        files_max_bytes=args.files_max_bytes,
        draft_model=str(Path(args.draft).expanduser()) if args.draft else None,
        draft_n_gpu_layers=args.n_gpu_layers_draft,
        webui=not args.no_webui,
        limits=limits_from_args(args),
    )


def projector_path(args: argparse.Namespace, model_path: Path) -> str | None:
    """--mmproj, else the projector --hf resolved, else an mmproj-*.gguf beside the model (not with
    --no-mmproj)."""
    if args.mmproj and args.no_mmproj:
        raise UsageError("give either --mmproj or --no-mmproj, not both")
    if args.no_mmproj:
        return None
    from ...multimodal import find_mmproj

    if args.mmproj and not Path(args.mmproj).expanduser().is_file():
        raise UsageError(f"projector file not found: {args.mmproj}")
    mmproj = args.mmproj or getattr(args, "resolved_mmproj", None) or find_mmproj(model_path)
    return str(Path(mmproj).expanduser()) if mmproj else None


def _shutdown_requested(_sig: int, _frame: Any) -> None:
    """The handler uvicorn re-raises its captured signal under after a graceful shutdown."""


def _engine_model(args: argparse.Namespace, load_mtp: bool) -> Any:
    """The engine process's model (``--lora`` adapters ride along as ``model.cli_loras``)."""
    return load_model(args, load_mtp=load_mtp)


def _vocab_model(args: argparse.Namespace) -> Any:
    """The server process's vocab-only model (tokenization, chat templates, token pieces)."""
    return load_model(argparse.Namespace(**{**vars(args), "lora": []}), vocab_only=True)


def run(args: argparse.Namespace) -> int:

    from ...server import create_app

    config = build_config(args)
    if is_router(args):
        return _run_router(args, config)
    if args.models_max is not None or args.models_ttl is not None:
        raise UsageError("--models-max and --models-ttl go with --models-dir or --models-preset")
    path = resolve_model_path(args)  # resolve (and download) before the port opens
    args.model, args.hf = str(path), None
    config.mmproj = projector_path(args, path)
    if args.watchdog_timeout <= 0 or args.shutdown_timeout < 0:
        raise UsageError("--watchdog-timeout must be positive and --shutdown-timeout not negative")
    config.watchdog_timeout = args.watchdog_timeout
    config.shutdown_timeout = args.shutdown_timeout
    load_mtp = config.scheduler.spec == "mtp"
    if args.engine == "process" and config.mmproj:
        logging.getLogger("llamabind.server").warning(
            "the multimodal projector runs in the server process: using --engine thread"
        )
        args.engine = "thread"
    config.engine = args.engine
    loader: Any
    if args.engine == "process":
        loader = functools.partial(_engine_model, args, load_mtp)
        config.vocab_loader = functools.partial(_vocab_model, args)
    else:

        def loader() -> Any:
            model = load_model(args, load_mtp=load_mtp)
            config.loras = list(getattr(model, "cli_loras", []))
            return model

    app = create_app(loader, config)
    if config.api_keys:
        auth = f"{len(config.api_keys)} API key(s)"
    else:
        auth = "no API key"
    print(
        f"llamabind serve: {path.name} on http://{args.host}:{args.port}/v1 "
        f"(--parallel {config.scheduler.parallel}, {config.scheduler.ctx_per_slot} tokens per slot, {auth}"
        + (f", projector {Path(config.mmproj).name}" if config.mmproj else "")
        + f", engine {'process' if config.engine == 'process' else 'in-process thread'})",
        file=sys.stderr,
    )
    _serve(app, args)
    return 0


def _run_router(args: argparse.Namespace, config: Any) -> int:
    """Serve the models of --models-dir / --models-preset (and -m), each loaded on first use."""
    from ...server import create_app

    if args.watchdog_timeout <= 0 or args.shutdown_timeout < 0:
        raise UsageError("--watchdog-timeout must be positive and --shutdown-timeout not negative")
    cli_path: Path | None = None
    mmproj = None
    if args.model or args.hf:
        cli_path = resolve_model_path(args)
        mmproj = projector_path(args, cli_path)
    elif args.mmproj or args.draft or args.lora:
        raise UsageError("--mmproj, --draft and --lora apply to -m: give the model, or set them in a preset")
    entries = router_entries(args, cli_path, mmproj)
    config.watchdog_timeout = args.watchdog_timeout
    config.shutdown_timeout = args.shutdown_timeout
    config.engine = args.engine
    config.model_alias, config.chat_template, config.chat_template_file = None, None, None
    config.draft_model = None
    config.models_max = args.models_max
    config.models_ttl = args.models_ttl
    config.model_params = model_params(args, load_mtp=config.scheduler.spec == "mtp")
    app = create_app(None, config, models=entries)
    auth = f"{len(config.api_keys)} API key(s)" if config.api_keys else "no API key"
    limit = f"at most {args.models_max} loaded" if args.models_max else "no load limit"
    print(
        f"llamabind serve: {len(entries)} models ({', '.join(e.name for e in entries)}; {limit}) "
        f"on http://{args.host}:{args.port}/v1 ({auth}, engine {config.engine})",
        file=sys.stderr,
    )
    _serve(app, args)
    return 0


def _serve(app: Any, args: argparse.Namespace) -> None:
    import uvicorn

    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal under the
    # handlers it found: make those no-ops, so a requested shutdown exits 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _shutdown_requested)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=args.shutdown_timeout,  # then open streams are cancelled
    )
