"""Engine-side embedding and rerank jobs: dedicated contexts over the generation model, created on
first use and only ever touched by the engine thread (``Scheduler.run_in_engine``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..core import Model

__all__ = ["EmbeddingJobs"]


class EmbeddingJobs:
    """``embed_tokens`` (mean pooling, L2-normalised) and ``rerank`` (rank pooling) over contexts
    of ``n_ctx`` tokens and ``n_seq`` sequences. Call them in the engine thread only."""

    def __init__(self, model: Model, *, n_ctx: int, n_seq: int, n_threads: int | None) -> None:
        self.model = model
        self.n_ctx = n_ctx
        self.n_seq = n_seq
        self.n_threads = n_threads
        self._embedder: Any = None
        self._reranker: Any = None

    def embed_tokens(self, chunk: Sequence[Sequence[int]]) -> list[npt.NDArray[np.float32]]:
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
        vecs: list[npt.NDArray[np.float32]] = self._embedder.embed_tokens([list(c) for c in chunk])
        return vecs

    def rerank(self, query: str, documents: Sequence[str]) -> tuple[list[Any], int]:
        """(results best first, tokens read)."""
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
        return rr.rerank(query, list(documents)), n_tokens

    def close(self) -> None:
        """Free the contexts (after the engine thread stopped)."""
        for name in ("_embedder", "_reranker"):
            obj = getattr(self, name)
            if obj is not None:
                obj.close()
                setattr(self, name, None)
