"""GGUF metadata mutation fuzzing: hypothesis strategies for mutations of the default model's header
(metadata values and types, vocabulary arrays, tensor infos, raw bytes, truncation) and the code
that applies one case and loads the result (in a worker process: see fuzz_worker.py).

A case is a JSON-able dict ``{"kind": "gguf", "mutations": [...], "overrides": {...}}``; the worker
applies the mutations to the parsed header of the model, writes the header and loads the model
with ``kv_overrides``: the outcome must be a llamabind error or a model that decodes one token.

Files are cheap to write: one shared copy of the model is made per work directory, with a header
slot 1 MiB larger than the original header and the tensor data after it. Each case writes its
header into that slot, padded to the slot's exact size with an unused ``fuzz.pad`` string (so the
data section starts where it always does); truncated files are written separately (header only).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

# value types of the GGUF format
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_INT_BITS = {U8: 8, I8: 8, U16: 16, I16: 16, U32: 32, I32: 32, U64: 64, I64: 64, BOOL: 8}
_FLOAT_FMT = {F32: "<f", F64: "<d"}
_NP_DTYPE = {U8: "<u1", I8: "<i1", U16: "<u2", I16: "<i2", U32: "<u4", I32: "<i4", U64: "<u8", I64: "<i8"}
_NP_DTYPE |= {F32: "<f4", F64: "<f8", BOOL: "<u1"}

SLOT_HEADROOM = 1 << 20
_PAD_KEY = b"fuzz.pad"
_PAD_MIN = 8 + len(_PAD_KEY) + 4 + 8  # key, type, string length: an empty pad string

COUNT_KEYS = (
    "llama.block_count",
    "llama.context_length",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.attention.value_length",
    "llama.rope.dimension_count",
    "llama.expert_count",
    "llama.expert_used_count",
    "llama.expert_shared_count",
    "llama.leading_dense_block_count",
    "llama.attention.sliding_window",
    "llama.vocab_size",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "general.alignment",
    "general.file_type",
    "general.quantization_version",
)
FLOAT_KEYS = ("llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.rope.scaling.factor")
STRING_KEYS = (
    "general.architecture",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.chat_template",
)
ARRAY_KEYS = (
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.scores",
    "general.languages",
)
_STRINGS = ("", "llama", "gpt2", "qwen2", "gemma3", "bert", "t5", "mamba", "rwkv6", "no_vocab", "none")
_STRINGS += ("spm", "ugm", "plamo2", "smollm", "x" * 5000, "\udcff\udcfe", "{{ raise_exception('x') }}")

# ------------------------------------------------------------------------------------ strategies

_INTS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 7, 8, 9, 31, 64, 65, 513, 4096, 49151, 49152, 49153]),
    st.sampled_from([2**31 - 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, -1]),
    st.integers(0, 100_000),
)
_FLOATS = st.sampled_from([0.0, -1.0, 1e-30, 1e30, float("inf"), float("nan"), 2.5])
_INT_TYPES = st.sampled_from([U32, U32, U32, I32, U8, I8, U16, I16, U64, I64])


def _value_of(vtype: int) -> st.SearchStrategy[Any]:
    if vtype in (F32, F64):
        return _FLOATS
    if vtype == STR:
        return st.sampled_from(_STRINGS)
    if vtype == BOOL:
        return st.integers(0, 2)
    return _INTS


def _typed_value() -> st.SearchStrategy[dict[str, Any]]:
    """A value of any type: scalars, strings, arrays (a swapped type for the key it is set on)."""
    scalar_type = st.sampled_from([U8, I8, U16, I16, U32, I32, U64, I64, F32, F64, BOOL, STR])
    scalar = scalar_type.flatmap(lambda t: _value_of(t).map(lambda v: {"type": t, "value": v}))
    array = st.sampled_from([U32, I32, F32, STR, U8]).flatmap(
        lambda t: st.lists(_value_of(t), max_size=40).map(lambda vs: {"type": ARR, "sub": t, "value": vs})
    )
    return st.one_of(scalar, array)


def _set_count() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"op": st.just("set"), "key": st.sampled_from(COUNT_KEYS), "type": _INT_TYPES, "value": _INTS}
    )


def _set_other() -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(COUNT_KEYS + FLOAT_KEYS + STRING_KEYS + ARRAY_KEYS)
    plain = st.one_of(
        st.tuples(st.sampled_from(FLOAT_KEYS), st.just(F32), _FLOATS),
        st.tuples(st.sampled_from(STRING_KEYS), st.just(STR), st.sampled_from(_STRINGS)),
    ).map(lambda t: {"op": "set", "key": t[0], "type": t[1], "value": t[2]})
    swapped = st.tuples(keys, _typed_value()).map(lambda t: {"op": "set", "key": t[0], **t[1]})
    return st.one_of(plain, swapped, keys.map(lambda k: {"op": "delete", "key": k}))


def _arrays() -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(ARRAY_KEYS[:3])
    length = st.fixed_dictionaries(
        {
            "op": st.just("array_len"),
            "key": keys,
            "n": st.one_of(st.sampled_from([0, 1, 2, 100]), st.integers(-300, 300)),  # < 0: from the end
            "fill": st.sampled_from(["dup", "unique", "empty"]),
        }
    )
    item = st.fixed_dictionaries(
        {
            "op": st.just("array_item"),
            "key": keys,
            "at": st.floats(0.0, 1.0),
            "value": st.sampled_from(["dup", "empty", "bad_utf8", "space", "no_space", "long", "nul"]),
            "count": st.integers(1, 3),
        }
    )
    retype = st.fixed_dictionaries(
        {
            "op": st.just("array_type"),
            "key": keys,
            "sub": st.sampled_from([U8, I32, U32, F32, STR, I64, BOOL]),
        }
    )
    return st.one_of(length, item, retype)


def _tensors() -> st.SearchStrategy[dict[str, Any]]:
    field = st.sampled_from(["ne", "n_dims", "type", "offset", "name"])
    value = st.one_of(_INTS, st.integers(-64, 64))
    return st.fixed_dictionaries(
        {"op": st.just("tensor"), "at": st.floats(0.0, 1.0), "field": field, "value": value}
    )


def _raw() -> st.SearchStrategy[dict[str, Any]]:
    region = st.sampled_from(["preamble", "kv", "tensors", "tensors", "any"])
    flip = st.fixed_dictionaries(
        {"op": st.just("flip"), "region": region, "at": st.floats(0.0, 1.0), "xor": st.integers(1, 255)}
    )
    count = st.fixed_dictionaries(
        {"op": st.just("header"), "field": st.sampled_from(["version", "n_tensors", "n_kv"]), "value": _INTS}
    )
    return st.one_of(flip, count)


def _truncate() -> st.SearchStrategy[dict[str, Any]]:
    region = st.sampled_from(["preamble", "kv", "tensors", "any"])
    return st.fixed_dictionaries({"op": st.just("truncate"), "region": region, "at": st.floats(0.0, 1.0)})


def gguf_cases() -> st.SearchStrategy[dict[str, Any]]:
    mutation = st.one_of(_set_count(), _set_count(), _set_other(), _arrays(), _tensors(), _raw())
    mutations = st.tuples(st.lists(mutation, min_size=1, max_size=3), st.lists(_truncate(), max_size=1))
    overrides = st.one_of(
        st.just({}),
        st.dictionaries(st.sampled_from(COUNT_KEYS[:11]), st.integers(-2, 600), max_size=2),
    )
    return st.fixed_dictionaries(
        {"kind": st.just("gguf"), "mutations": mutations.map(lambda t: t[0] + t[1]), "overrides": overrides}
    )


# ------------------------------------------------------------------------------------- encoding


def _s(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def _bytes_of(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")


def _scalar(vtype: int, value: Any) -> bytes:
    if vtype == STR:
        return _s(_bytes_of(value))
    if vtype in _FLOAT_FMT:
        return struct.pack(_FLOAT_FMT[vtype], float(value))
    bits = _INT_BITS[vtype]
    return (int(value) & ((1 << bits) - 1)).to_bytes(bits // 8, "little")


def _array(sub: int, items: list[Any]) -> bytes:
    head = struct.pack("<IQ", sub, len(items))
    if sub == STR:
        return head + b"".join(_s(_bytes_of(v)) for v in items)
    if sub in _FLOAT_FMT:
        return head + b"".join(struct.pack(_FLOAT_FMT[sub], float(v)) for v in items)
    return head + b"".join(_scalar(sub, v) for v in items)


def _convert(item: Any, sub: int, i: int) -> Any:
    if sub == STR:
        return item if isinstance(item, bytes) else str(item).encode()
    if isinstance(item, bytes):
        return i  # strings become their index
    return float(item) if sub in _FLOAT_FMT else int(item)


class Template:
    """The default model's header, parsed once: KV entries (value, type, encoded bytes), tensor infos."""

    def __init__(self, model_path: Path) -> None:
        from llamabind.core.gguf_file import GGUFArray, read_header

        h = read_header(model_path)
        self.path = model_path
        self.version = h.version
        self.kv: dict[str, tuple[int, int | None, Any]] = {}  # key -> (vtype, sub type, value or items)
        self.encoded: dict[str, bytes] = {}
        for e in h.kv:
            if isinstance(e.value, GGUFArray):
                self.kv[e.key] = (ARR, e.value.sub_type, h.array(e.key))
            else:
                self.kv[e.key] = (e.vtype, None, e.value)
            self.encoded[e.key] = self._encode(e.key, *self.kv[e.key])
        self.tensors = [(t.name, list(t.ne), t.type_id, t.offset) for t in h.tensors]
        self.data_offset = h.data_offset
        self.file_size = h.file_size
        self.slot = (h.data_offset + SLOT_HEADROOM) // 4096 * 4096

    @staticmethod
    def _encode(key: str, vtype: int, sub: int | None, value: Any) -> bytes:
        body = _array(sub if sub is not None else U32, list(value)) if vtype == ARR else _scalar(vtype, value)
        return _s(key.encode()) + struct.pack("<I", vtype) + body

    def shared_copy(self, workdir: Path) -> Path:
        """The model with a larger header slot, written once per work directory."""
        out = workdir / "fuzz-shared.gguf"
        if out.is_file() and out.stat().st_size == self.slot + self.file_size - self.data_offset:
            return out
        tmp = workdir / f"fuzz-shared.{os.getpid()}.tmp"
        with self.path.open("rb") as src, tmp.open("wb") as dst:
            dst.truncate(self.slot)
            dst.seek(self.slot)
            src.seek(self.data_offset)
            while chunk := src.read(1 << 24):
                dst.write(chunk)
        tmp.replace(out)
        return out


