"""Log-probabilities of sampled tokens and the top alternatives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["TokenLogprob", "token_logprobs"]


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def token_logprobs(logits: npt.NDArray[np.float32], token: int, top_n: int = 0) -> TokenLogprob:
    """log-softmax of the raw model logits at the chosen token, plus the ``top_n`` best."""
    x = logits.astype(np.float64, copy=False)
    m = float(x.max())
    lse = m + float(np.log(np.exp(x - m).sum()))
    top: tuple[tuple[int, float], ...] = ()
    if top_n > 0:
        n = min(top_n, x.shape[0])
        idx = np.argpartition(-x, n - 1)[:n]
        idx = idx[np.argsort(-x[idx], kind="stable")]
        top = tuple((int(i), float(x[i] - lse)) for i in idx)
    return TokenLogprob(token, float(x[token] - lse), top)
