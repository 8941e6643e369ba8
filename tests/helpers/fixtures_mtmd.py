"""Builders of tiny random-weight multimodal projector GGUFs (and media files) for the mtmd tests.

No public vision or audio model can be downloaded here, so the tests write their own projectors
with the ``gguf`` package, following the metadata keys and tensor names libmtmd's CLIP loader
reads (``clip.*`` keys, ``v.*`` / ``a.*`` / ``mm.*`` tensors). Weights are random, so the model's
output is meaningless, but every stage runs for real: preprocessing, the encoder graph, the
projector, and decoding the embeddings into the text model.

    build_vision_projector(dir, ...)   a LLaVA-style projector: CLIP ViT encoder + 2-layer MLP
    build_audio_projector(dir, ...)    a Voxtral / Qwen2-Audio-style projector: Whisper encoder + MLP
    build_av_projector(dir)            both encoders in one file (image and audio in one request)
    vision_n_tokens(...)               image tokens such a vision projector produces per image
    audio_n_tokens(...)                audio tokens per 30 s Whisper window (3000 mel frames)
    png_bytes(rgb) / wav_bytes(pcm)    encode media without Pillow (zlib + struct)

Builders write atomically into ``dir`` and reuse a file that is already there.
"""

from __future__ import annotations

import io
import struct
import wave
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

AUDIO_SAMPLE_RATE = 16000
#: Voxtral-style frame stacking of the default audio projector: 30 tokens per 30 s window.
VOXTRAL_STACK_FACTOR = 25


def vision_n_tokens(image_size: int, patch_size: int) -> int:
    """A fixed-size (LLaVA) projector resizes every image to image_size², one token per patch."""
    return (image_size // patch_size) ** 2


def _rand(rng: np.random.Generator, *shape: int, scale: float = 0.02) -> npt.NDArray[np.float32]:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _write(out: Path, kv: dict[str, object], tensors: dict[str, npt.NDArray[np.generic]]) -> None:
    import gguf

    tmp = out.with_name(out.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), arch="clip")
    for key, value in kv.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
        else:  # pragma: no cover - builder bug
            raise TypeError(f"{key}: unsupported metadata value {value!r}")
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(out)


def _encoder_layers(
    rng: np.random.Generator, prefix: str, n_layer: int, n_embd: int, n_ff: int, *, k_bias: bool
) -> dict[str, npt.NDArray[np.generic]]:
    t: dict[str, npt.NDArray[np.generic]] = {}
    for il in range(n_layer):
        b = f"{prefix}.blk.{il}"
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            t[f"{b}.{proj}.weight"] = _rand(rng, n_embd, n_embd)
            if proj != "attn_k" or k_bias:
                t[f"{b}.{proj}.bias"] = _rand(rng, n_embd)
        for ln in ("ln1", "ln2"):
            t[f"{b}.{ln}.weight"] = np.ones(n_embd, dtype=np.float32)
            t[f"{b}.{ln}.bias"] = np.zeros(n_embd, dtype=np.float32)
        # numpy (out, in) is ggml ne [in, out]: ffn_down's ne[0] is n_ff, so it is not "swapped"
        t[f"{b}.ffn_up.weight"] = _rand(rng, n_ff, n_embd)
        t[f"{b}.ffn_up.bias"] = _rand(rng, n_ff)
        t[f"{b}.ffn_down.weight"] = _rand(rng, n_embd, n_ff)
        t[f"{b}.ffn_down.bias"] = _rand(rng, n_embd)
    return t


