"""`Context`: one llama.cpp inference context (KV cache, decode, logits). Single-threaded."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from .._native import context as nctx
from .._native.fatal import FatalNativeError, run_guarded
from ..errors import ConcurrentUseError, ContextCreateError, RpcError, TokenizeError
from ._owner import NativeOwner
from .batch import Batch
from .memory import Memory
from .model import Model
from .params import ContextParams
from .state import State
from .status import DECODE_ABORTED, check_decode_status
from .types import POOLING_TYPES

__all__ = ["Context", "PerfData"]

PerfData = nctx.PerfData
_POOLING_NAMES = {v: k for k, v in POOLING_TYPES.items()}


def _check_mtp_model(model: Model) -> None:
    """An MTP context over a model whose next-n tensors were not loaded aborts inside llama.cpp."""
    if model.n_layer_nextn <= 0:
        raise ContextCreateError(
            f"{model.path.name} ({model.architecture or 'unknown architecture'}) has no next-n (MTP) "
            "layers (n_layer_nextn = 0): an MTP context needs a model converted with its MTP head"
        )
    if not model.params.load_mtp:
        raise ContextCreateError(
            f"{model.path.name} was loaded without its MTP layers: load it with "
            "Model(path, load_mtp=True) to create an MTP context"
        )


class Context(NativeOwner):
    """An inference context over a model.

    A Context is **not** thread-safe: every native call takes a non-blocking lock and a second
    thread using it at the same time gets :class:`ConcurrentUseError` instead of corrupting
    state. :meth:`abort` is the one method meant to be called from another thread. Native work
    on the raw handle from outside this class (samplers, extended batches, libmtmd) goes through
    :meth:`exclusive` and :meth:`decode_native`, which take the same lock.
    """

    def __init__(
        self,
        model: Model,
        params: ContextParams | None = None,
        *,
        other: Context | None = None,
        **overrides: Any,
    ) -> None:
        params = (
            (params or ContextParams()).replace(**overrides) if overrides else (params or ContextParams())
        )
        self.model = model  # strong reference: the model outlives this context
        self.params = params
        self.other = other
        fields = params.to_native()
        if params.ctx_type.strip().lower() == "mtp":
            _check_mtp_model(model)
        handle = nctx.context_create(
            model._ptr(),
            fields,
            attn_rotation=params.attn_rotation,
            ctx_other=other._ptr() if other is not None else None,
        )
        if not handle:
            hint = ""
            if str(params.type_v).lower() not in (
                "f16",
                "bf16",
                "f32",
                "1",
                "30",
                "0",
            ) and params.flash_attn in (
                "off",
                False,
            ):
                hint = "; a quantized V cache needs flash attention (flash_attn='auto' or 'on')"
            raise ContextCreateError(
                f"llama.cpp could not create a context for {model.path.name} with n_ctx={params.n_ctx}, "
                f"n_batch={params.n_batch}, n_seq_max={params.n_seq_max}, type_k={params.type_k}, "
                f"type_v={params.type_v}, ctx_type={params.ctx_type}{hint} (see 'llamabind.native' logs)"
            )
        self._own(handle, nctx.context_free, parent=model)
        if other is not None:
            other._h.children.add(self._h.finalizer)  # type: ignore[arg-type]
        self._lock = threading.Lock()
        self._abort = nctx.AbortFlag()
        self._abort.install(handle)
        self.n_vocab = model.vocab.n_tokens
        self.n_ctx = nctx.context_int(handle, "n_ctx")
        self.n_batch = nctx.context_int(handle, "n_batch")
        self.n_ubatch = nctx.context_int(handle, "n_ubatch")
        self.n_seq_max = nctx.context_int(handle, "n_seq_max")
        #: the most tokens one sequence may hold (fixed for the context's life)
        self.n_ctx_per_seq = nctx.context_int(handle, "n_ctx_seq") if self.n_seq_max > 1 else self.n_ctx
        self.n_embd = model.n_embd_out or model.n_embd
        # non-causal attention (BERT-style encoders) must see a whole batch in one micro-batch
        self._causal = params.attention_type != "non_causal" and (
            params.attention_type == "causal"
            or model.meta(f"{model.architecture}.attention.causal", "true") != "false"
        )
        self._n_outputs = 0
        # decodes over RPC workers may hit GGML_ABORT (a worker died): they run guarded
        self._remote = bool(model.params.rpc_servers)
        self._poisoned: str | None = None
        self.memory = Memory(self)
        self.state = State(self)

    # ----------------------------------------------------------- locking
    def _acquire(self) -> Any:
        if self._poisoned is not None:
            raise RpcError(self._poisoned)
        if not self._lock.acquire(blocking=False):
            raise ConcurrentUseError(
                "this Context is in use by another thread; a Context is single-threaded "
                "(create one Context per thread, or serialise access)"
            )
        ptr = self._h.ptr
        if not ptr:
            self._lock.release()
            self._ptr()  # raises ClosedError
        return ptr

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[Any]:
        """Hold this context for native work: ``with ctx.exclusive() as handle: …``.

        Yields the raw ``llama_context`` handle, valid only inside the block, under the lock every
        method takes: another thread inside the context raises :class:`ConcurrentUseError` (the
        lock is never waited for), a closed context :class:`ClosedError`, one poisoned by a dead
        RPC worker :class:`RpcError`. A call that decodes belongs in :meth:`decode_native`.
        """
        ptr = self._acquire()
        try:
            yield ptr
        finally:
            self._lock.release()

    def decode_native(
        self, fn: Callable[[Any], int], *, what: str, n_tokens: int, n_outputs: int = 0
    ) -> None:
        """Run a decode-family native call ``fn(handle) -> code`` under :meth:`exclusive`.

        ``n_outputs`` is the number of output rows (logits/embeddings) the call leaves behind; it
        bounds the negative indices of :meth:`logits`. A non-zero code raises through
        :func:`~llamabind.core.status.check_decode_status` (``what`` and ``n_tokens`` go into the
        message); an aborted call also clears the abort flag.
        """
        ptr = self._acquire()
        try:
            rc = int(fn(ptr))
        finally:
            self._lock.release()
        self._n_outputs = n_outputs
        if rc == DECODE_ABORTED:
            self._abort.clear()
        check_decode_status(rc, what, n_tokens=n_tokens, n_ctx=self.n_ctx)

    def _call(self, fn: Any, *args: Any) -> Any:
        ptr = self._acquire()
        try:
            return fn(ptr, *args)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Free the context; waits for a decode running in another thread to finish."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            super().close()
            return
        with lock:
            super().close()

    # ------------------------------------------------------------ info
    @property
    def pooling(self) -> str:
        return _POOLING_NAMES.get(self._call(nctx.context_int, "pooling_type"), "unspecified")

    @property
    def n_ctx_seq(self) -> int:
        return int(self._call(nctx.context_int, "n_ctx_seq"))

    @property
    def n_threads(self) -> tuple[int, int]:
        return (
            int(self._call(nctx.context_int, "n_threads")),
            int(self._call(nctx.context_int, "n_threads_batch")),
        )

    def set_threads(self, n_threads: int, n_threads_batch: int | None = None) -> None:
        self._call(nctx.set_threads, n_threads, n_threads_batch or n_threads)

    def set_embeddings(self, on: bool) -> None:
        self._call(nctx.set_embeddings, on)

    def set_causal_attn(self, on: bool) -> None:
        self._call(nctx.set_causal_attn, on)
        self._causal = bool(on)

    def set_warmup(self, on: bool) -> None:
        self._call(nctx.set_warmup, on)

    def synchronize(self) -> None:
        self._call(nctx.synchronize)

    # ----------------------------------------------------------- decode
    def _check_batch(self, batch: Batch) -> int:
        n = batch.n_tokens
        if n == 0:
            raise ValueError("cannot decode an empty batch")
        if n > self.n_batch:
            raise ValueError(f"batch of {n} tokens exceeds n_batch={self.n_batch}")
        if n == 1:  # one token per generation step: plain ints, no numpy reductions
            self._check_one(batch)
            return n
        if batch._buf.embd is None:
            toks = batch._buf.token[:n]
            if int(toks.min()) < 0 or int(toks.max()) >= self.n_vocab:
                bad = int(toks[(toks < 0) | (toks >= self.n_vocab)][0])
                raise TokenizeError(f"token id {bad} out of range [0, {self.n_vocab})")
        if batch.n_seq_max > 1:
            hi, lo = batch.max_seq_id(), batch.min_seq_id()
        else:  # one id per token: a plain min/max over the first column
            col = batch._buf.seq_id[:n, 0]
            hi, lo = int(col.max()), int(col.min())
        if lo < 0 or hi >= self.n_seq_max:
            raise ValueError(
                f"sequence id {hi if hi >= self.n_seq_max else lo} out of range [0, {self.n_seq_max})"
            )
        return n

    def _check_one(self, batch: Batch) -> None:
        b = batch._buf
        if b.embd is None:
            tok = int(b.token[0])
            if not 0 <= tok < self.n_vocab:
                raise TokenizeError(f"token id {tok} out of range [0, {self.n_vocab})")
        ids = b.seq_id[0, : int(b.n_seq_id[0])].tolist()
        hi, lo = max(ids), min(ids)
        if lo < 0 or hi >= self.n_seq_max:
            raise ValueError(
                f"sequence id {hi if hi >= self.n_seq_max else lo} out of range [0, {self.n_seq_max})"
            )

    def decode(self, batch: Batch) -> None:
        """Run the model on a batch. Raises NoKvSlotError / AbortedError / DecodeError."""
        n = self._check_batch(batch)
        if n > self.n_ubatch and not self._causal:
            # llama.cpp asserts (aborts the process) on this: non-causal attention cannot split a batch
            raise ValueError(
                f"decode: a batch of {n} tokens exceeds n_ubatch={self.n_ubatch}, which non-causal "
                "attention cannot split (create the context with n_ubatch >= n_batch)"
            )
        self.decode_native(
            lambda ptr: self._run(nctx.decode, ptr, batch._buf.struct(n), "decode"),
            what="decode",
            n_tokens=n,
            n_outputs=batch.n_outputs,
        )

    def encode(self, batch: Batch) -> None:
        """Run the encoder (encoder-decoder and embedding models)."""
        n = self._check_batch(batch)
        if n > self.n_ubatch:
            # llama.cpp asserts (aborts the process) on this: the encoder cannot split a batch
            raise ValueError(
                f"encode: a batch of {n} tokens exceeds n_ubatch={self.n_ubatch}; the encoder runs "
                "the whole batch in one micro-batch (create the context with n_ubatch >= n_batch)"
            )
        self.decode_native(
            lambda ptr: self._run(nctx.encode, ptr, batch._buf.struct(n), "encode"),
            what="encode",
            n_tokens=n,
            n_outputs=n,
        )

    def _run(self, fn: Any, ptr: Any, struct: Any, what: str) -> int:
        if not self._remote:
            return int(fn(ptr, struct))
        synced = nctx.decode_sync if fn is nctx.decode else nctx.encode_sync
        try:
            return int(run_guarded(synced, ptr, struct, timeout=self.model.params.rpc_timeout, what=what))
        except (FatalNativeError, TimeoutError) as exc:
            self._poison(f"{what} over RPC failed: {exc}; this context is no longer usable")
            raise RpcError(self._poisoned or "") from exc

    def _poison(self, message: str) -> None:
        """A native thread is stuck inside this context: never free it (nor its model)."""
        self._poisoned = message
        self._h.free = lambda _ptr: None
        self.model._h.free = lambda _ptr: None

    @property
    def poisoned(self) -> str | None:
        """Why this context became unusable (an RPC worker died mid-decode), else None."""
        return self._poisoned

    def abort(self) -> None:
        """Ask a running (or the next) decode to stop; it raises AbortedError. Thread-safe."""
        self._abort.set()

    def clear_abort(self) -> None:
        self._abort.clear()

    # --------------------------------------------------- logits / embeddings
    def logits(self, i: int = -1) -> npt.NDArray[np.float32]:
        """A copy of the logits (n_vocab float32) of output ``i`` of the last decode.

        ``i`` is the batch index of a token decoded with logits on (negative counts from the last
        output). One row is copied; an n_ctx × n_vocab matrix is never built.
        """
        ptr = self._acquire()
        try:
            if (i >= 0 and i >= self.n_batch) or (i < 0 and -i > self._n_outputs):
                raise IndexError(f"no logits for index {i} ({self._n_outputs} outputs in the last batch)")
            view = nctx.logits_ith(ptr, i, self.n_vocab)
            if view is None:
                raise IndexError(f"no logits for batch index {i}: decode it with logits=True")
            out: npt.NDArray[np.float32] = view.copy()
            return out
        finally:
            self._lock.release()

    def embeddings(self, i: int = -1) -> npt.NDArray[np.float32]:
        """Embedding of output token ``i`` (pooling none) — a copy of n_embd floats."""
        ptr = self._acquire()
        try:
            view = nctx.embeddings_ith(ptr, i, self.n_embd)
            if view is None:
                raise IndexError(
                    f"no embeddings for output {i} (is embeddings=True and the token an output?)"
                )
            out: npt.NDArray[np.float32] = view.copy()
            return out
        finally:
            self._lock.release()

    def seq_embeddings(self, seq_id: int) -> npt.NDArray[np.float32]:
        """Pooled embedding of a sequence (pooling mean/cls/last; rank gives n_cls_out scores)."""
        pooling = self.pooling  # read before taking the lock (it takes the lock itself)
        n = max(self.model.n_cls_out, 1) if pooling == "rank" else self.n_embd
        ptr = self._acquire()
        try:
            view = nctx.embeddings_seq(ptr, seq_id, n)
            if view is None:
                raise IndexError(f"no pooled embeddings for sequence {seq_id} (pooling={pooling})")
            out: npt.NDArray[np.float32] = view.copy()
            return out
        finally:
            self._lock.release()

    # ----------------------------------------------------------- adapters
    def set_loras(self, adapters: list[tuple[Any, float]]) -> None:
        """Apply LoRA adapters ``[(LoraAdapter, scale), …]`` (replaces the current set; [] clears)."""
        from .lora import LoraAdapter

        for a, _ in adapters:
            if not isinstance(a, LoraAdapter):
                raise TypeError("set_loras expects (LoraAdapter, scale) pairs")
            if a.model is not self.model:
                raise ValueError("LoRA adapter was loaded for a different model")
        handles = [a._ptr() for a, _ in adapters]
        rc = self._call(nctx.set_adapters_lora, handles, [float(s) for _, s in adapters])
        if rc != 0:
            from ..errors import LoraError

            raise LoraError(f"llama.cpp rejected the LoRA adapters (code {rc})")
        for a, _ in getattr(self, "_loras", []):
            a._applied.discard(self)
        self._loras = list(adapters)  # keep adapters alive while applied
        for a, _ in adapters:
            a._applied.add(self)  # closing an applied adapter detaches it from this context first

    @property
    def loras(self) -> list[tuple[Any, float]]:
        """The applied LoRA adapters ``[(LoraAdapter, scale), …]`` (a copy)."""
        return list(getattr(self, "_loras", []))

    def set_control_vector(
        self, data: npt.NDArray[np.float32] | None, layer_start: int = 1, layer_end: int | None = None
    ) -> None:
        """Apply a control vector (n_layer × n_embd, row i for layer i+1) to layers [start, end]; None clears."""
        from ..errors import LoraError

        n_embd = self.model.n_embd
        if data is not None:
            arr = np.asarray(data, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[1] != n_embd:
                raise LoraError(f"control vector must have shape (n_layers, {n_embd}), got {arr.shape}")
            data = arr
        end = self.model.n_layer if layer_end is None else layer_end
        rc = self._call(nctx.set_adapter_cvec, data, n_embd, layer_start, end)
        if rc != 0:
            raise LoraError(f"llama.cpp rejected the control vector (code {rc})")

    # ---------------------------------------------------------------- perf
    def perf(self) -> PerfData:
        """llama.cpp's own timings for this context (prompt eval and eval ms and counts)."""
        return self._call(nctx.perf_context)  # type: ignore[no-any-return]

    def reset_perf(self) -> None:
        self._call(nctx.perf_context_reset)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"n_ctx={self.n_ctx} n_seq_max={self.n_seq_max}"
        return f"<Context {state}>"
