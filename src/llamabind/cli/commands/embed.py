"""``llamabind embed``: embeddings (vectors or a cosine matrix) and reranking from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from ...embeddings import Embedder, cosine_similarity
from ..common import UsageError, add_model_args, load_model, positive_int


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "embed",
        help="embed texts (vectors, cosine matrix) or rerank them against a query",
        description="Embed each TEXT (or each line of stdin) in as few decodes as possible and print "
        "one vector per line, the cosine-similarity matrix (--cosine), or JSON (--json). With "
        "--rerank QUERY and a reranker model, print the texts sorted by relevance.",
    )
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (default: lines of stdin)")
    p.add_argument(
        "--pooling",
        choices=["none", "mean", "cls", "last", "rank"],
        default=None,
        help="pooling (default: the model's, or mean)",
    )
    p.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="L2-normalise the vectors (default: on)",
    )
    p.add_argument(
        "--cosine", action="store_true", help="print the cosine-similarity matrix instead of vectors"
    )
    p.add_argument(
        "--rerank", metavar="QUERY", default=None, help="rank the texts against QUERY (reranker model)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "-c", "--ctx-size", type=positive_int, default=None, metavar="N", help="longest input in tokens"
    )
    p.add_argument(
        "-b", "--batch-size", type=positive_int, default=None, metavar="N", help="tokens per decode"
    )
    p.add_argument(
        "--seq-max", type=positive_int, default=64, metavar="N", help="inputs per decode (max 256)"
    )
    p.add_argument("-t", "--threads", type=positive_int, default=None, metavar="N", help="threads")
    p.add_argument(
        "--truncate", action="store_true", help="cut inputs longer than the context instead of failing"
    )
    add_model_args(p)
    p.set_defaults(func=run)


def _texts(args: argparse.Namespace) -> list[str]:
    if args.texts:
        return list(args.texts)
    if sys.stdin.isatty():
        raise UsageError("no text: pass TEXT arguments or pipe lines on stdin")
    lines = [line.rstrip("\n") for line in sys.stdin]
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise UsageError("no text on stdin")
    return texts


def run(args: argparse.Namespace) -> int:
    texts = _texts(args)
    pooling = args.pooling
    if args.rerank is not None:
        if pooling not in (None, "rank"):
            raise UsageError("--rerank needs rank pooling")
        pooling = "rank"
        if args.cosine:
            raise UsageError("--rerank and --cosine do not go together")
    if args.cosine and pooling == "none":
        raise UsageError("--cosine needs pooled vectors (not --pooling none)")
    with (
        load_model(args) as model,
        Embedder(
            model,
            pooling=pooling,
            normalize=args.normalize,
            n_ctx=args.ctx_size,
            n_batch=args.batch_size,
            n_seq_max=args.seq_max,
            n_threads=args.threads,
            truncate=args.truncate,
        ) as emb,
    ):
        if args.rerank is not None:
            declared = model.meta(f"{model.architecture}.pooling_type")
            if declared != "4":
                print(
                    f"llamabind embed: warning: {model.name} does not declare rank pooling "
                    "(not a reranker?): its scores may mean nothing",
                    file=sys.stderr,
                )
            results = emb.rerank(args.rerank, texts)
            if args.json:
                print(
                    json.dumps(
                        {
                            "model": model.name,
                            "query": args.rerank,
                            "results": [
                                {"index": r.index, "score": r.score, "document": r.document} for r in results
                            ],
                        },
                        ensure_ascii=False,
                    )
                )
            else:
                for r in results:
                    print(f"{r.score:10.4f}  [{r.index}] {r.document}")
            return 0
        if emb.pooling == "rank":
            raise UsageError("this model pools with rank (a reranker): use --rerank QUERY")
        vectors = emb.embed_each(texts)
        info = {"model": model.name, "pooling": emb.pooling, "dim": emb.dim, "normalized": args.normalize}
    if args.json:
        out: dict[str, Any] = {**info, "n": len(texts)}
        if args.cosine:
            out["cosine"] = np.round(cosine_similarity(np.stack(vectors)), 6).tolist()
        else:
            out["embeddings"] = [v.tolist() for v in vectors]
        print(json.dumps(out, ensure_ascii=False))
        return 0
    if args.cosine:
        m = cosine_similarity(np.stack(vectors))
        width = max(7, len(str(len(texts))) + 2)
        print(" " * width + "".join(f"{f'[{j}]':>9}" for j in range(len(texts))))
        for i, row in enumerate(m):
            print(f"{f'[{i}]':<{width}}" + "".join(f"{x:9.4f}" for x in row))
        for i, t in enumerate(texts):
            print(f"[{i}] {t}", file=sys.stderr)
        return 0
    for v in vectors:
        rows = v if v.ndim == 2 else v[None, :]
        for row in rows:
            print(" ".join(f"{x:.6f}" for x in row))
    return 0
