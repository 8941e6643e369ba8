"""The parent side of fuzz_worker.py: one worker process, restarted after a crash, with a timeout
per case, so a native crash or hang becomes a reported failure instead of a dead test run."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Any

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_worker.py")


class FuzzClient:
    def __init__(self, timeout: float = 30.0, workdir: str | os.PathLike[str] | None = None) -> None:
        self.timeout = timeout
        self.env = dict(os.environ)
        if workdir is not None:  # where GGUF cases write their files (fuzz_gguf.py)
            self.env["LLAMABIND_FUZZ_WORKDIR"] = str(workdir)
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.restarts = 0

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self.env,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        self.lines = lines  # each worker gets its own queue: a dead one's reader cannot mix in
        out = self.proc.stdout
        assert out is not None

        def pump() -> None:
            for line in out:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        while True:
            ready = lines.get(timeout=120)
            if ready is None:
                raise RuntimeError("the fuzz worker died while loading the model")
            if ready.startswith('{"ready"'):
                break

    def run(self, case: dict[str, Any]) -> dict[str, str]:
        """{"result": ...} or {"unexpected": traceback}, {"crash": returncode} or {"hang": seconds}."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        deadline = time.monotonic() + self.timeout
        try:
            self.proc.stdin.write(json.dumps(case) + "\n")
            self.proc.stdin.flush()
            while True:  # native code may write to stdout too (a crash report): skip non-replies
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
                if line is None or line.startswith('{"'):
                    break
        except queue.Empty:
            self.close()
            return {"hang": str(self.timeout)}
        except BrokenPipeError:
            line = None
        if line is None:
            rc = self.proc.wait()
            self.proc = None
            self.restarts += 1
            return {"crash": str(rc)}
        reply: dict[str, str] = json.loads(line)
        return reply

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
