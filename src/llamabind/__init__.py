"""llamabind: safe, typed, fast Python bindings to llama.cpp.

Quick tour::

    import llamabind as lb
    model = lb.Model(lb.default_model_path())
    ctx = lb.Context(model, n_ctx=2048)
    print(lb.complete(ctx, "The capital of France is", max_tokens=16).text)
"""

from __future__ import annotations

from .core import (
    Batch,
    Context,
    ContextParams,
    DeviceInfo,
    LogitsProcessor,
    LoraAdapter,
    Memory,
    Model,
    ModelParams,
    PerfData,
    Sampler,
    SamplerPerf,
    State,
    StreamingDetokenizer,
    TokenAttr,
    Vocab,
    backend_init,
    default_threads,
    devices,
    load_control_vector,
    system_info,
)
from .errors import (
    AbortedError,
    BatchFullError,
    ClosedError,
    ConcurrentUseError,
    ContextCreateError,
    ContextOverflowError,
    DecodeError,
    GrammarError,
    HubError,
    LlamabindError,
    LoraError,
    ModelLoadError,
    NativeLibraryError,
    NoKvSlotError,
    QuantizeError,
    RpcError,
    SchemaError,
    StateError,
    TemplateError,
    TokenizeError,
    UnsupportedError,
)
from .models import default_model_path

__version__ = "0.1.0"

__all__ = [
    "AbortedError",
    "Batch",
    "BatchFullError",
    "ClosedError",
    "ConcurrentUseError",
    "Context",
    "ContextCreateError",
    "ContextOverflowError",
    "ContextParams",
    "DecodeError",
    "DeviceInfo",
    "GrammarError",
    "HubError",
    "LlamabindError",
    "LogitsProcessor",
    "LoraAdapter",
    "LoraError",
    "Memory",
    "Model",
    "ModelLoadError",
    "ModelParams",
    "NativeLibraryError",
    "NoKvSlotError",
    "PerfData",
    "QuantizeError",
    "RpcError",
    "Sampler",
    "SamplerPerf",
    "SchemaError",
    "State",
    "StateError",
    "StreamingDetokenizer",
    "TemplateError",
    "TokenAttr",
    "TokenizeError",
    "UnsupportedError",
    "Vocab",
    "__version__",
    "backend_init",
    "default_model_path",
    "default_threads",
    "devices",
    "load_control_vector",
    "system_info",
]