def _vision_parts(
    rng: np.random.Generator,
    *,
    n_embd_out: int,
    image_size: int,
    patch_size: int,
    n_embd: int,
    n_head: int,
    n_ff: int,
    n_layer: int,
) -> tuple[dict[str, object], dict[str, npt.NDArray[np.generic]]]:
    """LLaVA-1.5 layout: CLIP ViT (``v.*``, class embedding, pre-norm) + 2-layer MLP (``mm.0``, ``mm.2``)."""
    if image_size % patch_size:
        raise ValueError("image_size must be a multiple of patch_size")
    n_pos = vision_n_tokens(image_size, patch_size) + 1  # + the class embedding
    kv: dict[str, object] = {
        "clip.has_vision_encoder": True,
        "clip.use_gelu": True,
        "clip.vision.image_size": image_size,
        "clip.vision.patch_size": patch_size,
        "clip.vision.embedding_length": n_embd,
        "clip.vision.feed_forward_length": n_ff,
        "clip.vision.block_count": n_layer,
        "clip.vision.projection_dim": n_embd_out,
        "clip.vision.attention.head_count": n_head,
        "clip.vision.attention.layer_norm_epsilon": 1e-5,
        "clip.vision.image_mean": [0.48145466, 0.4578275, 0.40821073],
        "clip.vision.image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    t: dict[str, npt.NDArray[np.generic]] = {
        # conv kernel: numpy (out_ch, in_ch, kh, kw) is ggml ne [kw, kh, in, out]
        "v.patch_embd.weight": _rand(rng, n_embd, 3, patch_size, patch_size, scale=0.05).astype(np.float16),
        "v.class_embd": _rand(rng, n_embd),
        "v.position_embd.weight": _rand(rng, n_pos, n_embd),
        "v.pre_ln.weight": np.ones(n_embd, dtype=np.float32),
        "v.pre_ln.bias": np.zeros(n_embd, dtype=np.float32),
    }
    t.update(_encoder_layers(rng, "v", n_layer, n_embd, n_ff, k_bias=True))
    # scale the projector up a little so images visibly change the text model's logits
    t["mm.0.weight"] = _rand(rng, n_embd_out, n_embd, scale=0.2)
    t["mm.0.bias"] = _rand(rng, n_embd_out)
    t["mm.2.weight"] = _rand(rng, n_embd_out, n_embd_out, scale=0.2)
    t["mm.2.bias"] = _rand(rng, n_embd_out)
    return kv, t


def _audio_parts(
    rng: np.random.Generator,
    *,
    kind: str,
    n_embd_out: int,
    n_mel: int,
    n_embd: int,
    n_head: int,
    n_ff: int,
    n_layer: int,
    stack_factor: int,
) -> tuple[dict[str, object], dict[str, npt.NDArray[np.generic]]]:
    """Whisper encoder (``a.*``: 2 conv1d, positions, blocks without k bias) + Voxtral / Qwen2-Audio head."""
    if kind not in ("voxtral", "qwen2a"):
        raise ValueError("kind must be 'voxtral' or 'qwen2a'")
    if kind == "voxtral" and (3000 % stack_factor or 750 % stack_factor):
        raise ValueError("stack_factor must divide 750 (the token count must match libmtmd's formula)")
    n_pos = 1500  # Whisper's positions after the stride-2 conv over 3000 frames
    kv: dict[str, object] = {
        "clip.has_audio_encoder": True,
        "clip.audio.num_mel_bins": n_mel,
        "clip.audio.embedding_length": n_embd,
        "clip.audio.feed_forward_length": n_ff,
        "clip.audio.block_count": n_layer,
        "clip.audio.projection_dim": n_embd_out,
        "clip.audio.attention.head_count": n_head,
        "clip.audio.attention.layer_norm_epsilon": 1e-5,
    }
    t: dict[str, npt.NDArray[np.generic]] = {
        # conv1d kernels: numpy (out, in, k) is ggml ne [k, in, out]; biases broadcast as (out, 1)
        "a.conv1d.1.weight": _rand(rng, n_embd, n_mel, 3, scale=0.05).astype(np.float16),
        "a.conv1d.1.bias": _rand(rng, n_embd, 1),
        "a.conv1d.2.weight": _rand(rng, n_embd, n_embd, 3, scale=0.05).astype(np.float16),
        "a.conv1d.2.bias": _rand(rng, n_embd, 1),
        "a.position_embd.weight": _rand(rng, n_pos, n_embd),
        "a.post_ln.weight": np.ones(n_embd, dtype=np.float32),
        "a.post_ln.bias": np.zeros(n_embd, dtype=np.float32),
    }
    t.update(_encoder_layers(rng, "a", n_layer, n_embd, n_ff, k_bias=False))
    if kind == "qwen2a":
        t["mm.a.fc.weight"] = _rand(rng, n_embd_out, n_embd, scale=0.2)
        t["mm.a.fc.bias"] = _rand(rng, n_embd_out)
    else:
        kv["clip.audio.projector.stack_factor"] = stack_factor
        t["mm.a.mlp.1.weight"] = _rand(rng, n_embd_out, n_embd * stack_factor, scale=0.2)
        t["mm.a.mlp.2.weight"] = _rand(rng, n_embd_out, n_embd_out, scale=0.2)
    return kv, t