def _apply_kv(
    t: Template, kv: dict[str, bytes], items: dict[str, tuple[int, list[Any]]], m: dict[str, Any]
) -> None:
    op, key = m["op"], m.get("key", "")
    if op == "set":
        kv[key] = Template._encode(key, m["type"], m.get("sub"), m["value"])
        items.pop(key, None)
        return
    if op == "delete":
        kv.pop(key, None)
        items.pop(key, None)
        return
    if key not in items:
        entry = t.kv.get(key)
        if entry is None or entry[0] != ARR or entry[1] is None:
            return
        items[key] = (entry[1], list(entry[2]))
    sub, arr = items[key]
    if op == "array_len":
        n = m["n"] if m["n"] >= 0 else max(0, len(arr) + m["n"])
        if n <= len(arr):
            del arr[n:]
        else:
            for i in range(len(arr), n):
                fill = {"dup": arr[-1] if arr else b"a", "unique": f"<fuzz{i}>".encode(), "empty": b""}[
                    m["fill"]
                ]
                arr.append(fill if sub == STR else (0 if m["fill"] == "empty" else i))
    elif op == "array_item" and arr:
        for k in range(m["count"]):
            i = min(len(arr) - 1, int(m["at"] * len(arr)) + k)
            new = {
                "dup": arr[i - 1] if i else arr[-1],
                "empty": b"",
                "bad_utf8": b"\xff\xfe",
                "space": b" ",
                "no_space": b"ab",
                "long": b"y" * 65536,
                "nul": b"a\x00b",
            }[m["value"]]
            arr[i] = new if sub == STR else (-(1 << 31) if m["value"] == "long" else 0)
    elif op == "array_type":
        items[key] = (m["sub"], [_convert(v, m["sub"], i) for i, v in enumerate(arr)])


