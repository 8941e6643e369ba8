"""What the routers share: the holder of the server state, request checks, and collecting the
events of a non-streamed request group."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import Request

from .. import __version__
from ..batching import DoneEvent, ErrorEvent, TokenEvent
from .config import ServerConfig
from .errors import APIError, error_from_exception
from .handlers import ChoiceOutput, usage_dict
from .metrics import Metrics
from .schemas import SamplingFields
from .state import RequestGroup, ServerState

if TYPE_CHECKING:
    from .router import ModelRouter

__all__ = ["FINGERPRINT", "Holder", "check_model", "check_n", "collect", "usage_of"]

FINGERPRINT = f"llamabind-{__version__}"


class Holder:
    """The server state once the model is loaded (``/health`` reports loading until then), or, on
    a router server, the :class:`~.router.ModelRouter` of its models (``router``)."""

    def __init__(self, config: ServerConfig, router: ModelRouter | None = None) -> None:
        self.config = config
        self.router = router
        self.state: ServerState | None = None
        self.error: BaseException | None = None
        self.closed = False
        self.metrics = Metrics(
            lambda: self.state.scheduler if self.state is not None else None,
            models=(lambda: [(n, s.scheduler) for n, s in router.loaded()]) if router is not None else None,
        )

    async def resolve(self, name: str | None, *, generation: bool = False) -> ServerState:
        """The state that serves a request naming ``name``: the one model (any name, unless
        ``strict_model_name``), or on a router the named model, loaded on demand (404 for an
        unknown name). ``generation``: refuse models whose role is embedding or rerank."""
        router = self.router
        if router is None:
            state = self.get()
            check_model(state, name)
            return state
        if generation:
            entry = router.lookup(name).entry
            if entry.role != "generation":
                raise APIError(
                    400,
                    f"the model {entry.name!r} is an {entry.role} model: it does not generate text",
                    param="model",
                    code="model_not_generative",
                )
        return await router.acquire(name)

    def get(self) -> ServerState:
        """The one model's state (on a router: the default model's, once it is loaded)."""
        if self.router is not None:
            return self._router_default()
        if self.state is not None and self.state.engine_error is not None:
            raise APIError(
                503, f"the model failed to load: {self.state.engine_error}", code="model_load_failed"
            )
        if self.state is None:
            if self.error is not None:
                raise APIError(503, f"the model failed to load: {self.error}", code="model_load_failed")
            raise APIError(503, "the model is loading", code="model_loading")
        return self.state

    def _router_default(self) -> ServerState:
        assert self.router is not None
        m = self.router.lookup(None)
        if m.state is None:
            raise APIError(503, f"the model {m.name!r} is not loaded", code="model_loading")
        return m.state


def check_model(state: ServerState, name: str | None) -> None:
    """A single-model server answers whatever ``model`` it is asked for (as llama-server does: clients
    such as LangChain send ``gpt-3.5-turbo`` by default) and echoes its own alias in the response;
    ``ServerConfig.strict_model_name`` makes unknown names 404."""
    if not state.config.strict_model_name:
        return
    if name is not None and name not in state.names:
        raise APIError(
            404,
            f"the model {name!r} does not exist (this server serves {state.alias!r})",
            param="model",
            code="model_not_found",
        )


def check_n(state: ServerState, body: SamplingFields) -> None:
    if body.n > state.config.max_n:
        raise APIError(400, f"n must be at most {state.config.max_n}", param="n", code="invalid_value")


async def _cancel_on_disconnect(request: Request, group: RequestGroup) -> None:
    """For non-streaming requests: cancel the generation if the client goes away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            group.cancel()
            return


async def collect(request: Request, group: RequestGroup, n: int) -> list[ChoiceOutput]:
    """Every choice's output of a submitted group (cancelled if the client disconnects)."""
    outs = [ChoiceOutput(i) for i in range(n)]
    watcher = asyncio.create_task(_cancel_on_disconnect(request, group))
    try:
        async for i, ev in group.events():
            out = outs[i]
            if isinstance(ev, TokenEvent):
                out.text_parts.append(ev.text)
                out.tokens.extend(ev.tokens)
                out.logprobs.extend(ev.logprobs)
            elif isinstance(ev, DoneEvent):
                out.finish_reason = ev.finish_reason
                out.usage = ev.usage
                out.stop = ev.stop
                out.closed = ev.closed
            elif isinstance(ev, ErrorEvent):
                raise error_from_exception(ev.error)
    finally:
        watcher.cancel()
        group.cancel()
    return outs


def usage_of(outs: Sequence[ChoiceOutput], prompts_per_choice: Sequence[int]) -> dict[str, Any]:
    """Prompt tokens counted once per distinct prompt, completion tokens summed over choices."""
    seen: set[int] = set()
    prompt = cached = completion = 0
    for out, p in zip(outs, prompts_per_choice, strict=True):
        u = out.usage
        if u is None:
            continue
        completion += u.completion_tokens
        if p not in seen:
            seen.add(p)
            prompt += u.prompt_tokens
            cached += u.cached_tokens
    return usage_dict(prompt, completion, cached)
