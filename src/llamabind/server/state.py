"""What the routes share: the model, the scheduler (in this process, or an
:class:`~llamabind.engine.EngineProcess` proxy to a supervised engine process), the chat formatter,
the embedder, and the bridge from the engine's events to asyncio."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..batching import DoneEvent, ErrorEvent, Event, GenRequest, Scheduler
from ..chat import ChatFormatter
from ..core import Model
from ..engine import EmbeddingJobs, EngineProcess, EngineSpec
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
        #: test-only engine hook (``__test_engine``), honoured only by an engine process started
        #: with LLAMABIND_TEST_HOOKS=1
        self.test_hook: str | None = None

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

    def submit(self, scheduler: Scheduler | EngineProcess) -> None:
        """Queue every request; if one is refused, cancel the ones already queued and re-raise."""
        try:
            for req in self.requests:
                if isinstance(scheduler, EngineProcess):
                    scheduler.submit(req, test_hook=self.test_hook)
                else:
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
    """Embeddings and reranking over dedicated contexts (:class:`~llamabind.engine.EmbeddingJobs`)
    that only the engine touches: in the scheduler's engine thread, or in the engine process. Each
    group of inputs that fits one decode is one engine job, so generation keeps flowing between
    them."""

    def __init__(self, model: Model, scheduler: Scheduler | EngineProcess, config: ServerConfig) -> None:
        self.model = model
        self.scheduler = scheduler
        self.n_ctx = config.embeddings_n_ctx
        self.n_seq = config.embeddings_n_seq
        self.n_threads = config.scheduler.n_threads
        self._jobs: EmbeddingJobs | None = None
        if isinstance(scheduler, Scheduler):
            self._jobs = EmbeddingJobs(model, n_ctx=self.n_ctx, n_seq=self.n_seq, n_threads=self.n_threads)

    @property
    def dim(self) -> int:
        sched = self.scheduler
        if isinstance(sched, EngineProcess):  # a vocab-only model here does not know
            sched.wait_ready()
            return int(sched.info.get("n_embd_out") or sched.info["n_embd"])
        return self.model.n_embd_out or self.model.n_embd

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
        sched, jobs = self.scheduler, self._jobs
        for group in self.groups(seqs):
            chunk = [list(seqs[i]) for i in group]
            if isinstance(sched, EngineProcess):
                results.extend(sched.embed_tokens(chunk))
            else:
                assert jobs is not None
                results.extend(sched.run_in_engine(lambda c=chunk: jobs.embed_tokens(c)))  # type: ignore[misc]
        return results

    @property
    def can_rerank(self) -> bool:
        """Whether the model is a reranker: its metadata asks for rank pooling (a classification
        head scores each query/document pair)."""
        m = self.model
        return m.meta(f"{m.architecture}.pooling_type") == "4"

    def rerank(self, query: str, documents: Sequence[str]) -> tuple[list[Any], int]:
        """Blocking (run it in a worker thread): (results best first, tokens read), scored by the
        engine with rank pooling over a dedicated context."""
        if not self.can_rerank:
            from ..errors import UnsupportedError

            raise UnsupportedError(
                f"{self.model.path.name} is not a reranker: its metadata does not ask for rank pooling "
                "(a classification head that scores query/document pairs)"
            )
        sched, jobs = self.scheduler, self._jobs
        if isinstance(sched, EngineProcess):
            return sched.rerank(query, list(documents))
        assert jobs is not None
        return sched.run_in_engine(lambda: jobs.rerank(query, documents))

    def close(self) -> None:
        """Free the embeddings contexts (call after the engine thread stopped)."""
        if self._jobs is not None:
            self._jobs.close()


@dataclass
class ServerState:
    """The loaded model and everything built on it.

    With ``engine_spec`` the model, context and scheduler live in a supervised engine process
    (``scheduler`` is then an :class:`~llamabind.engine.EngineProcess`) and ``model`` only serves
    tokenization, templates and token pieces here (a vocab-only load is enough)."""

    model: Model
    config: ServerConfig
    owns_model: bool = False
    files: FileStore | None = None
    engine_spec: EngineSpec | None = None
    scheduler: Scheduler | EngineProcess = field(init=False)
    formatter: ChatFormatter = field(init=False)
    #: the multimodal projector (None: text-only) and how media references are resolved
    mtmd: MtmdContext | None = field(init=False, default=None)
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
        policy = MediaPolicy(
            max_bytes=cfg.media_max_bytes,
            allow_remote=cfg.allow_remote_media,
            remote_timeout=cfg.media_fetch_timeout,
        )
        self.media = MediaResolver(policy, files=self.files.content if self.files is not None else None)
        self.draft: Model | None = None
        if self.engine_spec is not None:
            if cfg.mmproj:
                raise ValueError(
                    "a multimodal projector (--mmproj) needs the in-process engine (--engine thread)"
                )
            self.scheduler = EngineProcess(
                self.engine_spec, vocab=self.model, watchdog_timeout=cfg.watchdog_timeout
            )
        else:
            self._start_local()
        self.embeddings = EmbeddingService(self.model, self.scheduler, cfg)
        path = self.model.path
        self.alias = cfg.model_alias or path.stem
        self.names = frozenset({self.alias, path.name, path.stem})

    def _start_local(self) -> None:
        cfg = self.config
        if cfg.mmproj:
            self.mtmd = MtmdContext(
                self.model,
                cfg.mmproj,
                use_gpu=cfg.mmproj_use_gpu,
                n_threads=cfg.scheduler.n_threads,
                embd_cache_bytes=64 * 1024 * 1024,
            )
        try:
            if cfg.scheduler.spec == "draft":
                if not cfg.draft_model:
                    raise ValueError("speculative decoding with a draft model needs a draft model path")
                self.draft = Model(cfg.draft_model, n_gpu_layers=cfg.draft_n_gpu_layers)
            sched = Scheduler(self.model, cfg.scheduler, draft_model=self.draft)
        except BaseException:
            self._close_side_models()
            raise
        self.scheduler = sched
        if cfg.loras:
            try:
                sched.run_in_engine(lambda: sched.ctx.set_loras(list(cfg.loras)))
            except BaseException:
                sched.shutdown()
                self._close_side_models()
                raise

    @property
    def ready(self) -> bool:
        """False while the engine process (re)starts."""
        sched = self.scheduler
        return sched.ready if isinstance(sched, EngineProcess) else True

    @property
    def engine_error(self) -> BaseException | None:
        """Why the engine process could not start (it is not retried), if it could not."""
        sched = self.scheduler
        return sched.error if isinstance(sched, EngineProcess) else None

    def _close_side_models(self) -> None:
        """Free the projector and the draft model (the scheduler is stopped or was never built)."""
        if self.mtmd is not None:
            self.mtmd.close()
            self.mtmd = None
        if self.draft is not None:
            self.draft.close()
            self.draft = None

    def close(self) -> None:
        sched = self.scheduler
        if isinstance(sched, EngineProcess):
            sched.shutdown(timeout=self.config.shutdown_timeout)
        else:
            sched.shutdown()
        self.embeddings.close()
        self._close_side_models()
        if self.owns_model:
            self.model.close()
