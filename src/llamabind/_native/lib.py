"""Loading the llama.cpp libraries of the pinned llama-cpp-python build and checking their revision.

This is the one place that decides *which* libllama is used:

* by default the libraries inside the installed ``llama-cpp-python`` package (``llama_cpp/lib``);
* ``LLAMABIND_LIB_DIR=/path/to/dir`` points at another build of the same llama.cpp revision
  (a CUDA/Vulkan/Metal build, say). The directory must hold ``libllama`` and ``libggml-base``.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import os
import pathlib
import sys
import threading
from types import ModuleType
from typing import Any

from ..errors import NativeLibraryError

__all__ = [
    "LIB_DIR_ENV",
    "REQUIRED_LLAMA_CPP_PYTHON",
    "ggml",
    "ggml_commit",
    "ggml_version",
    "lib_dir",
    "ll",
    "load_side_library",
]

#: The exact llama-cpp-python release whose ctypes mirror of llama.h we bind against.
REQUIRED_LLAMA_CPP_PYTHON = "0.3.36"
#: Environment variable naming a directory with another libllama build of the same revision.
LIB_DIR_ENV = "LLAMABIND_LIB_DIR"
#: Symbols that only exist from the pinned revision on; their absence means a wrong library.
_REQUIRED_SYMBOLS = (
    "llama_model_load_from_splits",
    "llama_batch_ext_init",
    "llama_process",
    "llama_model_n_layer_nextn",
    "llama_sampler_init_adaptive_p",
    "llama_memory_seq_rm",
)

_lock = threading.Lock()
_ll: ModuleType | None = None
_ggml: ctypes.CDLL | None = None
_dir: pathlib.Path | None = None


def _lib_file(directory: pathlib.Path, base: str) -> pathlib.Path | None:
    names = {
        "win32": [f"{base}.dll", f"lib{base}.dll"],
        "darwin": [f"lib{base}.dylib", f"lib{base}.so"],
    }.get(sys.platform, [f"lib{base}.so"])
    for name in names:
        if (directory / name).is_file():
            return directory / name
    return None


def _package_lib_dir() -> pathlib.Path:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise NativeLibraryError(
            "llama-cpp-python is not installed: llamabind needs llama-cpp-python=="
            f"{REQUIRED_LLAMA_CPP_PYTHON} (built with CMAKE_ARGS=-DGGML_RPC=ON), "
            f"or {LIB_DIR_ENV} pointing at a libllama build of the same revision"
        )
    return pathlib.Path(spec.origin).parent / "lib"


def _version_beside_package() -> str | None:
    """The version in the ``llama_cpp_python-*.dist-info`` beside the ``llama_cpp`` package, read
    without importing ``importlib.metadata`` (a few hundredths of a second of start-up); None when
    there is not exactly one such directory with a version."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return None
    found = list(pathlib.Path(spec.origin).parent.parent.glob("llama_cpp_python-*.dist-info"))
    if len(found) != 1:
        return None
    try:
        with (found[0] / "METADATA").open(encoding="utf-8") as f:
            for line in f:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():  # end of the headers
                    break
    except OSError:
        return None
    return None


def _check_distribution() -> None:
    found = _version_beside_package()
    if found is None:
        import importlib.metadata

        try:
            found = importlib.metadata.version("llama-cpp-python")
        except importlib.metadata.PackageNotFoundError:
            found = "not installed"
    if found != REQUIRED_LLAMA_CPP_PYTHON:
        raise NativeLibraryError(
            f"found llama-cpp-python {found}, but llamabind needs exactly llama-cpp-python=="
            f"{REQUIRED_LLAMA_CPP_PYTHON} (its ctypes struct layouts must match the library)"
        )


def _import_raw_module() -> ModuleType:
    """``llama_cpp.llama_cpp``, without running the package's ``__init__`` first when nothing has.

    That ``__init__`` imports llama-cpp-python's high-level ``Llama`` (numpy, jinja2, diskcache,
    its chat formats): a tenth of a second of start-up for code llamabind never calls. The package
    module is made from its spec and put in ``sys.modules`` unexecuted; the first attribute asked of
    it that it lacks (``llama_cpp.Llama``, ``__version__``) runs its ``__init__`` then (PEP 562), so
    ``import llama_cpp`` elsewhere in the process still gets the whole package.
    """
    if "llama_cpp" not in sys.modules:
        spec = importlib.util.find_spec("llama_cpp")
        if spec is not None and spec.loader is not None and spec.submodule_search_locations:
            sys.modules["llama_cpp"] = _deferred_package(spec)
    try:
        import llama_cpp.llama_cpp as module
    except BaseException:
        pkg = sys.modules.get("llama_cpp")
        if pkg is not None and "__getattr__" in vars(pkg):  # still the unexecuted package: drop it
            del sys.modules["llama_cpp"]
        raise
    return module


