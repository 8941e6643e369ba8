"""`IncrementalChat`: a conversation kept in the KV cache, prefilled while the user types.

* The system prompt is decoded once (optionally restored from / saved to a session file).
* Each user message is prefilled incrementally (:class:`IncrementalPrefill`) after the
  history, which is never re-tokenized: the history is the exact token stream already in the
  cache (the model's own reply tokens plus the template's end-of-turn tokens).
* When the next turn would not fit, the oldest turns leave the cache (sliding window) and the
  rest is shifted down; ``keep_turns`` caps how many turns survive an eviction.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..chat.formatter import ChatFormatter
from ..chat.template import ChatTemplate, render_chat
from ..core import Context
from ..errors import LlamabindError, StateError, TemplateError
from ..generation.generator import GenerationChunk, Generator, Timings
from .prefill import IncrementalPrefill

__all__ = ["ChatTurnFormat", "IncrementalChat", "Turn"]

log = logging.getLogger("llamabind.incremental")

_MARK = "\x00\x01MARK\x01\x00"


@dataclass(frozen=True)
class ChatTurnFormat:
    """A chat template cut into the pieces an incremental conversation needs.

    ``system``: everything before the first user message (system prompt, BOS); ``user_before`` /
    ``user_after``: around a user message (``user_after`` ends with the generation prompt);
    ``assistant_end``: what closes an assistant reply.
    """

    system: str
    user_before: str
    user_after: str
    assistant_end: str

    @classmethod
    def from_template(
        cls,
        template: ChatTemplate,
        *,
        system_prompt: str | None = None,
        bos_token: str = "",
        eos_token: str = "",
    ) -> ChatTurnFormat:
        def render(msgs: list[dict[str, str]], gen: bool) -> str:
            return render_chat(
                template, msgs, bos_token=bos_token, eos_token=eos_token, add_generation_prompt=gen
            )

        sys_msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
        u1 = {"role": "user", "content": "U1"}
        a1 = {"role": "assistant", "content": "A1"}
        first = render([*sys_msgs, {"role": "user", "content": _MARK}], True)
        hist = render([*sys_msgs, u1, a1], False)
        nxt = render([*sys_msgs, u1, a1, {"role": "user", "content": _MARK}], True)
        upto_a1 = render([*sys_msgs, u1], True)
        if not nxt.startswith(hist) or not hist.startswith(upto_a1) or _MARK not in first:
            raise TemplateError(f"chat template {template.name!r} does not render turns as a growing prefix")
        user_before, _, user_after = nxt[len(hist) :].partition(_MARK)
        first_before = first.partition(_MARK)[0]
        if not first_before.endswith(user_before):
            raise TemplateError(f"chat template {template.name!r} renders the first user turn differently")
        system = first_before[: len(first_before) - len(user_before)]
        reply = hist[len(upto_a1) :]
        if not reply.startswith("A1"):
            raise TemplateError(f"chat template {template.name!r} alters assistant messages")
        return cls(system, user_before, user_after, reply[2:])


@dataclass
class Turn:
    """One exchange in the cache: its token span and texts."""

    user: str
    reply: str = ""
    n_tokens: int = 0  # tokens of this turn in the cache (user turn + reply + end of turn)


class IncrementalChat:
    """A conversation on sequence ``seq_id`` of ``ctx`` with incremental prefill of each message.

    ``type(text)`` while the user edits (call it debounced from a UI), then ``reply(text)`` to
    stream the answer; ``history`` is the list of :class:`Turn` s still in the cache. Like its
    Context, an IncrementalChat is used from one thread at a time.
    """

    def __init__(
        self,
        ctx: Context,
        *,
        system_prompt: str | None = None,
        template: ChatTemplate | None = None,
        keep_turns: int = 0,
        reserve: int = 256,
        margin: int = 2,
        session_cache: str | os.PathLike[str] | None = None,
        seq_id: int = 0,
    ) -> None:
        self.ctx = ctx
        self.model = ctx.model
        self.gen = Generator(ctx, seq_id)
        self.formatter = ChatFormatter.for_model(self.model, template)
        self.format = ChatTurnFormat.from_template(
            self.formatter.template,
            system_prompt=system_prompt,
            bos_token=self.formatter.bos_token,
            eos_token=self.formatter.eos_token,
        )
        self.keep_turns = max(0, keep_turns)
        self.reserve = max(1, reserve)
        self.history: list[Turn] = []
        self.evicted_turns = 0
        self.system_tokens = self._system_tokens()
        self.session_restored = False
        self._load_system(session_cache)
        self.prefill = IncrementalPrefill(
            self.gen,
            base=self.system_tokens,
            before=self.format.user_before,
            after=self.format.user_after,
            margin=margin,
        )
        self._end_tokens = self.model.tokenize(
            self.format.assistant_end, add_special=False, parse_special=True
        )

    # ------------------------------------------------------------ setup
    def _system_tokens(self) -> list[int]:
        return self.formatter.tokenize(self.format.system)

    @property
    def n_ctx(self) -> int:
        return self.ctx.n_ctx_per_seq

    def _load_system(self, path: str | os.PathLike[str] | None) -> None:
        """Decode the system prompt once; with ``path``, restore it from there or save it there."""
        toks = self.system_tokens
        gen = self.gen
        if path is not None and os.path.isfile(path):
            try:
                loaded = self.ctx.state.seq_load(path, gen.seq_id)
            except (StateError, LlamabindError) as exc:
                log.warning("session cache %s not usable (%s): decoding the system prompt", path, exc)
                loaded = None
            if loaded == toks:
                gen.cached = list(toks)
                self.session_restored = True
                return
            gen.reset()
        if toks and gen.cached != toks:
            gen.reset()
            IncrementalPrefill(gen, base=toks, margin=0).update("")  # decode, no logits needed
        if path is not None and toks:
            try:
                self.ctx.state.seq_save(path, gen.seq_id, toks)
            except (StateError, OSError) as exc:
                log.warning("could not write the session cache %s: %s", path, exc)

    # ------------------------------------------------------------ window
    def _fits(self, n_tokens: int) -> bool:
        return n_tokens + self.reserve <= self.n_ctx

    def _evict(self, n_drop: int) -> None:
        """Remove the oldest ``n_drop`` turns from the cache and shift the rest down."""
        if n_drop <= 0:
            return
        gen = self.gen
        seq = gen.seq_id
        start = len(self.system_tokens)
        span = sum(t.n_tokens for t in self.history[:n_drop])
        end = start + span
        mem = self.ctx.memory
        cached = gen.cached
        if mem.can_shift and span > 0:
            mem.remove(seq, start, end)
            mem.shift(seq, end, -1, -span)
            gen.cached = cached[:start] + cached[end:]
        else:  # no position shifting (e.g. recurrent memory): re-decode what stays
            mem.remove(seq, start, -1)
            gen.cached = cached[:start]
        base = list(self.prefill.base)
        self.prefill.base = base[:start] + base[end:]
        del self.history[:n_drop]
        self.evicted_turns += n_drop
        log.info("evicted %d turn(s) (%d tokens) from the context", n_drop, span)

    def _make_room(self, n_needed: int) -> None:
        """Evict oldest turns until a prompt of ``n_needed`` tokens (plus the reply reserve) fits."""
        if self._fits(n_needed):
            return
        drop = max(0, len(self.history) - self.keep_turns) if self.keep_turns else 0
        span = sum(t.n_tokens for t in self.history[:drop])
        while not self._fits(n_needed - span) and drop < len(self.history):
            span += self.history[drop].n_tokens
            drop += 1
        self._evict(drop)

    # ------------------------------------------------------------ turns
    def type(self, text: str, *, cancel: threading.Event | None = None) -> int:
        """The user's message is now ``text``: prefill what is stable; returns tokens decoded."""
        n = len(self.prefill.tokens(text))
        self._make_room(n)
        if not self._fits(n):
            return 0  # too long to prefill; reply() truncates it
        return self.prefill.update(text, cancel=cancel)

    def _fit_message(self, text: str) -> str:
        """Truncate a message that cannot fit even after evicting every turn (with a warning)."""
        n = len(self.prefill.tokens(text))
        self._make_room(n)
        if self._fits(n):
            return text
        room = self.n_ctx - self.reserve - len(self.prefill.tokens(""))
        toks = self.model.tokenize(text, add_special=False, parse_special=False)
        if room <= 0:
            raise LlamabindError(
                f"the context ({self.n_ctx} tokens) has no room for a message after the system prompt "
                f"and a reply reserve of {self.reserve}"
            )
        log.warning("message of %d tokens truncated to %d to fit the context", len(toks), room)
        return self.model.detokenize(toks[:room])

    def reply(self, text: str, **kwargs: Any) -> Iterator[GenerationChunk]:
        """Flush the message ``text`` and stream the reply (``Generator.stream`` keyword arguments).

        The turn (message, reply and end-of-turn tokens) joins the history when the stream ends,
        also when it is cancelled.
        """
        text = self._fit_message(text)
        prompt = self.prefill.tokens(text)
        turn_start = len(self.prefill.base)
        limit = kwargs.get("max_tokens", self.reserve)
        kwargs["max_tokens"] = self.reserve if limit is None or limit < 0 else min(limit, self.reserve)
        reply_tokens: list[int] = []
        parts: list[str] = []
        try:
            for chunk in self.prefill.stream(text, **kwargs):
                reply_tokens.extend(chunk.tokens)
                parts.append(chunk.text)
                yield chunk
        finally:
            history = [*prompt, *reply_tokens, *self._end_tokens]
            self.history.append(Turn(text, "".join(parts), len(history) - turn_start))
            self.prefill.rebase(history)

    @property
    def last_timings(self) -> Timings:
        return self.gen.last_timings

    @property
    def n_cached(self) -> int:
        return len(self.gen.cached)

    def messages(self) -> list[Mapping[str, str]]:
        out: list[Mapping[str, str]] = []
        for t in self.history:
            out.append({"role": "user", "content": t.user})
            out.append({"role": "assistant", "content": t.reply})
        return out

    def reset(self, history: Sequence[Turn] = ()) -> None:
        """Forget the conversation (the system prompt stays cached)."""
        keep = len(self.system_tokens)
        self.ctx.memory.remove(self.gen.seq_id, keep, -1)
        del self.gen.cached[keep:]
        self.history = list(history)
        self.prefill.rebase(self.system_tokens)