def _apply_tensor(tensors: list[list[Any]], m: dict[str, Any]) -> None:
    i = min(len(tensors) - 1, int(m["at"] * len(tensors)))
    name, ne, type_id, offset = tensors[i]
    v = m["value"]
    if m["field"] == "ne":
        ne = [*ne]
        ne[abs(v) % len(ne)] = v if v > 64 or v <= 0 else ne[abs(v) % len(ne)] + v
    elif m["field"] == "n_dims":
        ne = (ne + [1] * 8)[: max(0, v % 10)] if v >= 0 else ne[:-1]
    elif m["field"] == "type":
        type_id = v
    elif m["field"] == "offset":
        offset = offset + v if abs(v) < 100_000 else v
    else:
        name = tensors[(i + 1) % len(tensors)][0] if v % 2 else name + "x" * (v % 70)
    tensors[i] = [name, ne, type_id, offset]


def _tensor_info(name: str, ne: list[int], type_id: int, offset: int) -> bytes:
    dims = b"".join((d & (2**64 - 1)).to_bytes(8, "little") for d in ne)
    return (
        _s(name.encode())
        + struct.pack("<I", len(ne))
        + dims
        + struct.pack("<IQ", type_id & 0xFFFFFFFF, offset & (2**64 - 1))
    )


