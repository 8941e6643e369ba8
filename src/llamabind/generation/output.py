"""`OutputStream`: sampled tokens → the text a client may see, and when the output ends.

The one place that combines the streaming detokenizer (UTF-8 is never split), the stop-string
matcher (a stop string never leaks, not even in part), end-of-generation and stop tokens, and the
``max_tokens`` / context limits. ``Generator`` and the batching ``Scheduler`` both feed it.

    >>> out = OutputStream(model.vocab, n_prompt=len(prompt), n_ctx=n_ctx, max_tokens=64, stop=["\\n\\n"])
    >>> while out.finish_reason is None:
    ...     text = out.feed(sample())
    ...     if text is None:
    ...         break  # an end token, or a stop string that released nothing: emit nothing
    ...     emit(text, token)  # text may be "" (held back); finish_reason may now be set
    >>> emit(out.finish())  # held-back text, released at the end of the stream
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..core import StreamingDetokenizer, Vocab
from .stop import StopMatcher

__all__ = ["OutputStream", "token_limit"]


def token_limit(max_tokens: int | None, n_ctx: int) -> int:
    """The most tokens a request may generate: ``max_tokens``, or unbounded (``n_ctx``) when None / < 0."""
    return max_tokens if max_tokens is not None and max_tokens >= 0 else n_ctx


class OutputStream:
    """The output of one generation, fed one sampled token at a time.

    ``n_prompt`` tokens sit in a sequence of ``n_ctx`` positions; the output ends with
    ``"length"`` once ``max_tokens`` tokens were generated or the next token would not fit.
    End-of-generation tokens (unless ``ignore_eos``) and ``stop_tokens`` end it with ``"stop"``
    without being part of it; a completed stop string ends it with ``"stop"`` and everything from
    the stop string on is dropped. ``render_special`` puts the text of special tokens in the output.
    """

    __slots__ = ("_detok", "_eog", "_matcher", "_max", "_stop_tokens", "finish_reason", "n_generated")

    def __init__(
        self,
        vocab: Vocab,
        *,
        n_prompt: int,
        n_ctx: int,
        max_tokens: int | None = None,
        stop: Sequence[str] = (),
        stop_tokens: Sequence[int] = (),
        ignore_eos: bool = False,
        render_special: bool = False,
    ) -> None:
        # asked per sampled token (a cached native lookup): no scan over the whole vocabulary
        self._eog: Callable[[int], bool] | None = None if ignore_eos else vocab.is_eog
        self._stop_tokens = frozenset(stop_tokens)
        self._detok = StreamingDetokenizer(vocab, special=render_special)
        matcher = StopMatcher(stop)
        self._matcher: StopMatcher | None = matcher if matcher.stops else None
        self._max = min(token_limit(max_tokens, n_ctx), n_ctx - n_prompt)
        #: tokens fed so far (end tokens included: they were generated)
        self.n_generated = 0
        #: None while generating; "stop" or "length" once the output ended ("length" from the
        #: start when ``max_tokens`` is 0)
        self.finish_reason: str | None = "length" if self._max <= 0 else None

    def feed(self, token: int) -> str | None:
        """Take the next sampled token; the text it releases, or None when it contributes nothing.

        None: an end token, or a stop string completed without releasing text — the token is not
        part of the output. A string (possibly empty while text is held back) goes out with the
        token. Afterwards :attr:`finish_reason` says whether the output ended with this token.
        """
        n = self.n_generated = self.n_generated + 1
        eog = self._eog
        if token in self._stop_tokens or (eog is not None and eog(token)):
            self.finish_reason = "stop"
            return None
        text = self._detok.feed(token)
        matcher = self._matcher
        if matcher is not None:
            text = matcher.feed(text)
            if matcher.stopped is not None:
                self.finish_reason = "stop"
                return text or None
        if n >= self._max:
            self.finish_reason = "length"
        return text

    def finish(self) -> str:
        """End of the stream: the text still held back (an incomplete UTF-8 tail becomes U+FFFD).

        Empty after a stop string. The held text can still complete a stop string: then only what
        precedes it is returned and :attr:`stopped` is set.
        """
        matcher = self._matcher
        if matcher is None:
            return self._detok.flush()
        if matcher.stopped is not None:
            return ""
        return matcher.feed(self._detok.flush()) + matcher.flush()

    @property
    def remaining(self) -> int:
        """How many more tokens the output may take before it ends with ``"length"``."""
        return self._max - self.n_generated

    @property
    def stopped(self) -> str | None:
        """The stop string that ended the output (None: no stop string matched)."""
        return self._matcher.stopped if self._matcher is not None else None