def build_vision_projector(
    directory: Path,
    *,
    n_embd_out: int = 576,
    image_size: int = 32,
    patch_size: int = 8,
    n_embd: int = 64,
    n_head: int = 4,
    n_ff: int = 128,
    n_layer: int = 2,
    seed: int = 0,
) -> Path:
    """A LLaVA-1.5-style projector (``clip.projector_type = mlp``): CLIP ViT + MLP to ``n_embd_out``.

    Every image becomes :func:`vision_n_tokens` ``(image_size, patch_size)`` embeddings of
    ``n_embd_out`` floats (the CLIP class token is dropped, as LLaVA does).
    """
    out = Path(directory) / f"mmproj-tiny-mlp-{image_size}-{patch_size}-{n_embd_out}-s{seed}.gguf"
    if out.is_file():
        return out
    rng = np.random.default_rng(seed)
    kv, t = _vision_parts(
        rng,
        n_embd_out=n_embd_out,
        image_size=image_size,
        patch_size=patch_size,
        n_embd=n_embd,
        n_head=n_head,
        n_ff=n_ff,
        n_layer=n_layer,
    )
    kv = {
        "general.name": "tiny-random-llava-projector",
        "general.description": "random-weight CLIP ViT + MLP projector for llamabind tests",
        "clip.projector_type": "mlp",
        "clip.has_audio_encoder": False,
        **kv,
    }
    _write(out, kv, t)
    return out


def audio_n_tokens(kind: str = "voxtral", stack_factor: int = VOXTRAL_STACK_FACTOR) -> int:
    """Audio tokens per 30 s window (3000 mel frames) for an audio projector built here.

    Whisper's stride-2 conv halves the frames and both types average-pool pairs: 750 positions;
    Voxtral then stacks ``stack_factor`` consecutive positions into one token.
    """
    if kind == "qwen2a":
        return 3000 // 2 // 2
    return 3000 // stack_factor // 2 // 2


def build_audio_projector(
    directory: Path,
    *,
    kind: str = "voxtral",
    n_embd_out: int = 576,
    n_mel: int = 80,
    n_embd: int = 32,
    n_head: int = 4,
    n_ff: int = 64,
    n_layer: int = 1,
    stack_factor: int = VOXTRAL_STACK_FACTOR,
    seed: int = 1,
) -> Path:
    """A Whisper-encoder audio projector: ``kind="voxtral"`` (stacked frames + 2-layer MLP, few
    tokens: fast tests) or ``kind="qwen2a"`` (Qwen2-Audio: one linear layer, 750 tokens per window).

    Audio at 16 kHz is cut into 30 s windows; each gives :func:`audio_n_tokens` embeddings.
    """
    out = Path(directory) / f"mmproj-tiny-{kind}-{n_mel}-{n_embd_out}-k{stack_factor}-s{seed}.gguf"
    if out.is_file():
        return out
    rng = np.random.default_rng(seed)
    kv, t = _audio_parts(
        rng,
        kind=kind,
        n_embd_out=n_embd_out,
        n_mel=n_mel,
        n_embd=n_embd,
        n_head=n_head,
        n_ff=n_ff,
        n_layer=n_layer,
        stack_factor=stack_factor,
    )
    kv = {
        "general.name": "tiny-random-whisper-projector",
        "general.description": "random-weight Whisper encoder + projector for llamabind tests",
        "clip.projector_type": kind,
        "clip.has_vision_encoder": False,
        **kv,
    }
    _write(out, kv, t)
    return out


