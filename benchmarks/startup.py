"""Start-up and whole-process wall time, side by side in one run (issue 17).

    python benchmarks/startup.py [--runs 5] [--threads 1] [--tokens 256] [-v]

Rows (median of --runs fresh processes each, run interleaved so that machine load affects all alike):
``llamabind --version`` vs ``python -c "import llama_cpp"``, and a whole ``llamabind complete`` (default
model, greedy, --tokens, --threads, same n_ctx) vs a llama-cpp-python ``Llama`` script doing the same
greedy completion. Targets: --version <= 1.3x import llama_cpp; complete <= 0.98x llama-cpp-python.

Both sides run with the same settings: 1 sequence, n_ctx, n_batch = n_ubatch = 512, --threads for
generation and prompt alike, the model memory-mapped, flash attention on (llamabind's "auto" turns
it on for the CPU; ``Llama`` defaults to off, so it is asked for), and the same CPU weight kernels
(``lcp_kernels``). llamabind's bytecode is compiled first, as an installed wheel has it
(``PYTHONDONTWRITEBYTECODE`` would otherwise make every process compile it again).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

PROMPT = "Once upon a time, in a small village by the sea, there lived"
N_CTX = 1024
N_BATCH = 512

LLAMA_CPP_SCRIPT = """
import sys
from llama_cpp import Llama
N_BATCH = 512
path, threads, tokens, n_ctx, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
llm = Llama(
    path, n_ctx=n_ctx, n_batch=N_BATCH, n_ubatch=N_BATCH, n_threads=threads, n_threads_batch=threads,
    flash_attn=True, use_mmap=True, verbose=False,
)
for chunk in llm(prompt, max_tokens=tokens, temperature=0.0, top_k=1, stream=True):
    sys.stdout.write(chunk["choices"][0]["text"])
sys.stdout.flush()
"""


def _time(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("-v", "--verbose", action="store_true", help="also print every run (wall/CPU s)")
    args = ap.parse_args()

    import compileall

    import lcp_kernels
    import llamabind

    compileall.compile_dir(os.path.dirname(llamabind.__file__), quiet=1)

    model = str(llamabind.default_model_path())
    exe = shutil.which("llamabind") or os.path.join(os.path.dirname(sys.executable), "llamabind")
    t, n = str(args.threads), str(args.tokens)
    pairs = {
        "startup": (
            ("llamabind --version", [exe, "--version"]),
            ("python -c 'import llama_cpp'", [sys.executable, "-c", "import llama_cpp"]),
        ),
        "complete": (
            (
                f"llamabind complete (-n {n}, -t {t})",
                [
                    exe,
                    "complete",
                    "-m",
                    model,
                    "-p",
                    PROMPT,
                    "-n",
                    n,
                    "-t",
                    t,
                    "--threads-batch",
                    t,
                    "-c",
                    str(N_CTX),
                    "-b",
                    str(N_BATCH),
                    "-ub",
                    str(N_BATCH),
                    "--temp",
                    "0",
                ],
            ),
            (
                f"llama-cpp-python Llama (max_tokens {n}, {t} threads)",
                [
                    sys.executable,
                    "-c",
                    lcp_kernels.source() + LLAMA_CPP_SCRIPT,
                    model,
                    t,
                    n,
                    str(N_CTX),
                    PROMPT,
                ],
            ),
        ),
    }
    times: dict[str, list[tuple[float, float]]] = {label: [] for pair in pairs.values() for label, _ in pair}
    for cmd in (c for pair in pairs.values() for _, c in pair):  # warm the page cache once
        _time(cmd)
    for _ in range(args.runs):
        for pair in pairs.values():
            for label, cmd in pair:
                times[label].append(_time(cmd))
    print(f"median of {args.runs} runs (wall; CPU = user + system), model {os.path.basename(model)}")
    for name, ((a, _), (b, _)) in pairs.items():
        wa, wb = (statistics.median(w for w, _ in times[x]) for x in (a, b))
        ca, cb = (statistics.median(c for _, c in times[x]) for x in (a, b))
        print(f"{name:9s} {a:45s} {wa:7.3f} s wall  {ca:7.3f} s CPU")
        print(
            f"{'':9s} {b:45s} {wb:7.3f} s wall  {cb:7.3f} s CPU   ratio {wa / wb:.2f}x wall, {ca / cb:.2f}x CPU"
        )
        if args.verbose:
            for x in (a, b):
                print(f"{'':9s}   {x}: " + ", ".join(f"{w:.2f}/{c:.2f}" for w, c in times[x]))


if __name__ == "__main__":
    main()