def _deferred_package(spec: importlib.machinery.ModuleSpec) -> ModuleType:
    pkg = importlib.util.module_from_spec(spec)
    loader = spec.loader
    assert loader is not None
    lock = threading.RLock()

    def __getattr__(name: str) -> Any:
        with lock:
            if vars(pkg).pop("__getattr__", None) is not None:
                loader.exec_module(pkg)
        return getattr(pkg, name)

    vars(pkg)["__getattr__"] = __getattr__
    return pkg


def _load() -> None:
    global _ll, _ggml, _dir
    _check_distribution()
    override = os.environ.get(LIB_DIR_ENV)
    if override:
        directory = pathlib.Path(override).expanduser().resolve()
        if not directory.is_dir():
            raise NativeLibraryError(f"{LIB_DIR_ENV}={override}: not a directory")
        if _lib_file(directory, "llama") is None:
            raise NativeLibraryError(
                f"{LIB_DIR_ENV}={override}: no libllama found there "
                f"(found: {sorted(p.name for p in directory.iterdir())[:12]})"
            )
        # llama_cpp.llama_cpp reads this at import time to locate libllama.
        os.environ["LLAMA_CPP_LIB_PATH"] = str(directory)
    else:
        directory = _package_lib_dir()
        if _lib_file(directory, "llama") is None:
            raise NativeLibraryError(
                f"llama-cpp-python is installed but {directory} holds no libllama; reinstall it from "
                f"source: CMAKE_ARGS=-DGGML_RPC=ON pip install --no-cache-dir --force-reinstall "
                f"llama-cpp-python=={REQUIRED_LLAMA_CPP_PYTHON}"
            )
    base = _lib_file(directory, "ggml-base")
    if base is None:
        raise NativeLibraryError(f"{directory}: libggml-base not found beside libllama")
    try:
        ggml_base = ctypes.CDLL(str(base), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise NativeLibraryError(f"cannot load {base}: {exc}") from exc
    for sym in ("ggml_version", "ggml_commit"):
        if not hasattr(ggml_base, sym):
            raise NativeLibraryError(
                f"{base} has no {sym}(): it is older than the llama.cpp revision of "
                f"llama-cpp-python=={REQUIRED_LLAMA_CPP_PYTHON}"
            )
    ggml_base.ggml_version.restype = ctypes.c_char_p
    ggml_base.ggml_commit.restype = ctypes.c_char_p
    try:
        module = _import_raw_module()
    except (OSError, RuntimeError, FileNotFoundError) as exc:
        raise NativeLibraryError(f"cannot load libllama from {directory}: {exc}") from exc
    except AttributeError as exc:
        raise NativeLibraryError(
            f"libllama in {directory} lacks a function llama-cpp-python=={REQUIRED_LLAMA_CPP_PYTHON} "
            f"declares ({exc}); found ggml {ggml_base.ggml_version().decode()} "
            f"commit {ggml_base.ggml_commit().decode()}"
        ) from exc
    raw = module._lib
    missing = [s for s in _REQUIRED_SYMBOLS if not hasattr(raw, s)]
    if missing:
        raise NativeLibraryError(
            f"libllama in {directory} (ggml {ggml_base.ggml_version().decode()}, commit "
            f"{ggml_base.ggml_commit().decode()}) lacks {', '.join(missing)}: llamabind needs the "
            f"llama.cpp revision of llama-cpp-python=={REQUIRED_LLAMA_CPP_PYTHON}"
        )
    _ggml = ggml_base
    _dir = directory
    _ll = module


def ll() -> Any:
    """The raw ``llama_cpp.llama_cpp`` module (ctypes mirror of llama.h), loaded and checked once."""
    if _ll is None:
        with _lock:
            if _ll is None:
                _load()
    return _ll


def ggml() -> ctypes.CDLL:
    """libggml-base (ggml_version, ggml_commit, type traits)."""
    ll()
    assert _ggml is not None
    return _ggml


def lib_dir() -> pathlib.Path:
    """The directory the llama.cpp libraries were loaded from."""
    ll()
    assert _dir is not None
    return _dir


def load_side_library(base: str) -> ctypes.CDLL | None:
    """Load another library of the same build (``ggml``, ``ggml-rpc``, ``mtmd``); None when absent."""
    path = _lib_file(lib_dir(), base)
    if path is None:
        return None
    try:
        return ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise NativeLibraryError(f"cannot load {path}: {exc}") from exc


def ggml_version() -> str:
    return str(ggml().ggml_version().decode())


def ggml_commit() -> str:
    return str(ggml().ggml_commit().decode())
