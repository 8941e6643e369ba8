"""What the routes share: the model, the scheduler, the chat formatter, the embedder, and the bridge
from the engine thread's events to asyncio."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..batching import DoneEvent, ErrorEvent, Event, GenRequest, Scheduler
from ..chat import ChatFormatter
from ..core import Model
from ..errors import EmbeddingError
from ..generation.sampling import SamplingParams
from ..multimodal import MediaPolicy, MediaResolver, MtmdContext
from .config import ServerConfig
from .files import FileStore

__all__ = ["EmbeddingService", "RequestGroup", "ServerState"]

log = logging.getLogger("llamabind.server")


class RequestGroup:
    """The GenRequests of one HTTP request (``n`` choices, several prompts), their events merged
    into one asyncio queue as ``(index, event)``. ``emit`` runs in the engine thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self.requests: list[GenRequest] = []
        self._submitted = 0

    def add(
        self,
        prompt: Sequence[int],
        sampling: SamplingParams,
        *,
        max_tokens: int | None,
        stop: Sequence[str],
        logprobs: int | None,
        ignore_eos: bool = False,
        cache_prompt: bool = True,
        media: Any = None,
        render_special: bool = False,
    ) -> GenRequest:
        index = len(self.requests)
        loop = self._loop
        put = self.queue.put_nowait

        def emit(ev: Event, i: int = index) -> None:
            try:
                loop.call_soon_threadsafe(put, (i, ev))
            except RuntimeError:  # the event loop is gone (server shutting down)
                pass

        req = GenRequest(
            prompt=list(prompt),
            emit=emit,
            sampling=sampling,
            max_tokens=max_tokens,
            stop=list(stop),
            logprobs=logprobs,
            ignore_eos=ignore_eos,
            cache_prompt=cache_prompt,
            media=media,
            speculative=media is None,
            render_special=render_special,
        )
        self.requests.append(req)
        return req

    def submit(self, scheduler: Scheduler) -> None:
        """Queue every request; if one is refused, cancel the ones already queued and re-raise."""
        try:
            for req in self.requests:
                scheduler.submit(req)
                self._submitted += 1
        except BaseException:
            self.cancel()
            raise

    def cancel(self) -> None:
        for req in self.requests:
            req.cancel()

    @property
    def submitted(self) -> int:
        """How many requests were queued (each ends with one DoneEvent or ErrorEvent)."""
        return self._submitted

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        """Every event until each submitted request has finished (DoneEvent or ErrorEvent)."""
        pending = self._submitted
        while pending > 0:
            i, ev = await self.queue.get()
            if isinstance(ev, (DoneEvent, ErrorEvent)):
                pending -= 1
            yield i, ev


