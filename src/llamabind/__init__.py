"""llamabind: safe, typed, fast Python bindings to llama.cpp.

Quick tour::

    import llamabind as lb
    model = lb.Model(lb.default_model_path())
    ctx = lb.Context(model, n_ctx=2048)
    print(lb.Generator(ctx).complete("The capital of France is", max_tokens=16).text)
"""

from __future__ import annotations

# engines (layer 3)
from .batching import GenRequest, Scheduler, SchedulerConfig
from .chat import ChatTemplate, ToolCall, parse_tool_calls, split_reasoning
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
from .core.batch_ext import BatchExt
from .embeddings import Embedder, EmbeddingError, RerankResult, cosine_similarity, embed, rerank
from .engine import EngineProcess, EngineSpec
from .errors import (
    AbortedError,
    BatchFullError,
    ClosedError,
    ConcurrentUseError,
    ContextCreateError,
    ContextOverflowError,
    DecodeError,
    EngineCrashedError,
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
from .generation.generator import GenerationChunk, GenerationResult, Generator, Timings
from .generation.sampling import SamplingParams
from .grammar import Grammar, json_schema_to_gbnf, validate_gbnf
from .incremental import IncrementalChat, IncrementalPrefill
from .kvcache import KV_CACHE_TYPES, kv_type_report, perplexity
from .models import default_model_path
from .multimodal import (
    Bitmap,
    MediaChunk,
    MediaError,
    MediaGenerator,
    MediaPolicy,
    MediaPrompt,
    MediaResolver,
    MtmdContext,
    MultimodalError,
    ProjectorError,
    find_mmproj,
    projector_info,
)
from .quantize import QuantizeParams, QuantizeResult, quantize
from .speculative import Draft, Drafter, DraftModelDrafter, MtpConfig, MtpDrafter, NgramDrafter, SpecStats

__version__ = "0.1.0"

__all__ = [
    "KV_CACHE_TYPES",
    "AbortedError",
    "Batch",
    "BatchExt",
    "BatchFullError",
    "Bitmap",
    "ChatTemplate",
    "ClosedError",
    "ConcurrentUseError",
    "Context",
    "ContextCreateError",
    "ContextOverflowError",
    "ContextParams",
    "DecodeError",
    "DeviceInfo",
    "Draft",
    "DraftModelDrafter",
    "Drafter",
    "Embedder",
    "EmbeddingError",
    "EngineCrashedError",
    "EngineProcess",
    "EngineSpec",
    "GenRequest",
    "GenerationChunk",
    "GenerationResult",
    "Generator",
    "Grammar",
    "GrammarError",
    "HubError",
    "IncrementalChat",
    "IncrementalPrefill",
    "LlamabindError",
    "LogitsProcessor",
    "LoraAdapter",
    "LoraError",
    "MediaChunk",
    "MediaError",
    "MediaGenerator",
    "MediaPolicy",
    "MediaPrompt",
    "MediaResolver",
    "Memory",
    "Model",
    "ModelLoadError",
    "ModelParams",
    "MtmdContext",
    "MtpConfig",
    "MtpDrafter",
    "MultimodalError",
    "NativeLibraryError",
    "NgramDrafter",
    "NoKvSlotError",
    "PerfData",
    "ProjectorError",
    "QuantizeError",
    "QuantizeParams",
    "QuantizeResult",
    "RerankResult",
    "RpcError",
    "Sampler",
    "SamplerPerf",
    "SamplingParams",
    "Scheduler",
    "SchedulerConfig",
    "SchemaError",
    "SpecStats",
    "State",
    "StateError",
    "StreamingDetokenizer",
    "TemplateError",
    "Timings",
    "TokenAttr",
    "TokenizeError",
    "ToolCall",
    "UnsupportedError",
    "Vocab",
    "__version__",
    "backend_init",
    "cosine_similarity",
    "default_model_path",
    "default_threads",
    "devices",
    "embed",
    "find_mmproj",
    "json_schema_to_gbnf",
    "kv_type_report",
    "load_control_vector",
    "parse_tool_calls",
    "perplexity",
    "projector_info",
    "quantize",
    "rerank",
    "split_reasoning",
    "system_info",
    "validate_gbnf",
]
