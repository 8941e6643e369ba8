"""Batched embeddings and reranking.

Many inputs share one decode: each input is its own sequence id in the batch, as many as fit in
``n_batch`` tokens and ``n_seq_max`` sequences; then the next batch. Encoder models (BERT-style,
non-causal) run through ``llama_encode``; decoder models through ``llama_decode`` with the KV
cache cleared between batches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..core import Batch, Context, ContextParams, Model
from ..errors import ContextOverflowError, EmbeddingError

__all__ = [
    "Embedder",
    "EmbeddingError",
    "Pooling",
    "RerankResult",
    "cosine_similarity",
    "embed",
    "rerank",
]

Pooling = Literal["none", "mean", "cls", "last", "rank"]
_POOLINGS = ("none", "mean", "cls", "last", "rank")
_MAX_SEQ = 256  # LLAMA_MAX_SEQ
_POOLING_IDS = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class RerankResult:
    """One document's relevance to the query; results come sorted by ``score``, highest first."""

    index: int  # position in the documents passed in
    score: float
    document: str


def cosine_similarity(a: npt.ArrayLike, b: npt.ArrayLike | None = None) -> Any:
    """Cosine similarity of vectors.

    ``a`` and ``b`` 1-D: a float. ``a`` 2-D (n × d) and ``b`` None: the n × n matrix between the
    rows of ``a``. ``a`` (n × d) and ``b`` (m × d): the n × m matrix. Zero vectors give 0.
    """
    x = np.asarray(a, dtype=np.float64)
    y = x if b is None else np.asarray(b, dtype=np.float64)
    if x.ndim == 1 and y.ndim == 1:
        nx, ny = np.linalg.norm(x), np.linalg.norm(y)
        return float(x @ y / (nx * ny)) if nx > 0 and ny > 0 else 0.0
    x2, y2 = np.atleast_2d(x), np.atleast_2d(y)
    if x2.shape[-1] != y2.shape[-1]:
        raise ValueError(f"dimension mismatch: {x2.shape[-1]} vs {y2.shape[-1]}")
    nx = np.linalg.norm(x2, axis=1, keepdims=True)
    ny = np.linalg.norm(y2, axis=1, keepdims=True)
    nx[nx == 0] = 1.0
    ny[ny == 0] = 1.0
    out: npt.NDArray[np.float64] = (x2 / nx) @ (y2 / ny).T
    return out


def _l2(v: FloatArray) -> FloatArray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    norm[norm == 0] = 1.0
    out: FloatArray = (v / norm).astype(np.float32)
    return out


def _model_pooling(model: Model) -> str | None:
    raw = model.meta(f"{model.architecture}.pooling_type")
    if raw is None:
        return None
    try:
        return _POOLING_IDS.get(int(raw))
    except ValueError:
        return None


def _is_causal(model: Model) -> bool:
    return model.meta(f"{model.architecture}.attention.causal", "true") != "false"


