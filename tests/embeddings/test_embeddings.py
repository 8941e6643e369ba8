"""Embeddings and rerank: MiniLM vs sentence-transformers, batching, pooling variants, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from llamabind.embeddings import Embedder, EmbeddingError, cosine_similarity, embed, rerank
from tests.helpers.core import THREADS
from tests.helpers.fixtures_gguf import build_minilm_gguf, build_minilm_reranker, minilm_reference

pytestmark = pytest.mark.usefixtures("quiet_native")


@pytest.fixture(scope="module")
def minilm_path(fixture_dir: Path) -> Path:
    return build_minilm_gguf(fixture_dir)


@pytest.fixture(scope="module")
def minilm(minilm_path: Path) -> Iterator[lb.Model]:
    m = lb.Model(minilm_path)
    yield m
    m.close()


@pytest.fixture(scope="module")
def minilm_embedder(minilm: lb.Model) -> Iterator[Embedder]:
    with Embedder(minilm, n_batch=1024, n_threads=THREADS) as e:
        yield e


@pytest.fixture(scope="module")
def reranker(fixture_dir: Path, minilm_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return build_minilm_reranker(fixture_dir)


# ------------------------------------------------------------------ MiniLM vs reference


def test_minilm_matches_sentence_transformers(minilm_embedder: Embedder) -> None:
    ref = minilm_reference()
    e = minilm_embedder
    assert e.pooling == "mean" and e.dim == ref["dimension"] and e.use_encode
    for text, ids in zip(ref["texts"], ref["token_ids"], strict=True):
        assert e.tokenize(text) == ids
    vecs = e.embed(ref["texts"])
    assert vecs.shape == (len(ref["texts"]), ref["dimension"]) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    for got, want in zip(vecs, ref["embeddings"], strict=True):
        assert cosine_similarity(got, want) >= 0.99
    sims = cosine_similarity(vecs)
    # the two fox sentences and the two France sentences are each other's nearest neighbours
    assert int(np.argsort(sims[0])[-2]) == 1 and int(np.argsort(sims[4])[-2]) == 5


def test_64_texts_in_one_batch_equal_one_by_one(minilm_embedder: Embedder) -> None:
    words = ["cats", "dogs", "llamas", "compilers", "rivers", "music", "bread", "stars"]
    texts = [f"Sentence {i} is about {words[i % 8]} and number {i * 7}." for i in range(64)]
    e = minilm_embedder
    before = e.n_decodes
    batched = e.embed(texts)
    assert e.n_decodes - before == 1  # all 64 inputs shared a single encode
    single = np.stack([e.embed(t) for t in texts])
    assert batched.shape == (64, 384)
    assert float(np.min(np.sum(batched * single, axis=1))) >= 0.9999


def test_batches_split_by_tokens_and_sequences(minilm: lb.Model) -> None:
    texts = [f"text {i} " * 20 for i in range(10)]
    with Embedder(minilm, n_seq_max=4, n_threads=THREADS) as e:
        out = e.embed(texts)
        assert e.n_decodes == 3  # 4 + 4 + 2 sequences
        ref = np.stack([e.embed(t) for t in texts])
    assert float(np.min(np.sum(out * ref, axis=1))) >= 0.9999


def test_decode_path_equals_encode_path(minilm: lb.Model, minilm_embedder: Embedder) -> None:
    texts = minilm_reference()["texts"]
    with Embedder(minilm, use_encode=False, n_threads=THREADS) as d:
        assert not d.use_encode
        got = d.embed(texts)
    want = minilm_embedder.embed(texts)
    assert float(np.min(np.sum(got * want, axis=1))) >= 0.9999


# ------------------------------------------------------------------ pooling variants


def test_minilm_pooling_variants(minilm: lb.Model) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    with Embedder(minilm, pooling="none", n_threads=THREADS) as none:
        per_token = none.embed_each([text], normalize=False)[0]
        with pytest.raises(EmbeddingError, match="embed_each"):
            none.embed(text)
    n_tok = len(minilm.tokenize(text))
    assert per_token.shape == (n_tok, 384)
    results = {}
    for pooling in ("mean", "cls", "last"):
        with Embedder(minilm, pooling=pooling, normalize=False, n_threads=THREADS) as e:
            assert e.ctx.pooling == pooling
            results[pooling] = e.embed(text)
    np.testing.assert_allclose(results["mean"], per_token.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(results["cls"], per_token[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(results["last"], per_token[-1], rtol=1e-4, atol=1e-5)
    with Embedder(minilm, pooling="cls", n_threads=THREADS) as e:
        normed = e.embed(text)
    np.testing.assert_allclose(normed, results["cls"] / np.linalg.norm(results["cls"]), rtol=1e-4, atol=1e-6)


def test_decoder_model_mean_and_last(model: lb.Model) -> None:
    texts = ["The cat sat on the mat.", "A feline rested on the rug.", "Stock markets fell sharply today."]
    for pooling in ("mean", "last"):
        with Embedder(model, pooling=pooling, n_ctx=256, n_threads=THREADS) as e:
            assert not e.use_encode and e.dim == model.n_embd
            vecs = e.embed(texts * 4)
            assert vecs.shape == (12, model.n_embd)
            single = np.stack([e.embed(t) for t in texts])
            assert float(np.min(np.sum(vecs[:3] * single, axis=1))) >= 0.9999
            sims = cosine_similarity(vecs[:3])
            assert sims[0, 1] > sims[0, 2]  # paraphrases closer than an unrelated sentence


def test_decoder_default_pooling_is_mean(model: lb.Model) -> None:
    with Embedder(model, n_ctx=128, n_threads=THREADS) as e:
        assert e.pooling == "mean"


def test_one_shot_embed_function(minilm_path: Path) -> None:
    v = embed("hello world", minilm_path, n_threads=THREADS)
    assert v.shape == (384,)
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    raw = embed(["hello world"], minilm_path, normalize=False, n_threads=THREADS)
    assert raw.shape == (1, 384) and abs(float(np.linalg.norm(raw[0])) - 1.0) > 1e-3


def test_cosine_similarity_helper() -> None:
    a = np.array([1.0, 0.0])
    assert cosine_similarity(a, [0.0, 2.0]) == 0.0
    assert cosine_similarity(a, [3.0, 0.0]) == pytest.approx(1.0)
    assert cosine_similarity(a, [0.0, 0.0]) == 0.0
    m = cosine_similarity(np.array([[1.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(m, [[1.0, 2**-0.5], [2**-0.5, 1.0]])
    assert cosine_similarity(np.ones((2, 3)), np.ones((4, 3))).shape == (2, 4)
    with pytest.raises(ValueError):
        cosine_similarity(np.ones((2, 3)), np.ones((2, 4)))


# ------------------------------------------------------------------ rerank


def test_rerank_scores_match_the_classification_head(
    reranker: tuple[Path, dict[str, np.ndarray]], minilm: lb.Model
) -> None:
    """No reranker model can be downloaded here: MiniLM with a random classification head stands in.

    Rank pooling must give exactly head(CLS hidden state) for every (query, document) pair, and
    rerank() must return the documents sorted by that score.
    """
    path, head = reranker
    query = "What is the capital of France?"
    docs = [
        "Paris is the capital and largest city of France.",
        "I love eating fresh strawberries in the summer.",
        "llama.cpp runs large language models on a laptop.",
        "The quick brown fox jumps over the lazy dog.",
    ]
    rm = lb.Model(path)
    try:
        with Embedder(rm, n_threads=THREADS) as r:
            assert r.pooling == "rank" and rm.n_cls_out == 1 and r.dim == 1
            pairs = [r.rerank_tokens(query, d) for d in docs]
            results = r.rerank(query, docs)
            top2 = r.rerank(query, docs, top_n=2)
    finally:
        rm.close()
    # BERT pair layout: [CLS] query [SEP] document [SEP]
    q = minilm.tokenize(query, add_special=False)
    assert pairs[0][: len(q) + 2] == [101, *q, 102] and pairs[0][-1] == 102
    with Embedder(minilm, pooling="cls", normalize=False, n_threads=THREADS) as cls:
        hidden = cls.embed_tokens(pairs, normalize=False)
    expected = []
    for h in hidden:
        z = np.tanh(head["cls.weight"] @ h + head["cls.bias"])
        expected.append(float((head["cls.output.weight"] @ z + head["cls.output.bias"])[0]))
    got = {res.index: res.score for res in results}
    for i, want in enumerate(expected):
        assert got[i] == pytest.approx(want, abs=1e-3)
    assert [res.score for res in results] == sorted(got.values(), reverse=True)
    assert [res.document for res in results] == [docs[res.index] for res in results]
    assert top2 == results[:2]


def test_rerank_function_and_errors(reranker: tuple[Path, dict[str, np.ndarray]], minilm: lb.Model) -> None:
    path, _ = reranker
    out = rerank("query", ["a", "b", "c"], path, n_threads=THREADS)
    assert sorted(r.index for r in out) == [0, 1, 2]
    with Embedder(minilm, n_threads=THREADS) as e, pytest.raises(EmbeddingError, match="rank pooling"):
        e.rerank("q", ["d"])
    rm = lb.Model(path)
    try:
        with Embedder(rm, n_threads=THREADS) as r, pytest.raises(EmbeddingError, match="no documents"):
            r.rerank("q", [])
    finally:
        rm.close()


# ------------------------------------------------------------------ errors


def test_errors(minilm_embedder: Embedder, model: lb.Model) -> None:
    e = minilm_embedder
    with pytest.raises(EmbeddingError, match="no inputs"):
        e.embed([])
    with pytest.raises(TypeError):
        e.embed_each("not a list")
    with pytest.raises(TypeError):
        e.embed_each([b"bytes"])  # type: ignore[list-item]
    with pytest.raises(EmbeddingError, match="pooling must be one of"):
        Embedder(model, pooling="max")  # type: ignore[arg-type]
    long_text = "word " * 600  # > 512 tokens, MiniLM's context
    with pytest.raises(lb.ContextOverflowError, match="512") as info:
        e.embed(["short", long_text])
    assert info.value.n_ctx == 512 and info.value.n_tokens > 512
    assert "input 1" in str(info.value)
    with pytest.raises(lb.TokenizeError):
        e.embed_tokens([[1, 2, 10**9]])
    # an input that tokenizes to nothing (SmolLM2 adds no BOS)
    with Embedder(model, n_ctx=64, n_threads=THREADS) as d, pytest.raises(EmbeddingError, match="empty"):
        d.embed(["fine", ""])


def test_truncate_keeps_the_closing_separator(minilm: lb.Model) -> None:
    with Embedder(minilm, truncate=True, n_ctx=16, n_threads=THREADS) as e:
        toks = e.tokenize("word " * 40)
        assert len(toks) == 16 and toks[0] == 101 and toks[-1] == 102
        v = e.embed("word " * 40)
        assert v.shape == (384,)


def test_closed_model_raises(minilm_path: Path) -> None:
    e = Embedder(minilm_path, n_threads=THREADS)
    e.close()
    with pytest.raises(lb.ClosedError):
        e.embed("hello")
