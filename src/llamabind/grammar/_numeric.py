"""Integer and decimal ranges as GBNF: digit-by-digit alternatives for bounded numbers."""

from __future__ import annotations

from ._emit import _alt, _lit, _rep

_MAX_DIGITS = 16


def _digit_class(lo: int, hi: int) -> str:
    return f"[{lo}]" if lo == hi else f"[{lo}-{hi}]"


def _digits_any(n: int) -> str:
    return "" if n == 0 else "[0-9]" if n == 1 else f"[0-9]{{{n}}}"


def _same_length(x: str, y: str) -> list[str]:
    """Alternatives matching the decimal strings of the same length from x to y (inclusive)."""
    if x == y:
        return [_lit(x)]
    k = 0
    while x[k] == y[k]:
        k += 1
    prefix = _lit(x[:k]) + " " if k else ""
    xd, yd, rest = int(x[k]), int(y[k]), len(x) - k - 1
    xs, ys = x[k + 1 :], y[k + 1 :]
    if rest == 0:
        return [prefix + _digit_class(xd, yd)]
    out = []
    first_full = xd
    if xs != "0" * rest:
        out.append(f"{prefix}{_lit(str(xd))} {_alt(_same_length(xs, '9' * rest))}")
        first_full = xd + 1
    last_full = yd if ys == "9" * rest else yd - 1
    if first_full <= last_full:
        out.append(f"{prefix}{_digit_class(first_full, last_full)} {_digits_any(rest)}")
    if ys != "9" * rest:
        out.append(f"{prefix}{_lit(str(yd))} {_alt(_same_length('0' * rest, ys))}")
    return out


def _uint_range(a: int, b: int | None) -> list[str]:
    """Alternatives matching the non-negative integers a..b (b None: unbounded) without leading zeros."""
    out: list[str] = []
    if a == 0:
        out.append('"0"')
        a = 1
    if b is not None and a > b:
        return out
    la = len(str(a))
    if b is None:
        max_digits = max(_MAX_DIGITS, la)
        if a == 10 ** (la - 1):
            out.append(f"[1-9] {_rep('[0-9]', la - 1, max_digits - 1)}".strip())
            return out
        out.extend(_same_length(str(a), "9" * la))
        if la < max_digits:
            out.append(f"[1-9] {_rep('[0-9]', la, max_digits - 1)}")
        return out
    lb = len(str(b))
    if la == lb:
        out.extend(_same_length(str(a), str(b)))
        return out
    out.extend(_same_length(str(a), "9" * la))
    if lb - la >= 2:
        out.append(f"[1-9] {_rep('[0-9]', la, lb - 2)}")
    out.extend(_same_length("1" + "0" * (lb - 1), str(b)))
    return out


def _int_range(lo: int | None, hi: int | None) -> str:
    alts: list[str] = []
    if hi is None or hi >= 0:
        alts.extend(_uint_range(max(lo, 0) if lo is not None else 0, hi))
    if lo is None or lo < 0:
        m_lo = 1 if hi is None or hi >= 0 else -hi
        m_hi = None if lo is None else -lo
        alts.append('"-" ' + _alt(_uint_range(m_lo, m_hi)))
    return _alt(alts)


def _magnitudes(c: int, c_ex: bool, d: int | None, d_ex: bool) -> list[str]:
    """Alternatives for decimals (no sign, no exponent) between c and d (None: unbounded)."""
    if d is not None and (d < c or (d == c and (c_ex or d_ex))):
        return []
    if d is not None and d == c:
        return [_lit(str(c))]
    out = []
    n_lo = c + 1 if c_ex else c
    n_hi = None if d is None else d - 1
    if n_hi is None or n_lo <= n_hi:
        out.append(f"{_alt(_uint_range(n_lo, n_hi))} frac")
    if c_ex:
        out.append(f"{_lit(str(c))} nzfrac")
    if d is not None and not d_ex:
        out.append(_lit(str(d)))
    return out


def _number_range(lo: int | None, lo_ex: bool, hi: int | None, hi_ex: bool) -> list[str]:
    alts: list[str] = []
    if hi is None or hi > 0 or (hi == 0 and not hi_ex):
        c, c_ex = (0, False) if lo is None or lo < 0 else (lo, lo_ex)
        alts.extend(_magnitudes(c, c_ex, hi, hi_ex))
    if lo is None or lo < 0:
        mc, mc_ex = (0, True) if hi is None or hi >= 0 else (-hi, hi_ex)
        md, md_ex = (None, False) if lo is None else (-lo, lo_ex)
        neg = _magnitudes(mc, mc_ex, md, md_ex)
        if neg:
            alts.append('"-" ' + _alt(neg))
    return alts


# --------------------------------------------------------------------------------------------
# Regular expressions (the subset JSON Schema patterns commonly use)
# --------------------------------------------------------------------------------------------