class Embedder:
    """Embeds texts (or token lists) with one model, many inputs per decode.

    ``pooling`` None uses the model's pooling type from its metadata (``mean`` when it has none).
    ``normalize`` L2-normalises the vectors (not rank scores). ``n_ctx`` is the longest input in
    tokens (default: the model's training context, at most 2048); ``n_batch`` the tokens per
    decode (default and minimum: ``n_ctx``, at least 512); ``n_seq_max`` the inputs per decode
    (at most 256). Longer inputs raise ContextOverflowError, or are cut with ``truncate=True``.

    Without ``params``, flash attention is off: llama.cpp's CPU flash-attention kernel accumulates
    in half precision, which makes a text's vector depend slightly on what else shares its batch;
    with it off, batched results equal one-by-one results.
    """

    def __init__(
        self,
        model: Model | str | os.PathLike[str],
        *,
        pooling: Pooling | None = None,
        normalize: bool = True,
        n_ctx: int | None = None,
        n_batch: int | None = None,
        n_seq_max: int = 64,
        n_threads: int | None = None,
        truncate: bool = False,
        use_encode: bool | None = None,
        params: ContextParams | None = None,
    ) -> None:
        self._owns_model = not isinstance(model, Model)
        self.model: Model = model if isinstance(model, Model) else Model(model)
        try:
            self._setup(
                pooling, normalize, n_ctx, n_batch, n_seq_max, n_threads, truncate, use_encode, params
            )
        except BaseException:
            if self._owns_model:
                self.model.close()
            raise

    def _setup(
        self,
        pooling: Pooling | None,
        normalize: bool,
        n_ctx: int | None,
        n_batch: int | None,
        n_seq_max: int,
        n_threads: int | None,
        truncate: bool,
        use_encode: bool | None,
        params: ContextParams | None,
    ) -> None:
        m = self.model
        if pooling is not None and pooling not in _POOLINGS:
            raise EmbeddingError(f"pooling must be one of {', '.join(_POOLINGS)}; got {pooling!r}")
        resolved = pooling or _model_pooling(m) or "mean"
        self.pooling: str = resolved
        self.normalize = normalize
        self.truncate = truncate
        self.causal = _is_causal(m)
        self.use_encode = (
            use_encode
            if use_encode is not None
            else (not self.causal or (m.has_encoder and not m.has_decoder))
        )
        limit = n_ctx or min(m.n_ctx_train or 2048, 2048)
        if limit <= 0:
            raise EmbeddingError(f"n_ctx must be positive, got {limit}")
        self.max_tokens = limit
        tokens_per_batch = max(n_batch or 512, limit)
        self.n_seq_max = max(1, min(n_seq_max, _MAX_SEQ))
        base = params or ContextParams(flash_attn="off")
        self.ctx = Context(
            m,
            base.replace(
                n_ctx=tokens_per_batch,
                n_batch=tokens_per_batch,
                n_ubatch=tokens_per_batch,
                n_seq_max=self.n_seq_max,
                kv_unified=True,
                embeddings=True,
                pooling=resolved,
                n_threads=n_threads or base.n_threads,
            ),
        )
        self.n_batch = self.ctx.n_batch
        self.dim = self.ctx.n_embd if resolved != "rank" else max(m.n_cls_out, 1)
        self._batch = Batch(self.n_batch, 1)
        #: decodes (or encodes) run so far: batching packs many inputs into each
        self.n_decodes = 0

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self.ctx.close()
        if self._owns_model:
            self.model.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ tokens
    def tokenize(self, text: str) -> list[int]:
        """Tokens of one input: the model's special tokens added, cut to ``max_tokens`` if ``truncate``."""
        return self._fit(self.model.tokenize(text, add_special=True, parse_special=False))

    def _fit(self, tokens: list[int], index: int | None = None) -> list[int]:
        where = f"input {index}" if index is not None else "input"
        if not tokens:
            raise EmbeddingError(f"{where} is empty (no tokens to embed)")
        if len(tokens) <= self.max_tokens:
            return tokens
        if not self.truncate:
            raise ContextOverflowError(
                f"{where} has {len(tokens)} tokens, more than the {self.max_tokens} this embedder "
                "takes (truncate it with truncate=True / --truncate, or raise n_ctx / -c)",
                len(tokens),
                self.max_tokens,
            )
        v = self.model.vocab
        last = tokens[-1]
        if v.add_eos and last in (v.eos, v.sep):
            return [*tokens[: self.max_tokens - 1], last]  # keep the closing [SEP]/EOS
        return tokens[: self.max_tokens]

    # ------------------------------------------------------------ core loop
    def _groups(self, seqs: list[list[int]]) -> Iterator[list[int]]:
        group: list[int] = []
        used = 0
        for i, toks in enumerate(seqs):
            if group and (used + len(toks) > self.n_batch or len(group) >= self.n_seq_max):
                yield group
                group, used = [], 0
            group.append(i)
            used += len(toks)
        if group:
            yield group

    def _run(self, group: list[int], seqs: list[list[int]]) -> list[FloatArray]:
        b = self._batch
        b.clear()
        starts: list[int] = []
        per_token = self.pooling == "none"
        for sid, i in enumerate(group):
            starts.append(b.n_tokens)
            b.add_sequence(seqs[i], 0, sid, logits_last=False)
            if per_token:
                for j in range(starts[-1], b.n_tokens):
                    b.set_logits(j)
            else:
                b.set_logits(b.n_tokens - 1)
        ctx = self.ctx
        if not self.use_encode:
            ctx.memory.clear(False)
        if self.use_encode:
            ctx.encode(b)
        else:
            ctx.decode(b)
        self.n_decodes += 1
        out: list[FloatArray] = []
        for sid, i in enumerate(group):
            if per_token:
                s = starts[sid]
                rows = [ctx.embeddings(j) for j in range(s, s + len(seqs[i]))]
                out.append(np.stack(rows).astype(np.float32))
            else:
                out.append(ctx.seq_embeddings(sid).astype(np.float32))
        if not self.use_encode:
            ctx.memory.clear(False)
        return out

    def _embed_tokens(self, seqs: list[list[int]]) -> list[FloatArray]:
        results: list[FloatArray | None] = [None] * len(seqs)
        for group in self._groups(seqs):
            for i, vec in zip(group, self._run(group, seqs), strict=True):
                results[i] = vec
        return [r for r in results if r is not None]

    def _finish(self, vecs: list[FloatArray], normalize: bool | None) -> list[FloatArray]:
        norm = self.normalize if normalize is None else normalize
        if not norm or self.pooling == "rank":
            return vecs
        return [_l2(v) for v in vecs]

    # ------------------------------------------------------------ public
    def embed(self, texts: str | Sequence[str], *, normalize: bool | None = None) -> FloatArray:
        """Embeddings as a float32 array: ``(n, dim)`` for a list, ``(dim,)`` for one string.

        With pooling ``none`` use :meth:`embed_tokens_each` / :meth:`embed_each` (one matrix per input).
        """
        if self.pooling == "none":
            raise EmbeddingError("pooling 'none' gives one vector per token: use embed_each()")
        single = isinstance(texts, str)
        vecs = self.embed_each([texts] if isinstance(texts, str) else texts, normalize=normalize)
        arr = np.stack(vecs).astype(np.float32)
        out: FloatArray = arr[0] if single else arr
        return out

    def embed_each(self, texts: Sequence[str], *, normalize: bool | None = None) -> list[FloatArray]:
        """One array per input: ``(dim,)`` pooled, or ``(n_tokens, dim)`` with pooling ``none``."""
        if isinstance(texts, str):
            raise TypeError("embed_each expects a sequence of strings")
        items = list(texts)
        if not items:
            raise EmbeddingError("no inputs to embed")
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise TypeError(f"input {i} is {type(t).__name__}, not str")
        seqs = [self._fit(self.model.tokenize(t, add_special=True), i) for i, t in enumerate(items)]
        return self._finish(self._embed_tokens(seqs), normalize)

    def embed_tokens(
        self, token_lists: Sequence[Sequence[int]], *, normalize: bool | None = None
    ) -> list[FloatArray]:
        """Like :meth:`embed_each` for pre-tokenized inputs (special tokens are not added)."""
        items = [list(t) for t in token_lists]
        if not items:
            raise EmbeddingError("no inputs to embed")
        for toks in items:
            self.model.vocab.check(toks)
        seqs = [self._fit(t, i) for i, t in enumerate(items)]
        return self._finish(self._embed_tokens(seqs), normalize)

    # ------------------------------------------------------------ rerank
    def rerank_tokens(self, query: str, document: str) -> list[int]:
        """The tokens of one (query, document) pair as the reranker reads them.

        A ``tokenizer.chat_template.rerank`` template in the model replaces ``{query}`` and
        ``{document}``; otherwise ``[BOS] query [EOS] [SEP] document [EOS]`` with each special
        token as the vocabulary asks (BERT-style: ``[CLS] q [SEP] d [SEP]``).
        """
        m = self.model
        v = m.vocab
        template = m.chat_template("rerank")
        if template:
            prompt = template.replace("{query}", query).replace("{document}", document)
            return m.tokenize(prompt, add_special=False, parse_special=True)
        q = m.tokenize(query, add_special=False)
        d = m.tokenize(document, add_special=False)
        eos = v.eos if v.eos is not None else v.sep
        add_sep = (m.meta("tokenizer.ggml.add_sep_token", "false") or "false") == "true"
        out: list[int] = []
        if v.add_bos and v.bos is not None:
            out.append(v.bos)
        out += q
        if v.add_eos and eos is not None:
            out.append(eos)
        if add_sep and v.sep is not None:
            out.append(v.sep)
        out += d
        if v.add_eos and eos is not None:
            out.append(eos)
        return out

    def rerank(self, query: str, documents: Sequence[str], *, top_n: int | None = None) -> list[RerankResult]:
        """Score each document against ``query`` (rank pooling) and return them best first."""
        if self.pooling != "rank":
            raise EmbeddingError(
                f"rerank needs rank pooling (a reranker model, or pooling='rank'); this embedder pools {self.pooling!r}"
            )
        docs = list(documents)
        if not docs:
            raise EmbeddingError("no documents to rerank")
        seqs = [self._fit(self.rerank_tokens(query, d), i) for i, d in enumerate(docs)]
        scores = self._embed_tokens(seqs)
        results = [RerankResult(i, float(s[0]), docs[i]) for i, s in enumerate(scores)]
        results.sort(key=lambda r: (-r.score, r.index))
        return results[:top_n] if top_n is not None else results

    def __repr__(self) -> str:
        return (
            f"<Embedder {self.model.path.name} pooling={self.pooling} dim={self.dim} "
            f"n_batch={self.n_batch} n_seq_max={self.n_seq_max}>"
        )


def embed(
    texts: str | Sequence[str],
    model: Model | str | os.PathLike[str] | None = None,
    *,
    pooling: Pooling | None = None,
    normalize: bool = True,
    **kwargs: Any,
) -> FloatArray:
    """One-shot embeddings (creates and closes an :class:`Embedder`); ``model`` defaults to the embedded model."""
    if model is None:
        from ..default_model import default_model_path

        model = default_model_path()
    with Embedder(model, pooling=pooling, normalize=normalize, **kwargs) as e:
        return e.embed(texts)


def rerank(
    query: str,
    documents: Sequence[str],
    model: Model | str | os.PathLike[str],
    *,
    top_n: int | None = None,
    **kwargs: Any,
) -> list[RerankResult]:
    """One-shot reranking with a reranker model (rank pooling)."""
    kwargs.setdefault("pooling", "rank")
    with Embedder(model, **kwargs) as e:
        return e.rerank(query, documents, top_n=top_n)