def build(t: Template, case: dict[str, Any], workdir: Path) -> Path:
    """Write the case's file: the shared copy with a new header, or a separate truncated header."""
    kv = dict(t.encoded)
    items: dict[str, tuple[int, list[Any]]] = {}
    tensors: list[list[Any]] = [list(x) for x in t.tensors]
    counts: dict[str, int] = {}
    raw_ops = []
    for m in case["mutations"]:
        if m["op"] == "tensor":
            _apply_tensor(tensors, m)
        elif m["op"] == "header":
            counts[m["field"]] = m["value"]
        elif m["op"] in ("flip", "truncate"):
            raw_ops.append(m)
        else:
            _apply_kv(t, kv, items, m)
    for key, (sub, arr) in items.items():
        kv[key] = _s(key.encode()) + struct.pack("<I", ARR) + _array(sub, arr)
    kv_bytes = b"".join(kv.values())
    tensor_bytes = b"".join(_tensor_info(*x) for x in tensors)
    pad = t.slot - (24 + len(kv_bytes) + _PAD_MIN + len(tensor_bytes))
    if pad < 0:
        raise ValueError("mutated header does not fit the slot")
    pad_entry = _s(_PAD_KEY) + struct.pack("<I", STR) + _s(b"\0" * pad)
    preamble = b"GGUF" + struct.pack(
        "<IQQ",
        counts.get("version", t.version) & 0xFFFFFFFF,
        counts.get("n_tensors", len(tensors)) & (2**64 - 1),
        counts.get("n_kv", len(kv) + 1) & (2**64 - 1),
    )
    header = bytearray(preamble + kv_bytes + pad_entry + tensor_bytes)
    regions = {
        "preamble": (4, 24),
        "kv": (24, 24 + len(kv_bytes)),
        "tensors": (len(header) - len(tensor_bytes), len(header)),
        "any": (0, len(header)),
    }
    cut: int | None = None
    for m in raw_ops:
        lo, hi = regions[m["region"]]
        at = min(hi - 1, lo + int(m["at"] * (hi - lo)))
        if m["op"] == "flip":
            header[at] ^= m["xor"]
        else:
            cut = at if cut is None else min(cut, at)
    if cut is not None:
        out = workdir / "fuzz-truncated.gguf"
        out.write_bytes(bytes(header[:cut]))
        return out
    shared = t.shared_copy(workdir)
    with shared.open("r+b") as f:
        f.write(header)
    return shared


# ------------------------------------------------------------------------------------- running

_TEMPLATE: Template | None = None


def run_gguf_case(case: dict[str, Any], workdir: Path) -> str:
    """Build and load one case; "ok" (loaded and decoded a token) or "refused: <llamabind error>"."""
    import llamabind as lb
    from llamabind.core.batch import Batch
    from llamabind.errors import LlamabindError

    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = Template(Path(os.environ.get("LLAMABIND_FUZZ_MODEL") or lb.default_model_path()))
    path = build(_TEMPLATE, case, workdir)
    try:
        overrides = {str(k): v for k, v in case.get("overrides", {}).items()}
        with lb.Model(path, kv_overrides=overrides) as model:
            with lb.Context(model, n_ctx=64, n_batch=8, n_ubatch=8, n_threads=1) as ctx:
                batch = Batch(1)
                batch.add(min(1, model.n_vocab - 1), 0, logits=True)
                ctx.decode(batch)
                ctx.logits()
    except LlamabindError as exc:
        return f"refused: {type(exc).__name__}: {str(exc)[:400]}"
    return "ok"
