"""A tiny random-weight GGUF of an MTP-capable architecture (``glm4moe`` with one next-n layer).

llama.cpp builds an MTP draft graph (``LLM_GRAPH_TYPE_DECODER_MTP``) for glm4moe when the file
declares ``glm4moe.nextn_predict_layers`` and the last block carries the ``nextn.*`` tensors
(eh_proj, enorm, hnorm; embed_tokens / shared_head_* are optional and fall back to the trunk's).
The trunk is one dense block then MoE blocks; the next-n block is a MoE block plus the next-n
projection. The tokenizer is copied from SmolLM2 so prompts tokenize normally.

The weights are random but shaped so that the MTP head is a *good* drafter: the residual stream
is dominated by the token embedding (attention/FFN weights are small), so the target's next token
is mostly a function of the current token, and the next-n block's projection passes the token
embedding through, so it predicts that same function one step ahead. Acceptance is then high but
not perfect (the small attention/FFN terms still perturb the target), which exercises both full
and partial acceptance of MTP drafts.

    build_tiny_glm4moe_mtp(dir)        -> Path   (about 25 MB of F32, built once per directory)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers.fixtures_gguf import smollm2_q4_path

ARCH = "glm4moe"
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_EXPERT = 4
N_EXPERT_USED = 2
N_FF_EXP = 32
N_TRUNK = 2  # block 0 dense, block 1 MoE
N_NEXTN = 1


def _tokenizer_fields(src: Path) -> list[tuple[str, Any, Any, Any]]:
    """(key, value, GGUFValueType, sub type) for every tokenizer.* key of ``src``."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(src, "r")
    out: list[tuple[str, Any, Any, Any]] = []
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = GGUFValueType(field.types[0])
        if vtype == GGUFValueType.ARRAY:
            sub = GGUFValueType(field.types[-1])
            if sub == GGUFValueType.STRING:
                value: Any = [bytes(field.parts[i]).decode("utf-8", "surrogateescape") for i in field.data]
            else:
                value = [field.parts[i].tolist()[0] for i in field.data]
            out.append((key, value, vtype, sub))
        elif vtype == GGUFValueType.STRING:
            out.append((key, bytes(field.parts[field.data[0]]).decode("utf-8"), vtype, None))
        else:
            out.append((key, field.parts[field.data[0]].tolist()[0], vtype, None))
    return out


