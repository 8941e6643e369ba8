"""``llamabind incremental-chat``: a full-screen chat that decodes your message while you type it."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ...chat import model_chat_template
from ...core import Context
from ...generation.sampling import SamplingParams
from ...incremental import IncrementalChat
from ..common import (
    add_context_args,
    add_model_args,
    add_sampling_args,
    apply_loras,
    context_params,
    load_model,
    nonneg_int,
    positive_int,
    sampling_params,
)

KEYS = """keys:
  Enter            send the message (the prompt is mostly decoded already)
  Alt-Enter        new line
  ←/→/↑/↓ Home End move the cursor; edits anywhere re-decode only from the change
  Ctrl-W / Ctrl-U / Ctrl-K   delete word / to line start / to line end
  Ctrl-C           stop a reply; twice while typing to quit (or Ctrl-D on an empty line)"""


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "incremental-chat",
        help="chat that prefills your message while you type (instant replies)",
        description="A full-screen chat. While you type, the message is decoded into the KV cache "
        "(debounced; the last 2 tokens are held back because the next keystroke may change them), "
        "so at Enter only a few tokens are left to decode before the reply starts. The system prompt "
        "is decoded once (and with --session-cache kept on disk); the conversation stays in the cache, "
        "oldest turns evicted when it fills.",
        epilog=KEYS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-s", "--system-prompt", default=None, help="system prompt")
    p.add_argument(
        "-n", "--n-predict", type=positive_int, default=256, metavar="N", help="max tokens per reply"
    )
    p.add_argument(
        "--debounce-ms",
        type=nonneg_int,
        default=150,
        metavar="MS",
        help="prefill after this pause (default 150)",
    )
    p.add_argument(
        "--keep-turns",
        type=nonneg_int,
        default=0,
        metavar="N",
        help="when the context fills, keep at most the N latest turns (0: evict only what is needed)",
    )
    p.add_argument(
        "--session-cache",
        metavar="FILE",
        help="save the decoded system prompt here and restore it on restart",
    )
    p.add_argument("--margin", type=nonneg_int, default=2, metavar="N", help="tokens withheld while typing")
    p.add_argument("--chat-template", default=None, help="Jinja template text or a builtin name")
    p.add_argument("--plain", action="store_true", help="no full-screen UI: one message per input line")
    add_model_args(p)
    add_context_args(p)
    add_sampling_args(p, temp=0.8)
    p.set_defaults(func=run)


def _stats_line(chat: IncrementalChat) -> str:
    t = chat.last_timings
    return (
        f"TTFT {t.ttft_ms:.0f} ms · {t.generation_tps:.1f} tok/s · {t.generated_tokens} tokens · "
        f"{t.prompt_tokens} decoded at Enter, {t.cached_tokens} already cached · "
        f"ctx {chat.n_cached}/{chat.n_ctx}"
    )


def run(args: argparse.Namespace) -> int:
    sp = sampling_params(args)
    with load_model(args) as model:
        template = None
        if args.chat_template:
            template = model_chat_template(model, template=args.chat_template)
        with Context(model, context_params(args)) as ctx:
            apply_loras(model, ctx)
            chat = IncrementalChat(
                ctx,
                system_prompt=args.system_prompt,
                template=template,
                keep_turns=args.keep_turns,
                reserve=args.n_predict,
                margin=args.margin,
                session_cache=Path(args.session_cache).expanduser() if args.session_cache else None,
            )
            if args.plain or not (sys.stdin.isatty() and sys.stdout.isatty()):
                return _run_plain(chat, sp, args)
            return _run_tui(chat, sp, args)


# --------------------------------------------------------------------------- plain


def _run_plain(chat: IncrementalChat, sp: SamplingParams, args: argparse.Namespace) -> int:
    for line in sys.stdin:
        text = line.rstrip("\n")
        if not text.strip():
            continue
        chat.type(text)
        for chunk in chat.reply(text, sampling=sp, max_tokens=args.n_predict):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        print(f"[{_stats_line(chat)}]", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- TUI


class _Engine:
    """The worker thread: the only user of the chat (and its context)."""

    def __init__(self, chat: IncrementalChat, sp: SamplingParams, n_predict: int, debounce: float) -> None:
        self.chat = chat
        self.sp = sp
        self.n_predict = n_predict
        self.debounce = debounce
        self.cv = threading.Condition()
        self.text = ""  # latest input text
        self.changed_at = 0.0
        self.prefilled = ""  # text whose stable part is in the cache
        self.submit: str | None = None
        self.stale = threading.Event()  # newer text arrived: drop the prefill in progress
        self.cancel = threading.Event()  # Ctrl-C during a reply
        self.busy = False
        self.stop = False
        self.on_text: Any = None  # callbacks into the UI (thread-safe)
        self.on_done: Any = None
        self.on_status: Any = None
        self.thread = threading.Thread(target=self._loop, name="incremental-chat", daemon=True)

    def set_text(self, text: str) -> None:
        with self.cv:
            if text != self.text:
                self.text = text
                self.changed_at = time.monotonic()
                self.stale.set()
                self.cv.notify()

    def send(self, text: str) -> None:
        with self.cv:
            self.busy = True
            self.submit = text
            self.stale.set()
            self.cv.notify()

    def shutdown(self) -> None:
        with self.cv:
            self.stop = True
            self.cancel.set()
            self.stale.set()
            self.cv.notify()
        self.thread.join(5)

    def _loop(self) -> None:
        while True:
            with self.cv:
                while not self.stop:
                    if self.submit is not None:
                        break
                    if self.text != self.prefilled:
                        wait = self.changed_at + self.debounce - time.monotonic()
                        if wait <= 0:
                            break
                        self.cv.wait(wait)
                    else:
                        self.cv.wait()
                if self.stop:
                    return
                submit, self.submit = self.submit, None
                text = self.text
                self.stale.clear()
            try:
                if submit is not None:
                    self._reply(submit)
                else:
                    self.chat.type(text, cancel=self.stale)
                    if not self.stale.is_set():
                        self.prefilled = text
                        self.on_status(f"prefilled {self.chat.n_cached} tokens")
            except Exception as exc:  # keep the UI alive; show the error
                self.on_status(f"error: {type(exc).__name__}: {exc}")
                self.busy = False
                self.on_done()

    def _reply(self, text: str) -> None:
        self.busy = True
        self.cancel.clear()
        try:
            for chunk in self.chat.reply(
                text, sampling=self.sp, max_tokens=self.n_predict, cancel=self.cancel
            ):
                if chunk.text:
                    self.on_text(chunk.text)
        finally:
            self.busy = False
            self.prefilled = ""
            with self.cv:
                if self.text == text:
                    self.text = ""
            note = " (stopped)" if self.cancel.is_set() else ""
            self.on_status(_stats_line(self.chat) + note)
            self.on_done()


def _run_tui(chat: IncrementalChat, sp: SamplingParams, args: argparse.Namespace) -> int:
    from prompt_toolkit.application import Application
    from prompt_toolkit.document import Document
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.key_binding.key_processor import KeyPressEvent
    from prompt_toolkit.layout import HSplit, Layout, Window
    from prompt_toolkit.layout.controls import FormattedTextControl
    from prompt_toolkit.widgets import TextArea

    engine = _Engine(chat, sp, args.n_predict, args.debounce_ms / 1000)
    log_lock = threading.Lock()
    transcript: list[str] = []
    if chat.session_restored:
        status = ["system prompt restored from the session cache · Enter sends · Alt-Enter new line"]
    else:
        status = ["ready · Enter sends · Alt-Enter new line · Ctrl-C twice quits"]
    quit_armed = [False]

    output = TextArea(read_only=True, scrollbar=True, focusable=False, wrap_lines=True)
    input_area = TextArea(multiline=True, prompt="> ", wrap_lines=True, height=3)
    status_bar = Window(
        FormattedTextControl(lambda: [("reverse", " " + status[0].ljust(300))]), height=1, style="reverse"
    )
    kb = KeyBindings()
    app: Application[int] = Application(
        layout=Layout(HSplit([output, status_bar, input_area]), focused_element=input_area),
        key_bindings=kb,
        full_screen=True,
        mouse_support=False,
    )

    def refresh_output() -> None:
        with log_lock:
            text = "".join(transcript)
        output.buffer.set_document(Document(text, cursor_position=len(text)), bypass_readonly=True)
        app.invalidate()

    def call_ui(fn: Any) -> None:
        loop = app.loop
        if loop is not None:
            loop.call_soon_threadsafe(fn)

    def on_text(text: str) -> None:
        with log_lock:
            transcript.append(text)
        call_ui(refresh_output)

    def on_status(text: str) -> None:
        status[0] = text
        app.invalidate()

    def on_done() -> None:
        with log_lock:
            transcript.append("\n\n")
        call_ui(refresh_output)

    engine.on_text, engine.on_status, engine.on_done = on_text, on_status, on_done

    def text_changed(_buf: Any) -> None:
        quit_armed[0] = False
        engine.set_text(input_area.text)

    input_area.buffer.on_text_changed += text_changed

    @kb.add("enter")
    def _send(event: KeyPressEvent) -> None:
        text = input_area.text
        if engine.busy or not text.strip():
            return
        with log_lock:
            transcript.append(f"you: {text}\n\nassistant: ")
        refresh_output()
        status[0] = "generating… (Ctrl-C stops)"
        engine.send(text)
        input_area.buffer.reset()

    @kb.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        input_area.buffer.insert_text("\n")

    @kb.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        if engine.busy:
            engine.cancel.set()
            return
        if quit_armed[0]:
            event.app.exit(result=0)
            return
        quit_armed[0] = True
        status[0] = "press Ctrl-C again to quit"

    @kb.add("c-d")
    def _eof(event: KeyPressEvent) -> None:
        if not input_area.text and not engine.busy:
            event.app.exit(result=0)

    @kb.add("c-w")
    def _del_word(event: KeyPressEvent) -> None:
        buf = input_area.buffer
        pos = buf.document.find_start_of_previous_word(WORD=True)
        if pos:
            buf.delete_before_cursor(count=-pos)

    @kb.add("c-u")
    def _del_line_start(event: KeyPressEvent) -> None:
        buf = input_area.buffer
        n = -buf.document.get_start_of_line_position()
        if n:
            buf.delete_before_cursor(count=n)

    @kb.add("c-k")
    def _del_line_end(event: KeyPressEvent) -> None:
        buf = input_area.buffer
        n = buf.document.get_end_of_line_position()
        if n:
            buf.delete(count=n)

    @kb.add("home")
    def _home(event: KeyPressEvent) -> None:
        buf = input_area.buffer
        buf.cursor_position += buf.document.get_start_of_line_position()

    @kb.add("end")
    def _end(event: KeyPressEvent) -> None:
        buf = input_area.buffer
        buf.cursor_position += buf.document.get_end_of_line_position()

    engine.thread.start()
    try:
        rc = app.run()
    finally:
        engine.shutdown()
    return int(rc or 0)
