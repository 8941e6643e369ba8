"""`BudgetCloser`: a grammar-constrained output that would run out of tokens closes validly instead.

A generation under a grammar (a JSON Schema's, ``json_object``'s, a GBNF ``grammar``) ends with
``"length"`` when ``max_tokens`` (or the context) runs out, usually in the middle of the document:
an unterminated string, unclosed brackets, a missing required property. The closer follows the
output with a :class:`~llamabind.grammar.completion.GrammarRecognizer` and, for every sampled
token, checks that the document could still be completed within the tokens left after it: the
tokens of the shortest completion of the text so far (UTF-8 bytes bound them; near the end they
are counted by tokenizing the completion). A token after which the document could no longer be
finished in time is not taken: the generation emits the shortest completion of the text before it
instead (its tokens, accepted by llama.cpp's own grammar first) and ends. The output then is a
complete sentence of the grammar, finished within the budget, with ``finish_reason`` still
``"length"`` (the model was stopped by the budget, and its content may be cut short: a string
ended early, an array closed, required properties filled with the shortest values) and
``closed = True`` on the result.

No safety margin is needed: the check is made on the state *after* each sampled token, so a token
that opens something long to finish (an object with many required properties) is refused before
it is emitted, and the text before it, which was checked the same way, always fits.

It applies to non-lazy grammars given through :class:`~llamabind.generation.sampling.SamplingParams`
(``close_on_budget``, on by default); lazy grammars (tool calls with ``tool_choice="auto"``) and
chains passed ready-made as ``sampler=`` are left alone.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator, Sequence

from ..core import Model, Sampler, Vocab
from ..errors import GrammarError, LlamabindError
from ..grammar import Grammar, parse_gbnf
from ..grammar.completion import Completion, GrammarRecognizer, RecognizerState, recognizer_for
from ..grammar.gbnf import TokenRef
from .output import OutputStream
from .sampling import SamplingParams

__all__ = ["BudgetCloser", "feed_closing"]

log = logging.getLogger("llamabind.generation")

#: per vocabulary: the token whose piece is each byte 0x80-0xBF (finishing a split UTF-8 character)
_BYTE_TOKENS: weakref.WeakKeyDictionary[Vocab, dict[int, int]] = weakref.WeakKeyDictionary()


def _byte_tokens(vocab: Vocab) -> dict[int, int]:
    found = _BYTE_TOKENS.get(vocab)
    if found is None:
        found = {}
        for t in range(vocab.n_tokens):
            piece = vocab.token_to_piece(t)
            if len(piece) == 1 and 0x80 <= piece[0] <= 0xBF and piece[0] not in found:
                found[piece[0]] = t
        _BYTE_TOKENS[vocab] = found
    return found


class BudgetCloser:
    """Watches one grammar-constrained output and closes it before its token budget runs out.

    Feed it every sampled token with :meth:`admit` (before the token is emitted); when it says
    no, emit :meth:`closing` instead of the token and end the output. ``closed`` tells whether
    that happened.
    """

    def __init__(self, model: Model, grammar: Grammar | str, root: str = "root") -> None:
        if isinstance(grammar, Grammar):
            text, root = grammar.text, grammar.root
        else:
            text = str(grammar)
        self.model = model
        self.vocab = model.vocab
        self._text = text
        self._root = root
        self.recognizer = self._recognizer(text, root)
        self.state: RecognizerState = self.recognizer.start()
        self.history: list[int] = []  # tokens admitted (the ones the grammar saw)
        #: whether the document could be finished within the budget left before the last token
        self._closable: bool | None = None
        self._last: tuple[Completion, list[int] | None] | None = None
        self.closed = False
        self.active = True  # False once the recognizer lost track (a grammar it reads differently)

    @classmethod
    def for_sampling(cls, model: Model, sp: SamplingParams | None) -> BudgetCloser | None:
        """A closer for a generation with these settings, or None when closing does not apply:
        off (``close_on_budget=False``), no grammar, a lazy grammar, or a grammar the recognizer
        cannot read (logged)."""
        if sp is None or not sp.close_on_budget or sp.grammar is None or sp.grammar_lazy:
            return None
        try:
            return cls(model, sp.grammar, sp.grammar_root)
        except (LlamabindError, ValueError, RecursionError) as exc:
            log.debug("no budget closing for this grammar: %s", exc)
            return None

    def _recognizer(self, text: str, root: str) -> GrammarRecognizer:
        if "<" not in text:  # no token terminals: one cached recognizer per grammar text
            return recognizer_for(text, root)
        parsed = parse_gbnf(text, root)
        named = any(
            isinstance(e, TokenRef) and e.token_id is None
            for r in parsed.rules
            for a in r.alternatives
            for e in a
        )
        if not named:
            return recognizer_for(text, root)
        vocab = self.vocab

        def token_id(piece: str) -> int | None:
            ids = vocab.tokenize(piece, add_special=False, parse_special=True)
            return ids[0] if len(ids) == 1 else None

        return GrammarRecognizer(parsed, token_id=token_id)

    # ------------------------------------------------------------------ counting

    def _text_tokens(self, text: str) -> list[int] | None:
        """Tokens whose pieces are exactly ``text`` (None when the tokenizer cannot give them)."""
        if not text:
            return []
        vocab = self.vocab
        data = text.encode("utf-8")
        ids = vocab.tokenize(text, add_special=False, parse_special=False)
        if b"".join(vocab.token_to_piece(t) for t in ids) == data:
            return ids
        out: list[int] = []  # a tokenizer that adds a leading space: one character at a time
        for ch in text:
            got = vocab.tokenize(ch, add_special=False, parse_special=False)
            if b"".join(vocab.token_to_piece(t) for t in got) != ch.encode("utf-8"):
                return None
            out.extend(got)
        return out

    def tokens_for(self, completion: Completion) -> list[int] | None:
        """The tokens that write ``completion`` (None: this vocabulary cannot write it)."""
        out: list[int] = []
        if completion.continuation:
            table = _byte_tokens(self.vocab)
            for b in completion.continuation:
                if b not in table:
                    return None
                out.append(table[b])
        for seg in completion.segments:
            if isinstance(seg, int):
                out.append(seg)
            else:
                got = self._text_tokens(seg)
                if got is None:
                    return None
                out.extend(got)
        return out

    def _fits(
        self, state: RecognizerState, remaining: int
    ) -> tuple[bool, tuple[Completion, list[int] | None] | None]:
        """Whether ``state`` can be completed in ``remaining`` tokens, and its completion with its
        tokens when they had to be counted (None when the byte count alone settled it)."""
        if self.recognizer.completion_cost(state) <= remaining:  # every token writes >= 1 byte
            return True, None
        comp = self.recognizer.completion(state)
        if comp is None:
            return False, None
        tokens = self.tokens_for(comp)
        return tokens is not None and len(tokens) <= remaining, (comp, tokens)

    # ------------------------------------------------------------------ the protocol

    def admit(self, token: int, remaining: int) -> bool:
        """Whether to take the sampled ``token``, after which the output may take ``remaining`` more
        tokens. False: the document could not be finished in time after it — emit
        :meth:`closing` instead and end the output."""
        if not self.active or self.vocab.is_eog(token):
            return True
        if self._closable is None:  # the start: can the empty output be completed in time?
            self._closable, self._last = self._fits(self.state, remaining + 1)
        after = self.recognizer.feed_token(self.state, token, self.vocab.token_to_piece(token))
        if not after.viable:
            # llama.cpp's grammar took a token this recognizer refuses: stop watching, never guess
            log.warning(
                "budget closing off for this output: the grammar recognizer lost track at token %d", token
            )
            self.active = False
            return True
        fits, last = self._fits(after, remaining)
        if not fits and self._closable:
            return False
        self.state, self._closable, self._last = after, fits, last
        self.history.append(token)
        return True

    def closing(self) -> list[int] | None:
        """The tokens that complete the document from the last admitted token, checked against
        llama.cpp's grammar (the admitted tokens, these, then an end token must all be accepted);
        None when no valid completion can be given (the output then ends as it is). Sets
        ``closed`` when one is given."""
        comp, tokens = (
            self._last if self._last is not None else (self.recognizer.completion(self.state), None)
        )
        if comp is None:
            return None
        if tokens is None:
            tokens = self.tokens_for(comp)
        if tokens is None or not self._verify(tokens):
            return None
        self.closed = True
        return tokens

    def _verify(self, tokens: Sequence[int]) -> bool:
        """Whether llama.cpp's grammar takes the admitted tokens, ``tokens`` and then the end."""
        checker = Sampler(self.model, no_perf=True)
        try:
            checker.grammar(self._text, self._root)
            for t in (*self.history, *tokens):
                checker.accept(t)
            end = self.vocab.eos if self.vocab.eos is not None else self.vocab.eot
            if end is not None:
                checker.accept(end)
        except GrammarError as exc:
            log.warning("budget closing skipped: llama.cpp's grammar refused the completion (%s)", exc)
            return False
        finally:
            checker.close()
        return True


def feed_closing(closer: BudgetCloser, out: OutputStream) -> Iterator[tuple[int, str]]:
    """Feed the closer's completion (:meth:`BudgetCloser.closing`) into ``out``: (token, text) to
    emit for each token. ``closed`` is cleared when a stop string in the completion cut it."""
    for token in closer.closing() or ():
        text = out.feed(token)
        yield token, text or ""
        if text is None or out.finish_reason is not None:
            break
    if out.finish_reason == "stop":
        closer.closed = False