def build_tiny_glm4moe_mtp(directory: Path, *, seed: int = 1234, mix: float = 0.05) -> Path:
    """Write (once) a tiny glm4moe model with one next-n (MTP) layer; returns its path.

    ``mix`` scales the attention/FFN weights against the token embedding (0: the target's next
    token depends only on the current token and MTP drafts are always accepted).
    """
    from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

    out = Path(directory) / f"tiny-glm4moe-mtp-{seed}-{mix:g}.gguf"
    if out.is_file():
        return out
    rng = np.random.default_rng(seed)
    n_vocab = 0
    tok_fields = _tokenizer_fields(smollm2_q4_path())
    for key, value, _vt, _sub in tok_fields:
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)
    assert n_vocab > 0
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    w = GGUFWriter(tmp, ARCH)
    w.add_name("tiny-glm4moe-mtp")
    n_layer_all = N_TRUNK + N_NEXTN
    w.add_uint32(f"{ARCH}.context_length", 2048)
    w.add_uint32(f"{ARCH}.embedding_length", N_EMBD)
    w.add_uint32(f"{ARCH}.feed_forward_length", N_FF)
    w.add_uint32(f"{ARCH}.block_count", n_layer_all)
    w.add_uint32(f"{ARCH}.attention.head_count", N_HEAD)
    w.add_uint32(f"{ARCH}.attention.head_count_kv", N_HEAD_KV)
    w.add_float32(f"{ARCH}.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float32(f"{ARCH}.rope.freq_base", 10000.0)
    w.add_uint32(f"{ARCH}.rope.dimension_count", N_EMBD // N_HEAD)
    w.add_uint32(f"{ARCH}.expert_count", N_EXPERT)
    w.add_uint32(f"{ARCH}.expert_used_count", N_EXPERT_USED)
    w.add_uint32(f"{ARCH}.expert_shared_count", 1)
    w.add_uint32(f"{ARCH}.expert_feed_forward_length", N_FF_EXP)
    w.add_uint32(f"{ARCH}.leading_dense_block_count", 1)
    w.add_uint32(f"{ARCH}.nextn_predict_layers", N_NEXTN)
    w.add_uint32(f"{ARCH}.expert_gating_func", 2)  # sigmoid
    w.add_bool(f"{ARCH}.expert_weights_norm", True)
    w.add_float32(f"{ARCH}.expert_weights_scale", 1.0)
    w.add_uint32("general.file_type", 0)  # all F32
    for key, value, vtype, _sub in tok_fields:
        if vtype == GGUFValueType.ARRAY:
            w.add_array(key, value)
        else:
            w.add_key_value(key, value, vtype)

    head = N_EMBD // N_HEAD

    def t(name: str, *shape: int, scale: float = mix, ones: bool = False, arr: Any = None) -> None:
        if arr is None:
            if ones:
                arr = np.ones(shape, dtype=np.float32)
            else:
                arr = (rng.standard_normal(shape) * scale).astype(np.float32)
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32), raw_dtype=GGMLQuantizationType.F32)

    # numpy shapes are (rows=out, cols=in): ggml {in, out}
    t("token_embd.weight", n_vocab, N_EMBD, scale=0.5)
    t("output_norm.weight", N_EMBD, ones=True)
    t("output.weight", n_vocab, N_EMBD, scale=0.5)
    for i in range(n_layer_all):
        p = f"blk.{i}"
        t(f"{p}.attn_norm.weight", N_EMBD, ones=True)
        t(f"{p}.attn_q.weight", N_HEAD * head, N_EMBD)
        t(f"{p}.attn_k.weight", N_HEAD_KV * head, N_EMBD)
        t(f"{p}.attn_v.weight", N_HEAD_KV * head, N_EMBD)
        t(f"{p}.attn_q.bias", N_HEAD * head, scale=0.02)
        t(f"{p}.attn_k.bias", N_HEAD_KV * head, scale=0.02)
        t(f"{p}.attn_v.bias", N_HEAD_KV * head, scale=0.02)
        t(f"{p}.attn_output.weight", N_EMBD, N_HEAD * head)
        t(f"{p}.post_attention_norm.weight", N_EMBD, ones=True)
        if i == 0:
            t(f"{p}.ffn_gate.weight", N_FF, N_EMBD)
            t(f"{p}.ffn_up.weight", N_FF, N_EMBD)
            t(f"{p}.ffn_down.weight", N_EMBD, N_FF)
        else:
            t(f"{p}.ffn_gate_inp.weight", N_EXPERT, N_EMBD)
            t(f"{p}.exp_probs_b.bias", N_EXPERT, scale=0.01)
            t(f"{p}.ffn_gate_exps.weight", N_EXPERT, N_FF_EXP, N_EMBD)
            t(f"{p}.ffn_up_exps.weight", N_EXPERT, N_FF_EXP, N_EMBD)
            t(f"{p}.ffn_down_exps.weight", N_EXPERT, N_EMBD, N_FF_EXP)
            t(f"{p}.ffn_gate_shexp.weight", N_FF_EXP, N_EMBD)
            t(f"{p}.ffn_up_shexp.weight", N_FF_EXP, N_EMBD)
            t(f"{p}.ffn_down_shexp.weight", N_EMBD, N_FF_EXP)
        if i >= N_TRUNK:
            # concat(enorm(token embedding), hnorm(h)) -> pass the token embedding through
            eh = np.zeros((N_EMBD, 2 * N_EMBD), dtype=np.float32)
            eh[:, :N_EMBD] = np.eye(N_EMBD, dtype=np.float32)
            eh[:, N_EMBD:] = rng.standard_normal((N_EMBD, N_EMBD)) * mix
            t(f"{p}.nextn.eh_proj.weight", arr=eh)
            t(f"{p}.nextn.enorm.weight", N_EMBD, ones=True)
            t(f"{p}.nextn.hnorm.weight", N_EMBD, ones=True)
            t(f"{p}.nextn.shared_head_norm.weight", N_EMBD, ones=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(out)
    return out
