"""Surviving llama.cpp's fatal errors (GGML_ABORT) in worker threads.

Some native failures end in ``GGML_ABORT`` → ``abort()``: notably the RPC client when a worker
dies or answers garbage. ggml lets us install an abort callback that runs *before* ``abort()``.
Ours records the message and, when the failing thread is not the main thread, parks that thread
forever instead of returning into ``abort()``: the process stays alive, the thread (and the
context it was using) is lost, and :func:`run_guarded` turns the event into an exception.
Work that may hit such an error (RPC decodes and loads) therefore runs through ``run_guarded``,
which also notices a fatal error in a backend thread the call is waiting on.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import FatalNativeError
from .lib import ggml

__all__ = ["FatalNativeError", "install_fatal_handler", "run_guarded"]

T = TypeVar("T")

_ABORT_CB_T = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_installed = False
_install_lock = threading.Lock()
_cb: Any = None
_fatal = threading.Condition()
_parked: dict[int, str] = {}  # thread ident -> message
_events: list[str] = []  # every fatal message, in order


def _on_abort(message: bytes | None) -> None:
    text = (message or b"").decode("utf-8", "replace").strip()
    try:
        import logging

        logging.getLogger("llamabind.native").critical("fatal llama.cpp error: %s", text)
    except Exception:  # pragma: no cover
        pass
    if threading.current_thread() is threading.main_thread():
        return  # nothing can keep the process alive here: abort() follows
    ident = threading.get_ident()
    with _fatal:
        _parked[ident] = text
        _events.append(text)
        _fatal.notify_all()
    threading.Event().wait()  # park this thread for the life of the process


def install_fatal_handler() -> None:
    global _installed, _cb
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        lib = ggml()
        lib.ggml_set_abort_callback.restype = ctypes.c_void_p
        lib.ggml_set_abort_callback.argtypes = [_ABORT_CB_T]
        _cb = _ABORT_CB_T(_on_abort)
        lib.ggml_set_abort_callback(_cb)
        _installed = True


def run_guarded(
    fn: Callable[..., T], *args: Any, timeout: float | None = None, what: str = "native call"
) -> T:
    """Run ``fn(*args)`` in a daemon worker thread; raise FatalNativeError if it hits GGML_ABORT,
    TimeoutError if it takes longer than ``timeout`` seconds (the call is then abandoned)."""
    install_fatal_handler()
    with _fatal:
        seen = len(_events)
    done = threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    # a daemon thread: a parked one must not keep the interpreter from exiting
    worker = threading.Thread(target=target, name="llamabind-guarded", daemon=True)
    worker.start()
    waited = 0.0
    step = 0.05
    while not done.wait(step):
        waited += step
        with _fatal:
            # the failing thread may be ours or a backend thread we wait on (RPC, async compute)
            if len(_events) > seen:
                raise FatalNativeError(f"{what} failed inside llama.cpp: {_events[-1]}")
        if timeout is not None and waited >= timeout:
            raise TimeoutError(f"{what} did not finish within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]
