"""Fill-in-the-middle prompts: the model writes what goes between a prefix and a suffix."""

from __future__ import annotations

from ..core import Model
from ..errors import UnsupportedError

__all__ = ["fim_prompt", "supports_fim"]


def supports_fim(model: Model) -> bool:
    v = model.vocab
    return v.fim_pre is not None and v.fim_suf is not None and v.fim_mid is not None


def fim_prompt(model: Model, prefix: str, suffix: str, middle: str = "") -> list[int]:
    """Tokens of a prefix-suffix-middle (PSM) infill prompt:
    ``[BOS] <fim_pre> prefix <fim_suf> suffix <fim_mid> middle`` — generation continues the middle.

    Raises UnsupportedError for models without the FIM special tokens.
    """
    v = model.vocab
    pre, suf, mid = v.fim_pre, v.fim_suf, v.fim_mid
    if pre is None or suf is None or mid is None:
        raise UnsupportedError(
            f"{model.path.name} has no fill-in-the-middle tokens (fim_pre/fim_suf/fim_mid): "
            "it cannot complete between a prefix and a suffix"
        )
    tokens: list[int] = [v.bos] if v.add_bos and v.bos is not None else []
    tokens.append(pre)
    tokens += model.tokenize(prefix, add_special=False, parse_special=False)
    tokens.append(suf)
    tokens += model.tokenize(suffix, add_special=False, parse_special=False)
    tokens.append(mid)
    if middle:
        tokens += model.tokenize(middle, add_special=False, parse_special=False)
    return tokens