def build_av_projector(directory: Path, *, n_embd_out: int = 576, seed: int = 2) -> Path:
    """One projector file with both encoders (as Qwen2.5-Omni ships): the LLaVA vision tower of
    :func:`build_vision_projector` and the Voxtral audio tower of :func:`build_audio_projector`,
    typed per modality (``clip.vision.projector_type`` / ``clip.audio.projector_type``)."""
    out = Path(directory) / f"mmproj-tiny-av-{n_embd_out}-s{seed}.gguf"
    if out.is_file():
        return out
    rng = np.random.default_rng(seed)
    kv_v, t_v = _vision_parts(
        rng, n_embd_out=n_embd_out, image_size=32, patch_size=8, n_embd=64, n_head=4, n_ff=128, n_layer=2
    )
    kv_a, t_a = _audio_parts(
        rng,
        kind="voxtral",
        n_embd_out=n_embd_out,
        n_mel=80,
        n_embd=32,
        n_head=4,
        n_ff=64,
        n_layer=1,
        stack_factor=VOXTRAL_STACK_FACTOR,
    )
    kv: dict[str, object] = {
        "general.name": "tiny-random-av-projector",
        "general.description": "random-weight vision + audio projector for llamabind tests",
        "clip.vision.projector_type": "mlp",
        "clip.audio.projector_type": "voxtral",
        **kv_v,
        **kv_a,
    }
    _write(out, kv, {**t_v, **t_a})
    return out


# ------------------------------------------------------------------ media


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bytes(rgb: npt.NDArray[np.uint8]) -> bytes:
    """Encode an (h, w, 3) uint8 array as a PNG (8-bit RGB, no filtering)."""
    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, c = arr.shape
    if c != 3:
        raise ValueError("expected an (h, w, 3) array")
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def sample_image(width: int = 48, height: int = 40, seed: int = 0) -> npt.NDArray[np.uint8]:
    """A deterministic RGB gradient with noise (non-square on purpose)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    noise = rng.integers(0, 16, size=img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def wav_bytes(pcm: npt.NDArray[np.float32], sample_rate: int = AUDIO_SAMPLE_RATE) -> bytes:
    """Encode mono float PCM in [-1, 1] as a 16-bit WAV file."""
    data = (np.clip(pcm, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(sample_rate)
        wf.writeframes(data)
    return buf.getvalue()


def sample_tone(
    seconds: float = 1.0, freq: float = 440.0, sample_rate: int = AUDIO_SAMPLE_RATE
) -> npt.NDArray[np.float32]:
    t = np.arange(int(seconds * sample_rate), dtype=np.float32) / sample_rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ------------------------------------------------------------------ M-RoPE (Qwen2-VL)

#: width of the tiny Qwen2-VL text model (and of its projector's output)
QWEN2VL_N_EMBD = 64


def build_tiny_qwen2vl(directory: Path, *, n_layer: int = 2, seed: int = 3) -> Path:
    """A tiny random-weight ``qwen2vl`` text model (M-RoPE, rope sections [2, 3, 3, 0] over a head
    of 16) with SmolLM2's tokenizer, so image positions take the 2-D M-RoPE path."""
    from gguf import GGUFValueType

    from tests.helpers.fixtures_gguf import smollm2_q4_path
    from tests.helpers.fixtures_mtp import _tokenizer_fields

    out = Path(directory) / f"tiny-qwen2vl-{n_layer}-s{seed}.gguf"
    if out.is_file():
        return out
    import gguf

    rng = np.random.default_rng(seed)
    fields = _tokenizer_fields(smollm2_q4_path())
    n_vocab = next(len(v) for k, v, _t, _s in fields if k == "tokenizer.ggml.tokens")
    n_embd, n_head, n_head_kv, n_ff = QWEN2VL_N_EMBD, 4, 2, 128
    head = n_embd // n_head
    arch = "qwen2vl"
    tmp = out.with_name(out.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), arch)
    w.add_name("tiny-qwen2vl")
    w.add_uint32(f"{arch}.context_length", 4096)
    w.add_uint32(f"{arch}.embedding_length", n_embd)
    w.add_uint32(f"{arch}.feed_forward_length", n_ff)
    w.add_uint32(f"{arch}.block_count", n_layer)
    w.add_uint32(f"{arch}.attention.head_count", n_head)
    w.add_uint32(f"{arch}.attention.head_count_kv", n_head_kv)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32(f"{arch}.rope.freq_base", 10000.0)
    w.add_array(f"{arch}.rope.dimension_sections", [2, 3, 3, 0])
    w.add_uint32("general.file_type", 0)
    for key, value, vtype, _sub in fields:
        if vtype == GGUFValueType.ARRAY:
            w.add_array(key, value)
        else:
            w.add_key_value(key, value, vtype)
    t: dict[str, npt.NDArray[np.generic]] = {
        "token_embd.weight": _rand(rng, n_vocab, n_embd, scale=0.5),
        "output_norm.weight": np.ones(n_embd, dtype=np.float32),
        "output.weight": _rand(rng, n_vocab, n_embd, scale=0.5),
    }
    for i in range(n_layer):
        p = f"blk.{i}"
        t[f"{p}.attn_norm.weight"] = np.ones(n_embd, dtype=np.float32)
        t[f"{p}.attn_q.weight"] = _rand(rng, n_head * head, n_embd, scale=0.1)
        t[f"{p}.attn_k.weight"] = _rand(rng, n_head_kv * head, n_embd, scale=0.1)
        t[f"{p}.attn_v.weight"] = _rand(rng, n_head_kv * head, n_embd, scale=0.1)
        t[f"{p}.attn_q.bias"] = _rand(rng, n_head * head)
        t[f"{p}.attn_k.bias"] = _rand(rng, n_head_kv * head)
        t[f"{p}.attn_v.bias"] = _rand(rng, n_head_kv * head)
        t[f"{p}.attn_output.weight"] = _rand(rng, n_embd, n_head * head, scale=0.1)
        t[f"{p}.ffn_norm.weight"] = np.ones(n_embd, dtype=np.float32)
        t[f"{p}.ffn_gate.weight"] = _rand(rng, n_ff, n_embd, scale=0.1)
        t[f"{p}.ffn_up.weight"] = _rand(rng, n_ff, n_embd, scale=0.1)
        t[f"{p}.ffn_down.weight"] = _rand(rng, n_embd, n_ff, scale=0.1)
    for name, arr in t.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(out)
    return out


