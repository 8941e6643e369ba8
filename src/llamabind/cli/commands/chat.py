"""``llamabind chat``: an interactive chat on the model's own template, history kept in the KV cache.

Each turn goes through :func:`llamabind.chat.chat_stream` (the library's one chat path): the
reply's ``<think>`` block is split off as reasoning (shown dimmed on a terminal, on stderr when
piped) and only the answer joins the conversation history.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...chat import ChatTemplate, chat_stream, model_chat_template
from ...core import Context, Model
from ...generation.generator import Generator
from ...generation.sampling import SamplingParams
from ..common import (
    UsageError,
    add_context_args,
    add_model_args,
    add_sampling_args,
    apply_loras,
    context_params,
    load_model,
    sampling_params,
)

HELP = """commands:
  /clear          forget the conversation (keeps the system prompt)
  /system TEXT    set the system prompt (and clear)
  /save FILE      save the conversation (FILE) and the KV cache (FILE.kv)
  /load FILE      load a conversation saved with /save
  /help           this text
  /exit           quit (or Ctrl-D)
Ctrl-C during a reply stops it; end a line with \\ to continue on the next line."""


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "chat",
        help="interactive chat with the model",
        description="Chat with the model using its own chat template. The conversation stays in the KV "
        "cache between turns, so only new text is decoded. Works on a terminal (line editing, history) "
        "and piped (one user message per line).",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-s", "--system", default=None, help="system prompt")
    p.add_argument("-n", "--n-predict", type=int, default=512, metavar="N", help="max tokens per reply")
    p.add_argument(
        "--chat-template", default=None, help="Jinja template text or a builtin name (chatml, llama3…)"
    )
    p.add_argument("--chat-template-file", default=None, help="read the chat template from a file")
    p.add_argument("--no-timings", action="store_true", help="do not print the timing line after replies")
    add_model_args(p)
    add_context_args(p)
    add_sampling_args(p, temp=0.8)
    p.set_defaults(func=run)


@dataclass(frozen=True)
class ReplyPiece:
    """A piece of a streamed reply: answer text, or reasoning (``reasoning=True``)."""

    text: str
    reasoning: bool = False


class ChatSession:
    """The REPL's state: messages, the template, the generator (whose cache mirrors the KV)."""

    def __init__(
        self, model: Model, ctx: Context, args: argparse.Namespace, sampling: SamplingParams
    ) -> None:
        self.model = model
        self.ctx = ctx
        self.gen = Generator(ctx)
        self.template: ChatTemplate | None = (
            model_chat_template(model, template=args.chat_template, template_file=args.chat_template_file)
            if args.chat_template or args.chat_template_file
            else None  # the model's own template (chat_stream's cached formatter)
        )
        self.system: str | None = args.system
        self.messages: list[dict[str, Any]] = []
        self.sampling = sampling
        self.max_tokens = None if args.n_predict < 0 else args.n_predict
        self.show_timings = not args.no_timings

    def conversation(self) -> list[dict[str, Any]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.messages

    def clear(self) -> None:
        self.messages = []

    def reply(self, text: str, cancel: threading.Event) -> Iterator[ReplyPiece]:
        """Stream the reply to ``text``; its answer (not its reasoning) joins the history."""
        self.messages.append({"role": "user", "content": text})
        parts: list[str] = []
        try:
            for chunk in chat_stream(
                self.gen,
                self.conversation(),
                template=self.template,
                max_tokens=self.max_tokens,
                sampling=self.sampling,
                cancel=cancel,
            ):
                for d in chunk.deltas:
                    if d.reasoning_content:
                        yield ReplyPiece(d.reasoning_content, reasoning=True)
                    if d.content:
                        parts.append(d.content)
                        yield ReplyPiece(d.content)
        finally:
            # a reply cut by Ctrl-C stays in the history, as far as it got
            self.messages.append({"role": "assistant", "content": "".join(parts)})

    def timing_line(self) -> str:
        t = self.gen.last_timings
        return (
            f"[ttft {t.ttft_ms:.0f} ms · {t.generation_tps:.1f} tok/s · {t.generated_tokens} tokens · "
            f"prompt {t.prompt_tokens} new + {t.cached_tokens} cached]"
        )

    def save(self, path: Path) -> None:
        path.write_text(
            json.dumps({"system": self.system, "messages": self.messages}, ensure_ascii=False, indent=1),
            encoding="utf-8",
        )
        self.ctx.state.save(path.with_name(path.name + ".kv"), self.gen.cached)

    def load(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise ValueError(f"{path} is not a saved llamabind conversation")
        self.system = data.get("system")
        self.messages = list(data["messages"])
        kv = path.with_name(path.name + ".kv")
        if kv.is_file():
            self.gen.cached = self.ctx.state.load(kv)
        else:
            self.gen.reset()


def _read_input(session: Any, tty: bool) -> str | None:
    """One user message (None at EOF). A trailing backslash continues on the next line."""
    lines: list[str] = []
    prompt = "you> "
    while True:
        if tty:
            try:
                line = session.prompt(prompt)
            except EOFError:
                return None if not lines else "\n".join(lines)
        else:
            raw = sys.stdin.readline()
            if not raw:
                return None if not lines else "\n".join(lines)
            line = raw.rstrip("\n")
        if line.endswith("\\"):
            lines.append(line[:-1])
            prompt = "...> "
            continue
        lines.append(line)
        return "\n".join(lines)


def _command(chat: ChatSession, text: str) -> bool:
    """Handle a /command; False means exit."""
    cmd, _, arg = text.partition(" ")
    arg = arg.strip()
    if cmd in ("/exit", "/quit"):
        return False
    if cmd == "/clear":
        chat.clear()
        print("(conversation cleared)")
    elif cmd == "/system":
        chat.system = arg or None
        chat.clear()
        print("(system prompt set; conversation cleared)" if arg else "(system prompt removed)")
    elif cmd in ("/save", "/load"):
        if not arg:
            print(f"usage: {cmd} FILE")
        else:
            try:
                (chat.save if cmd == "/save" else chat.load)(Path(arg).expanduser())
                print(f"({'saved to' if cmd == '/save' else 'loaded'} {arg})")
            except (OSError, ValueError) as exc:
                print(f"error: {exc}")
    elif cmd == "/help":
        print(HELP)
    else:
        print(f"unknown command {cmd}; /help lists them")
    return True


def _write_piece(piece: ReplyPiece, tty: bool) -> None:
    """Answer text to stdout; reasoning dimmed on a terminal, to stderr when piped."""
    if not piece.reasoning:
        out = sys.stdout
        out.write(piece.text)
    elif tty:
        out = sys.stdout
        out.write(f"\x1b[2m{piece.text}\x1b[0m")
    else:
        out = sys.stderr
        out.write(piece.text)
    out.flush()


def run(args: argparse.Namespace) -> int:
    if args.chat_template and args.chat_template_file:
        raise UsageError("give either --chat-template or --chat-template-file")
    sampling = sampling_params(args)
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    with load_model(args) as model, Context(model, context_params(args)) as ctx:
        apply_loras(model, ctx)
        chat = ChatSession(model, ctx, args, sampling)
        session: Any = None
        if tty:
            from prompt_toolkit import PromptSession

            session = PromptSession()
            print(f"llamabind chat — {model.name} ({model.description}); /help for commands, Ctrl-D to quit")
        while True:
            try:
                text = _read_input(session, tty)
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt clears the line
            if text is None:
                break
            if not text.strip():
                continue
            if text.startswith("/"):
                if not _command(chat, text.strip()):
                    break
                continue
            cancel = threading.Event()
            try:
                for piece in chat.reply(text, cancel):
                    _write_piece(piece, tty)
            except KeyboardInterrupt:
                cancel.set()
                sys.stdout.write(" [stopped]")
            sys.stdout.write("\n")
            if chat.show_timings and tty:
                print(chat.timing_line())
            elif chat.show_timings:
                print(chat.timing_line(), file=sys.stderr)
            sys.stdout.flush()
    return 0
