"""Hypothesis strategies for hostile GBNF grammars and sampler parameters, and the code that runs
one such case against the library (in a worker process: see fuzz_worker.py).

A case is a JSON-able dict: ``{"kind": "grammar", "text": ..., "bias": ..., "seed": ...}`` or
``{"kind": "params", "params": {...}, "seed": ...}``. Running it may raise only llamabind errors
or ValueError (a refused input); anything else, a hang or a dead process is a failure.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

# Small grammars written for the fuzzer (in the style of llama.cpp's examples), the seeds of
# the mutation strategy.
SEED_GRAMMARS = (
    'root ::= "a"',
    'root ::= expr\nexpr ::= term (("+" | "-") term)*\nterm ::= num | "(" expr ")"\nnum ::= [0-9]+',
    'root ::= item+\nitem ::= "- " [^\\n]{1,20} "\\n"',
    'root ::= "yes" | "no" | "maybe"',
    'root ::= obj\nobj ::= "{" ws (kv ("," ws kv)*)? "}"\nkv ::= str ws ":" ws str\n'
    'str ::= "\\"" [a-z]* "\\""\nws ::= [ \\t\\n]*',
    'root ::= <[1]> | !<[2]> "x"',
    'root ::= ("ab"? "c"){2,5} .',
    'root ::= [\\u0041-\\u005A\\U0001F600] "\\x41"',
)

_NAMES = ("root", "a", "b", "c", "d", "e")
_CHARS = st.sampled_from([*list('abcxyz019 \\"\n\t-^]'), "\\n", "\\x41", "\\u00e9", "é", "日"])


def _literal() -> st.SearchStrategy[str]:
    return st.lists(_CHARS, max_size=4).map(lambda cs: '"' + "".join(c for c in cs if c not in '"\n') + '"')


def _char_class() -> st.SearchStrategy[str]:
    body = st.lists(
        st.sampled_from(["a", "z", "0-9", "a-z", "^", "\\n", "\\]", "-", "é"]), min_size=1, max_size=3
    )
    return body.map(lambda parts: "[" + "".join(parts) + "]")


def _item(depth: int) -> st.SearchStrategy[str]:
    atoms: list[st.SearchStrategy[str]] = [
        _literal(),
        _char_class(),
        st.sampled_from(_NAMES),
        st.just("."),
        st.integers(0, 50000).map(lambda i: f"<[{i}]>"),
    ]
    if depth > 0:
        atoms.append(_alternatives(depth - 1).map(lambda a: f"({a})"))
    suffix = st.sampled_from(
        ["", "", "", "*", "+", "?", "{2}", "{0,3}", "{1,}", "{3,1}", "{2000}", "{0,5000}"]
    )
    return st.tuples(st.one_of(atoms), suffix).map("".join)


def _alternatives(depth: int) -> st.SearchStrategy[str]:
    seq = st.lists(_item(depth), max_size=4).map(" ".join)
    return st.lists(seq, min_size=1, max_size=3).map(" | ".join)


def random_grammars() -> st.SearchStrategy[str]:
    """Grammars built from GBNF parts: valid-looking, often undefined, left-recursive or odd."""
    rule = st.tuples(st.sampled_from(_NAMES), _alternatives(2)).map(lambda r: f"{r[0]} ::= {r[1]}")
    return st.lists(rule, min_size=1, max_size=5).map(lambda rs: "\n".join(["root ::= a", *rs]))


def pathological_grammars() -> st.SearchStrategy[str]:
    """The shapes that hang or crash llama.cpp: alternation towers, long chains, deep nesting."""
    n = st.integers(1, 60)
    alt = n.map(
        lambda k: (
            "root ::= a0\n" + "".join(f"a{i} ::= a{i + 1} | a{i + 1}\n" for i in range(k)) + f'a{k} ::= "x"'
        )
    )
    altx = n.map(
        lambda k: (
            'root ::= "q" a0\n'
            + "".join(f'a{i} ::= a{i + 1} "y" | a{i + 1} "z"\n' for i in range(k))
            + f'a{k} ::= "x"'
        )
    )
    chain = st.integers(1, 3000).map(
        lambda k: "root ::= r0\n" + "".join(f"r{i} ::= r{i + 1}\n" for i in range(k)) + f'r{k} ::= "x"'
    )
    nest = st.integers(1, 400).map(lambda k: "root ::= " + "(" * k + '"a"' + ")" * k)
    return st.one_of(alt, altx, chain, nest)


@st.composite
def mutated_grammars(draw: st.DrawFn) -> str:
    """A seed grammar with a few random edits: deletions, duplications and inserted GBNF syntax."""
    text = draw(st.sampled_from(SEED_GRAMMARS))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 8)))
        op = draw(st.sampled_from(["delete", "duplicate", "insert"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = (
                text[:i]
                + draw(st.text(alphabet='"()[]|*+?{}:=\\ \n-^.<>!0123456789abcé', max_size=4))
                + text[i:]
            )
    return text


def grammar_cases() -> st.SearchStrategy[dict[str, Any]]:
    text = st.one_of(random_grammars(), mutated_grammars(), pathological_grammars())
    # a bias of -inf on some tokens (sometimes on the ones the grammar needs): the grammar may run dry
    bias = st.one_of(
        st.just({}),
        st.dictionaries(st.integers(0, 300), st.sampled_from([-math.inf, -100.0, 5.0]), max_size=20),
        st.just({"all_but": 0}),
    )
    return st.fixed_dictionaries(
        {"kind": st.just("grammar"), "text": text, "bias": bias, "seed": st.integers(0, 2**32 - 1)}
    )


_INTS = st.one_of(st.integers(-3, 100), st.integers(0, 5), st.sampled_from([2**31 - 1, -(2**31), 10**6]))
_FLOATS = st.one_of(
    st.floats(0.0, 1.0),
    st.floats(-3.0, 3.0),
    st.sampled_from([0.0, 1.0, 1e30, -1e30, math.inf, -math.inf, math.nan]),
)


def params_cases() -> st.SearchStrategy[dict[str, Any]]:
    breakers = st.lists(st.text(max_size=50), max_size=20)
    fields = {
        "temperature": _FLOATS,
        "top_k": _INTS,
        "top_p": _FLOATS,
        "min_p": _FLOATS,
        "typical_p": _FLOATS,
        "top_n_sigma": _FLOATS,
        "xtc_probability": _FLOATS,
        "xtc_threshold": _FLOATS,
        "dynatemp_range": _FLOATS,
        "dynatemp_exponent": _FLOATS,
        "repeat_penalty": _FLOATS,
        "repeat_last_n": _INTS,
        "frequency_penalty": _FLOATS,
        "presence_penalty": _FLOATS,
        "dry_multiplier": _FLOATS,
        "dry_base": _FLOATS,
        "dry_allowed_length": _INTS,
        "dry_penalty_last_n": _INTS,
        "dry_sequence_breakers": breakers,
        "mirostat": st.integers(-1, 3),
        "mirostat_tau": _FLOATS,
        "mirostat_eta": _FLOATS,
        "adaptive_target": _FLOATS,
        "adaptive_decay": _FLOATS,
        "min_keep": _INTS,
    }
    # a few parameters per case, so that most cases get past validation into llama.cpp
    names = st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True)
    params = names.flatmap(lambda ks: st.fixed_dictionaries({k: fields[k] for k in ks}))
    return st.fixed_dictionaries(
        {"kind": st.just("params"), "params": params, "seed": st.integers(0, 2**32 - 1)}
    )


def cases() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(grammar_cases(), params_cases())


# ------------------------------------------------------------------------------------- running


def run_case(model: Any, case: dict[str, Any], n_tokens: int = 6) -> str:
    """Run one case; returns "ok" or "refused: <error>". Unexpected exceptions propagate."""
    import numpy as np

    from llamabind.errors import LlamabindError
    from llamabind.generation.sampling import SamplingParams

    rng = np.random.default_rng(case["seed"])
    n_vocab = model.n_vocab
    try:
        if case["kind"] == "grammar":
            bias = case["bias"]
            if "all_but" in bias:  # ban every token but one
                keep = int(bias["all_but"])
                bias = {t: -math.inf for t in range(n_vocab) if t != keep}
            sp = SamplingParams(
                temperature=0.0 if case["seed"] % 2 else 0.8,
                seed=case["seed"],
                grammar=case["text"],
                logit_bias={int(t): float(b) for t, b in bias.items()},
            )
        else:
            sp = SamplingParams(seed=case["seed"], **case["params"])
        with sp.build(model) as sampler:
            for _ in range(n_tokens):
                logits = rng.normal(0.0, 3.0, n_vocab).astype(np.float32)
                token = sampler.sample_logits(logits)
                if model.vocab.is_eog(token):
                    break
    except (LlamabindError, ValueError) as exc:
        return f"refused: {type(exc).__name__}: {str(exc)[:120]}"
    return "ok"
