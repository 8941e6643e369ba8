"""Embeddings and reranking: many inputs per decode, pooling none/mean/cls/last/rank, L2 normalisation.

from llamabind.embeddings import Embedder, cosine_similarity
with Embedder("all-MiniLM-L6-v2.F16.gguf") as e:
    vecs = e.embed(["a cat", "a dog"])      # (2, 384) float32, L2-normalised
print(cosine_similarity(vecs))
"""

from __future__ import annotations

from .embedder import Embedder, EmbeddingError, Pooling, RerankResult, cosine_similarity, embed, rerank

__all__ = ["Embedder", "EmbeddingError", "Pooling", "RerankResult", "cosine_similarity", "embed", "rerank"]
