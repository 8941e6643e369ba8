"""Layer 2: the safe core API over llama.cpp (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

from .backend import DeviceInfo, backend_init, devices, system_info
from .batch import Batch
from .context import Context, PerfData
from .detokenizer import StreamingDetokenizer
from .lora import LoraAdapter, load_control_vector
from .memory import Memory
from .model import Model, ModelParams
from .params import ContextParams, default_threads
from .sampler import LogitsProcessor, Sampler, SamplerPerf
from .state import State
from .vocab import TokenAttr, Vocab

__all__ = [
    "Batch",
    "Context",
    "ContextParams",
    "DeviceInfo",
    "LogitsProcessor",
    "LoraAdapter",
    "Memory",
    "Model",
    "ModelParams",
    "PerfData",
    "Sampler",
    "SamplerPerf",
    "State",
    "StreamingDetokenizer",
    "TokenAttr",
    "Vocab",
    "backend_init",
    "default_threads",
    "devices",
    "load_control_vector",
    "system_info",
]
