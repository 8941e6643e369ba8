"""``llamabind mtmd``: ask the model about images and audio (a multimodal projector, ``--mmproj``)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

from ...chat import model_chat_template
from ...core import Context
from ...multimodal import Bitmap, MediaGenerator, MtmdContext, find_mmproj, render_media_chat
from ..common import (
    UsageError,
    add_context_args,
    add_model_args,
    add_sampling_args,
    apply_loras,
    context_params,
    load_model,
    positive_int,
    sampling_params,
)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "mtmd",
        help="ask about images and audio (multimodal projector)",
        description="Send images and/or audio with a prompt to a model with a multimodal projector "
        "(mmproj) and stream the reply. Put the media marker (<__media__>) in the prompt where each "
        "medium goes (images first, then audio, in the order given); without markers the media come "
        "before the prompt.",
    )
    p.add_argument(
        "--mmproj", metavar="PATH", help="projector GGUF (default: an mmproj-*.gguf beside the model)"
    )
    p.add_argument(
        "--image",
        metavar="FILE",
        action="append",
        default=[],
        help="image file (PNG, JPEG, GIF, BMP); repeatable",
    )
    p.add_argument(
        "--audio", metavar="FILE", action="append", default=[], help="audio file (WAV, MP3, FLAC); repeatable"
    )
    p.add_argument("-p", "--prompt", default=None, help="the prompt text")
    p.add_argument("-s", "--system", default=None, help="system prompt")
    p.add_argument(
        "-n",
        "--n-predict",
        type=int,
        default=256,
        metavar="N",
        help="tokens to generate (-1: until end of turn)",
    )
    p.add_argument("--raw", action="store_true", help="use the prompt as is, without the chat template")
    p.add_argument(
        "--chat-template", default=None, help="Jinja template text or a builtin name (chatml, llama3…)"
    )
    p.add_argument("--chat-template-file", default=None, help="read the chat template from a file")
    p.add_argument(
        "--no-mmproj-offload",
        action="store_true",
        help="run the projector on the CPU even when a GPU is present",
    )
    p.add_argument(
        "--no-warmup", action="store_true", help="skip the projector's warm-up encode at load time"
    )
    p.add_argument("--image-min-tokens", type=positive_int, default=None, metavar="N")
    p.add_argument("--image-max-tokens", type=positive_int, default=None, metavar="N")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object with the reply, chunks and timings"
    )
    add_model_args(p)
    add_context_args(p)
    add_sampling_args(p, temp=0.0)
    p.set_defaults(func=run)


def _projector_path(args: argparse.Namespace, model_path: Path) -> Path:
    if args.mmproj:
        path = Path(args.mmproj).expanduser()
        if not path.is_file():
            raise UsageError(f"projector file not found: {path}")
        return path
    resolved = getattr(args, "resolved_mmproj", None)
    if resolved:
        return Path(resolved)
    found = find_mmproj(model_path)
    if found is None:
        raise UsageError(
            f"no multimodal projector: give --mmproj PATH (no mmproj-*.gguf beside {model_path.name})"
        )
    return found


def _with_markers(prompt: str, marker: str, n_media: int) -> str:
    n = prompt.count(marker)
    if n == 0:
        return "".join(f"{marker}\n" for _ in range(n_media)) + prompt
    if n != n_media:
        raise UsageError(
            f"the prompt has {n} media marker(s) {marker!r} but {n_media} --image/--audio file(s)"
        )
    return prompt


def run(args: argparse.Namespace) -> int:
    if args.prompt is None:
        if sys.stdin.isatty():
            raise UsageError("no prompt: use -p TEXT (or pipe it on stdin)")
        args.prompt = sys.stdin.read()
    if not args.image and not args.audio:
        raise UsageError("give at least one --image or --audio file")
    for f in [*args.image, *args.audio]:
        if not Path(f).is_file():
            raise UsageError(f"media file not found: {f}")
    sp = sampling_params(args)
    with load_model(args) as model:
        proj = _projector_path(args, model.path)
        with MtmdContext(
            model,
            proj,
            use_gpu=not args.no_mmproj_offload,
            n_threads=args.threads,
            warmup=not args.no_warmup,
            image_min_tokens=args.image_min_tokens,
            image_max_tokens=args.image_max_tokens,
        ) as mtmd:
            media: list[Bitmap] = []
            try:
                media.extend(mtmd.image_from_file(f) for f in args.image)
                media.extend(mtmd.audio_from_file(f) for f in args.audio)
                text = _with_markers(args.prompt, mtmd.marker, len(media))
                if args.raw:
                    rendered, add_special = text, True
                else:
                    template = model_chat_template(
                        model, template=args.chat_template, template_file=args.chat_template_file
                    )
                    messages: list[dict[str, Any]] = []
                    if args.system:
                        messages.append({"role": "system", "content": args.system})
                    messages.append({"role": "user", "content": text})
                    rendered, _, add_special = render_media_chat(model, mtmd, messages, template=template)
                prompt = mtmd.tokenize(rendered, media, add_special=add_special, parse_special=True)
            finally:
                for b in media:
                    b.close()
            with prompt, Context(model, context_params(args)) as ctx:
                apply_loras(model, ctx)
                gen = MediaGenerator(ctx, mtmd)
                cancel = threading.Event()
                out: list[str] = []
                finish = "length"
                try:
                    for chunk in gen.stream(
                        prompt,
                        max_tokens=None if args.n_predict < 0 else args.n_predict,
                        sampling=sp,
                        cancel=cancel,
                    ):
                        out.append(chunk.text)
                        if not args.json and chunk.text:
                            sys.stdout.write(chunk.text)
                            sys.stdout.flush()
                        if chunk.finish_reason:
                            finish = chunk.finish_reason
                except KeyboardInterrupt:
                    finish = "cancelled"
                t = gen.last_timings
                if args.json:
                    print(
                        json.dumps(
                            {
                                "text": "".join(out),
                                "finish_reason": finish,
                                "projector": str(proj),
                                "modalities": list(mtmd.modalities),
                                "chunks": [
                                    {"type": c.type, "n_tokens": c.n_tokens, "n_pos": c.n_pos}
                                    for c in prompt.chunks
                                ],
                                "prompt_tokens": prompt.n_tokens,
                                "completion_tokens": t.generated_tokens,
                                "timings": {
                                    "prompt_ms": round(t.prompt_ms, 3),
                                    "generation_ms": round(t.generation_ms, 3),
                                    "ttft_ms": round(t.ttft_ms, 3),
                                },
                            },
                            ensure_ascii=False,
                        )
                    )
                else:
                    sys.stdout.write("\n")
    return 0