def build_qwen2vl_projector(
    directory: Path,
    *,
    n_embd_out: int = QWEN2VL_N_EMBD,
    patch_size: int = 8,
    image_size: int = 64,
    n_embd: int = 32,
    n_head: int = 2,
    n_ff: int = 64,
    n_layer: int = 1,
    seed: int = 4,
) -> Path:
    """A Qwen2-VL-style projector (``qwen2vl_merger``): two-frame patch embedding, a ViT with
    2-D M-RoPE, and a merger MLP over 2x2 patches. Dynamic resolution: an image of w x h pixels
    (after resizing to multiples of 2 * patch_size) gives (w / 2p) * (h / 2p) tokens that span
    max(w, h) / 2p positions of the text model."""
    out = Path(directory) / f"mmproj-tiny-qwen2vl-{patch_size}-{n_embd_out}-s{seed}.gguf"
    if out.is_file():
        return out
    rng = np.random.default_rng(seed)
    kv: dict[str, object] = {
        "general.name": "tiny-random-qwen2vl-projector",
        "clip.projector_type": "qwen2vl_merger",
        "clip.has_vision_encoder": True,
        "clip.has_audio_encoder": False,
        "clip.vision.image_size": image_size,
        "clip.vision.patch_size": patch_size,
        "clip.vision.embedding_length": n_embd,
        "clip.vision.feed_forward_length": n_ff,
        "clip.vision.block_count": n_layer,
        "clip.vision.projection_dim": n_embd_out,
        "clip.vision.attention.head_count": n_head,
        "clip.vision.attention.layer_norm_epsilon": 1e-6,
        "clip.vision.image_mean": [0.48145466, 0.4578275, 0.40821073],
        "clip.vision.image_std": [0.26862954, 0.26130258, 0.27577711],
        "clip.use_gelu": True,
    }
    t: dict[str, npt.NDArray[np.generic]] = {
        "v.patch_embd.weight": _rand(rng, n_embd, 3, patch_size, patch_size, scale=0.05).astype(np.float16),
        "v.patch_embd.weight.1": _rand(rng, n_embd, 3, patch_size, patch_size, scale=0.05).astype(np.float16),
    }
    t.update(_encoder_layers(rng, "v", n_layer, n_embd, n_ff, k_bias=True))
    t["v.post_ln.weight"] = np.ones(n_embd, dtype=np.float32)
    t["v.post_ln.bias"] = np.zeros(n_embd, dtype=np.float32)
    t["mm.0.weight"] = _rand(rng, 4 * n_embd, 4 * n_embd, scale=0.1)
    t["mm.0.bias"] = _rand(rng, 4 * n_embd)
    t["mm.2.weight"] = _rand(rng, n_embd_out, 4 * n_embd, scale=0.3)
    t["mm.2.bias"] = _rand(rng, n_embd_out)
    _write(out, kv, t)
    return out
