"""Run llama-cpp-python's ``Llama`` on the same CPU kernels as llamabind, for side-by-side figures.

llamabind loads models with llama.cpp's extra weight buffer types (AMX, CPU repacking) except on a
CPU build with AMX kernels, whose matmul segfaults in the pinned revision (``ModelParams.
use_extra_bufts``). ``Llama`` has no such switch: on an AMX machine it would crash, and elsewhere
it already matches. ``source()`` is the few lines that give it llamabind's choice; run them in the
process that builds the ``Llama`` (``exec(source(), {})`` or prepended to a ``python -c`` script).
"""

from __future__ import annotations

SOURCE_NO_EXTRA_BUFTS = """
import llama_cpp.llama_cpp as _raw
_default_model_params = _raw.llama_model_default_params
def _same_kernels():
    p = _default_model_params()
    p.use_extra_bufts = False
    return p
_raw.llama_model_default_params = _same_kernels
"""


def source() -> str:
    """The lines to run before building a ``Llama`` ("" where llamabind keeps the defaults)."""
    from llamabind._native.model import cpu_build_uses_amx

    return SOURCE_NO_EXTRA_BUFTS if cpu_build_uses_amx() else ""