class EmbeddingService:
    """Embeddings over a dedicated embeddings context (``llamabind.embeddings.Embedder``) that only
    the engine thread touches; each group of inputs that fits one decode is one engine job, so
    generation keeps flowing between them."""

    def __init__(self, model: Model, scheduler: Scheduler, config: ServerConfig) -> None:
        self.model = model
        self.scheduler = scheduler
        self.n_ctx = config.embeddings_n_ctx
        self.n_seq = config.embeddings_n_seq
        self.n_threads = config.scheduler.n_threads
        self._embedder: Any = None
        self._reranker: Any = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.model.n_embd_out or self.model.n_embd

    def _get(self) -> Any:
        if self._embedder is None:
            from ..embeddings import Embedder

            self._embedder = Embedder(
                self.model,
                pooling="mean",
                normalize=True,
                n_ctx=self.n_ctx,
                n_seq_max=self.n_seq,
                n_threads=self.n_threads,
            )
        return self._embedder

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text, add_special=True, parse_special=False)

    def check(self, seqs: Sequence[Sequence[int]]) -> None:
        from ..errors import ContextOverflowError

        for i, toks in enumerate(seqs):
            if not toks:
                raise EmbeddingError(f"input[{i}] is empty")
            self.model.vocab.check(toks)
            if len(toks) > self.n_ctx:
                raise ContextOverflowError(
                    f"input[{i}] has {len(toks)} tokens, more than the {self.n_ctx} an embedding input may have",
                    len(toks),
                    self.n_ctx,
                )

    def groups(self, seqs: Sequence[Sequence[int]]) -> list[list[int]]:
        out: list[list[int]] = []
        group: list[int] = []
        used = 0
        for i, toks in enumerate(seqs):
            if group and (used + len(toks) > self.n_ctx or len(group) >= self.n_seq):
                out.append(group)
                group, used = [], 0
            group.append(i)
            used += len(toks)
        if group:
            out.append(group)
        return out

    def embed(self, seqs: Sequence[Sequence[int]]) -> list[npt.NDArray[np.float32]]:
        """Blocking (run it in a worker thread): one L2-normalised mean-pooled vector per input."""
        self.check(seqs)
        results: list[npt.NDArray[np.float32]] = []
        for group in self.groups(seqs):
            chunk = [list(seqs[i]) for i in group]

            def job(chunk: list[list[int]] = chunk) -> list[npt.NDArray[np.float32]]:
                vecs: list[npt.NDArray[np.float32]] = self._get().embed_tokens(chunk)
                return vecs

            results.extend(self.scheduler.run_in_engine(job))
        return results

    @property
    def can_rerank(self) -> bool:
        """Whether the model is a reranker: its metadata asks for rank pooling (a classification
        head scores each query/document pair)."""
        m = self.model
        return m.meta(f"{m.architecture}.pooling_type") == "4"

    def rerank(self, query: str, documents: Sequence[str]) -> tuple[list[Any], int]:
        """Blocking (run it in a worker thread): (results best first, tokens read), scored in the
        engine thread with rank pooling over a dedicated context."""
        if not self.can_rerank:
            from ..errors import UnsupportedError

            raise UnsupportedError(
                f"{self.model.path.name} is not a reranker: its metadata does not ask for rank pooling "
                "(a classification head that scores query/document pairs)"
            )

        def job() -> tuple[list[Any], int]:
            if self._reranker is None:
                from ..embeddings import Embedder

                self._reranker = Embedder(
                    self.model,
                    pooling="rank",
                    n_ctx=self.n_ctx,
                    n_seq_max=self.n_seq,
                    n_threads=self.n_threads,
                )
            rr = self._reranker
            n_tokens = sum(len(rr.rerank_tokens(query, d)) for d in documents)
            return rr.rerank(query, documents), n_tokens

        return self.scheduler.run_in_engine(job)

    def close(self) -> None:
        """Free the embeddings contexts (call after the engine thread stopped)."""
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        if self._reranker is not None:
            self._reranker.close()
            self._reranker = None


@dataclass
class ServerState:
    """The loaded model and everything built on it."""

    model: Model
    config: ServerConfig
    owns_model: bool = False
    scheduler: Scheduler = field(init=False)
    formatter: ChatFormatter = field(init=False)
    #: the multimodal projector (None: text-only) and how media references are resolved
    mtmd: MtmdContext | None = field(init=False, default=None)
    files: FileStore | None = None
    media: MediaResolver = field(init=False)
    embeddings: EmbeddingService = field(init=False)
    alias: str = field(init=False)
    names: frozenset[str] = field(init=False)
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        cfg = self.config
        self.formatter = ChatFormatter(
            self.model, cfg.chat_template, template_file=cfg.chat_template_file, reasoning=cfg.reasoning
        )
        if cfg.mmproj:
            self.mtmd = MtmdContext(
                self.model,
                cfg.mmproj,
                use_gpu=cfg.mmproj_use_gpu,
                n_threads=cfg.scheduler.n_threads,
                embd_cache_bytes=64 * 1024 * 1024,
            )
        policy = MediaPolicy(
            max_bytes=cfg.media_max_bytes,
            allow_remote=cfg.allow_remote_media,
            remote_timeout=cfg.media_fetch_timeout,
        )
        self.media = MediaResolver(policy, files=self.files.content if self.files is not None else None)
        self.draft: Model | None = None
        try:
            if cfg.scheduler.spec == "draft":
                if not cfg.draft_model:
                    raise ValueError("speculative decoding with a draft model needs a draft model path")
                self.draft = Model(cfg.draft_model, n_gpu_layers=cfg.draft_n_gpu_layers)
            self.scheduler = Scheduler(self.model, cfg.scheduler, draft_model=self.draft)
        except BaseException:
            self._close_side_models()
            raise
        if cfg.loras:
            sched = self.scheduler
            try:
                sched.run_in_engine(lambda: sched.ctx.set_loras(list(cfg.loras)))
            except BaseException:
                sched.shutdown()
                self._close_side_models()
                raise
        self.embeddings = EmbeddingService(self.model, self.scheduler, cfg)
        path = self.model.path
        self.alias = cfg.model_alias or path.stem
        self.names = frozenset({self.alias, path.name, path.stem})

    def _close_side_models(self) -> None:
        """Free the projector and the draft model (the scheduler is stopped or was never built)."""
        if self.mtmd is not None:
            self.mtmd.close()
            self.mtmd = None
        if self.draft is not None:
            self.draft.close()
            self.draft = None

    def close(self) -> None:
        self.scheduler.shutdown()
        self.embeddings.close()
        self._close_side_models()
        if self.owns_model:
            self.model.close()
