"""Multimodal (libmtmd) end to end on SmolLM2 with tiny random-weight projectors written by
tests/helpers/fixtures_mtmd.py: image/audio → chunks → eval → generation, KV reuse, chat content parts,
the CLI, and every misuse raising a clear error instead of crashing."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import llamabind as lb
import tests.helpers.fixtures_mtmd as fx
from llamabind.chat import chat, chat_stream
from llamabind.errors import ClosedError, UnsupportedError
from llamabind.multimodal import (
    MediaError,
    MediaGenerator,
    MediaPolicy,
    MediaResolver,
    MtmdContext,
    ProjectorError,
    build_chat_prompt,
    default_marker,
    find_mmproj,
    media_hash,
    projector_info,
)
from llamabind.server.files import FileStore
from tests.helpers.core import GREEDY

N_IMG = fx.vision_n_tokens(32, 8)  # 16 image tokens per image
N_AUD = fx.audio_n_tokens()  # 30 audio tokens per 30 s window


@pytest.fixture(scope="module")
def proj_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mmproj")


@pytest.fixture(scope="module")
def vision(model: lb.Model, proj_dir: Path) -> Iterator[MtmdContext]:
    m = MtmdContext(model, fx.build_vision_projector(proj_dir), n_threads=2, warmup=False)
    yield m
    m.close()


@pytest.fixture(scope="module")
def av(model: lb.Model, proj_dir: Path) -> Iterator[MtmdContext]:
    m = MtmdContext(model, fx.build_av_projector(proj_dir), n_threads=2, warmup=False)
    yield m
    m.close()


@pytest.fixture()
def mctx(model: lb.Model) -> Iterator[lb.Context]:
    c = lb.Context(model, n_ctx=512, n_batch=256)
    yield c
    c.close()


@pytest.fixture(scope="module")
def png() -> bytes:
    return fx.png_bytes(fx.sample_image())


def user_prompt(marker: str, n: int = 1, text: str = "What is in the picture?") -> str:
    media = "".join(marker for _ in range(n))
    return f"<|im_start|>user\n{media}\n{text}<|im_end|>\n<|im_start|>assistant\n"


# ---------------------------------------------------------------- loading


def test_projector_capabilities(vision: MtmdContext, av: MtmdContext, proj_dir: Path) -> None:
    assert vision.supports_vision and not vision.supports_audio
    assert vision.marker == default_marker() == "<__media__>"
    assert not vision.uses_mrope  # SmolLM2 uses normal RoPE: one position per embedding
    assert vision.audio_sample_rate == 0
    assert av.supports_vision and av.supports_audio and av.audio_sample_rate == 16000
    assert av.modalities == ("image", "audio")
    assert projector_info(fx.build_audio_projector(proj_dir)).audio
    assert not projector_info(fx.build_vision_projector(proj_dir)).audio


def test_projector_for_another_model_is_refused(model: lb.Model, proj_dir: Path) -> None:
    bad = fx.build_vision_projector(proj_dir, n_embd_out=320)
    with pytest.raises(ProjectorError, match=r"does not match the model.*n_embd = 576.*n_embd = 320"):
        MtmdContext(model, bad, warmup=False)


def test_not_a_projector(model: lb.Model, tmp_path: Path) -> None:
    junk = tmp_path / "mmproj-junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with pytest.raises(ProjectorError, match="not a GGUF"):
        MtmdContext(model, junk)
    with pytest.raises(ProjectorError, match="not found"):
        MtmdContext(model, tmp_path / "missing.gguf")
    with pytest.raises(ProjectorError, match="not a multimodal projector"):
        projector_info(lb.default_model_path())
    with pytest.raises(ProjectorError, match=r"not a multimodal projector.*text model"):
        MtmdContext(model, lb.default_model_path(), warmup=False)
    truncated = tmp_path / "mmproj-truncated.gguf"
    truncated.write_bytes(fx.build_vision_projector(tmp_path).read_bytes()[:200_000])
    with pytest.raises(ProjectorError, match="cannot load the multimodal projector"):
        MtmdContext(model, truncated, warmup=False)


def test_custom_marker(model: lb.Model, proj_dir: Path, png: bytes) -> None:
    with MtmdContext(model, fx.build_vision_projector(proj_dir), media_marker="<img>", warmup=False) as m:
        assert m.marker == "<img>"
        with m.image_from_bytes(png) as img:
            p = m.tokenize("look <img> now", [img])
        assert [c.type for c in p] == ["text", "image", "text"]
        p.close()


def test_find_mmproj(tmp_path: Path) -> None:
    model = tmp_path / "Foo-7B-Q4_K_M.gguf"
    model.write_bytes(b"GGUF")
    assert find_mmproj(model) is None
    (tmp_path / "mmproj-Bar-f16.gguf").write_bytes(b"GGUF")
    (tmp_path / "mmproj-Foo-7B-f16.gguf").write_bytes(b"GGUF")
    assert find_mmproj(model) == tmp_path / "mmproj-Foo-7B-f16.gguf"


def test_closing_the_model_closes_the_projector(model_path: Path, proj_dir: Path) -> None:
    m = lb.Model(model_path, vocab_only=False)
    mt = MtmdContext(m, fx.build_vision_projector(proj_dir), warmup=False)
    m.close()
    assert mt.closed
    with pytest.raises(ClosedError):
        mt.image_from_rgb(fx.sample_image())


# ---------------------------------------------------------------- images → chunks


def test_image_chunks_have_the_projector_token_count(vision: MtmdContext, png: bytes) -> None:
    with vision.image_from_bytes(png) as img:
        assert (img.width, img.height, img.kind, img.format) == (48, 40, "image", "png")
        assert img.id == media_hash(png)  # libmtmd hashes the file bytes
        prompt = vision.tokenize(user_prompt(vision.marker), [img])
    with prompt:
        kinds = [c.type for c in prompt]
        assert kinds == ["text", "image", "text"]
        image = prompt.chunks[1]
        assert image.n_tokens == image.n_pos == N_IMG
        assert image.id == media_hash(png)
        assert prompt.n_tokens == prompt.n_pos == sum(c.n_tokens for c in prompt)
        assert len(prompt.keys) == prompt.n_pos
        assert all(k < 0 for k in prompt.keys[image.start : image.end])  # media positions
        assert all(k >= 0 for k in prompt.keys[: image.start])  # text tokens
        assert prompt.chunks[0].tokens == tuple(prompt.keys[: image.start])


def test_image_sources_agree(vision: MtmdContext, png: bytes, tmp_path: Path) -> None:
    path = tmp_path / "img.png"
    path.write_bytes(png)
    rgb = fx.sample_image()
    a = vision.image_from_file(path)
    b = vision.image_from_rgb(rgb)
    c = vision.image_from_rgb(rgb.astype(np.float32) / 255.0)  # float [0, 1] is scaled
    d = vision.image_from_rgb(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))  # RGBA
    assert a.data() == b.data() == c.data() == d.data() == rgb.tobytes()
    assert a.id == media_hash(png) and b.id == d.id != a.id
    for x in (a, b, c, d):
        x.close()


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("PNG", "L"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGB")],
)
def test_image_formats(vision: MtmdContext, fmt: str, mode: str) -> None:
    """stb_image decodes PNG/JPEG/GIF/BMP (any channel layout); WebP goes through Pillow."""
    image_mod = pytest.importorskip("PIL.Image")
    import io

    buf = io.BytesIO()
    image_mod.fromarray(fx.sample_image()).convert(mode).save(buf, fmt)
    data = buf.getvalue()
    with vision.image_from_bytes(data) as img:
        assert (img.width, img.height, img.format) == (48, 40, fmt.lower())
        assert img.id == media_hash(data)
        assert len(img.data()) == 48 * 40 * 3


def test_two_images_and_marker_count(vision: MtmdContext, png: bytes) -> None:
    img = vision.image_from_bytes(png)
    other = vision.image_from_rgb(fx.sample_image(seed=5))
    with vision.tokenize(user_prompt(vision.marker, 2), [img, other]) as p:
        media = p.media_chunks
        assert [c.n_tokens for c in media] == [N_IMG, N_IMG]
        assert media[0].id != media[1].id
        assert p.keys[media[0].start : media[0].end] != p.keys[media[1].start : media[1].end]
    with pytest.raises(MediaError, match=r"2 media marker\(s\).*1 image/audio"):
        vision.tokenize(user_prompt(vision.marker, 2), [img])
    with pytest.raises(MediaError, match=r"0 media marker\(s\)"):
        vision.tokenize("no marker here", [img])
    img.close()
    other.close()


# ---------------------------------------------------------------- eval and generation


def test_image_changes_the_next_token_logits(vision: MtmdContext, mctx: lb.Context, png: bytes) -> None:
    logits = []
    for img in (vision.image_from_bytes(png), vision.image_from_rgb(255 - fx.sample_image())):
        with img, vision.tokenize(user_prompt(vision.marker), [img]) as p:
            mctx.memory.clear()
            n_past = vision.eval(mctx, p)
            assert n_past == p.n_pos == mctx.memory.pos_max(0) + 1
            logits.append(mctx.logits(-1))
    assert not np.allclose(logits[0], logits[1])  # the embeddings reached the model


def test_generation_with_an_image_and_kv_reuse(vision: MtmdContext, mctx: lb.Context, png: bytes) -> None:
    gen = MediaGenerator(mctx, vision)
    with vision.image_from_bytes(png) as img:
        prompt = vision.tokenize(user_prompt(vision.marker), [img])
    with prompt:
        r1 = gen.complete(prompt, max_tokens=6, sampling=GREEDY)
        assert r1.completion_tokens > 0 and r1.text
        assert r1.prompt_tokens == prompt.n_pos
        assert r1.timings.cached_tokens == 0
        # the same request again: everything but the last prompt token comes from the KV cache
        r2 = gen.complete(prompt, max_tokens=6, sampling=GREEDY)
        assert r2.text == r1.text
        assert r2.timings.cached_tokens == prompt.n_pos - 1
        assert gen.last_media_reused == 1
    # a different image: only the text before it is reused
    with vision.image_from_rgb(255 - fx.sample_image()) as img2:
        p2 = vision.tokenize(user_prompt(vision.marker), [img2])
    with p2:
        r3 = gen.complete(p2, max_tokens=3, sampling=GREEDY)
        assert r3.timings.cached_tokens == p2.chunks[1].start
        assert gen.last_media_reused == 0
    # a fresh generator on a fresh context gives the same greedy text (deterministic eval)
    with lb.Context(mctx.model, n_ctx=512, n_batch=256) as c2, vision.image_from_bytes(png) as img:
        with vision.tokenize(user_prompt(vision.marker), [img]) as p:
            assert MediaGenerator(c2, vision).complete(p, max_tokens=6, sampling=GREEDY).text == r1.text
    # text-only prompts still work on a MediaGenerator
    assert gen.complete("The capital of France is", max_tokens=2, sampling=GREEDY).completion_tokens > 0


def test_generation_refuses_a_prompt_ending_with_media(
    vision: MtmdContext, mctx: lb.Context, png: bytes
) -> None:
    with vision.image_from_bytes(png) as img, vision.tokenize(f"look: {vision.marker}", [img]) as p:
        with pytest.raises(ValueError, match="ends with an image"):
            list(MediaGenerator(mctx, vision).stream(p, max_tokens=2))
        with pytest.raises(ValueError, match="ends with media"):
            vision.eval(mctx, p)
        assert vision.eval(mctx, p, logits_last=False) == p.n_pos


def test_prompt_too_long_for_the_context(vision: MtmdContext, model: lb.Model, png: bytes) -> None:
    with lb.Context(model, n_ctx=32, n_batch=32) as small, vision.image_from_bytes(png) as img:
        n = small.n_ctx // N_IMG + 1  # llama.cpp rounds n_ctx up (to 256)
        with vision.tokenize(user_prompt(vision.marker, n), [img] * n) as p:
            assert p.n_pos > small.n_ctx
            with pytest.raises(lb.ContextOverflowError):
                MediaGenerator(small, vision).complete(p, max_tokens=2)
            with pytest.raises(lb.ContextOverflowError):
                vision.eval(small, p)


# ---------------------------------------------------------------- audio


def test_audio_chunks_eval_and_generation(av: MtmdContext, mctx: lb.Context) -> None:
    wav = fx.wav_bytes(fx.sample_tone(1.0))
    with av.audio_from_bytes(wav) as clip:
        assert clip.kind == "audio" and clip.n_samples == 16000 and clip.id == media_hash(wav)
        p = av.tokenize(user_prompt(av.marker, text="What do you hear?"), [clip])
    with p:
        audio = [c for c in p if c.type == "audio"]
        assert [c.n_tokens for c in audio] == [N_AUD]
        r = MediaGenerator(mctx, av).complete(p, max_tokens=3, sampling=GREEDY)
        assert r.completion_tokens > 0


def test_long_audio_is_split_into_windows(av: MtmdContext) -> None:
    with av.audio_from_pcm(fx.sample_tone(31.0)) as clip, av.tokenize(f"{av.marker} ok", [clip]) as p:
        audio = [c for c in p if c.type == "audio"]
        assert [c.n_tokens for c in audio] == [N_AUD, N_AUD]  # two 30 s windows
        assert audio[0].id == audio[1].id
        assert p.keys[audio[0].start : audio[0].end] != p.keys[audio[1].start : audio[1].end]


def test_pcm_is_resampled_to_the_projector_rate(av: MtmdContext) -> None:
    with av.audio_from_pcm(fx.sample_tone(2.0, sample_rate=8000), sample_rate=8000) as clip:
        assert clip.n_samples == 32000
    with av.audio_from_pcm(np.stack([fx.sample_tone(1.0)] * 2, axis=1)) as stereo:
        assert stereo.n_samples == 16000


# ---------------------------------------------------------------- misuse


def test_bad_media_raise_media_error(vision: MtmdContext, av: MtmdContext, png: bytes) -> None:
    with pytest.raises(MediaError, match="could not decode the png"):
        vision.image_from_bytes(png[:40])  # truncated
    with pytest.raises(MediaError, match="unrecognised media") as ei:
        vision.media_from_bytes(b"hello, not an image" * 4)
    assert ei.value.status == 415
    with pytest.raises(MediaError, match="empty"):
        vision.image_from_bytes(b"")
    with pytest.raises(MediaError, match="no audio encoder"):
        vision.audio_from_bytes(fx.wav_bytes(fx.sample_tone(0.5)))
    with pytest.raises(MediaError, match="expected image data"):
        av.image_from_bytes(fx.wav_bytes(fx.sample_tone(0.5)))
    with pytest.raises(MediaError, match="shape"):
        vision.image_from_rgb(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(MediaError, match="no samples"):
        av.audio_from_pcm(np.zeros(0, np.float32))
    with pytest.raises(MediaError, match="NaN"):
        av.audio_from_pcm(np.array([0.0, np.nan], np.float32))
    with pytest.raises(MediaError, match="not found"):
        vision.image_from_file("/nonexistent/cat.png")


def test_decompression_bomb_is_refused_before_decoding(vision: MtmdContext, png: bytes) -> None:
    # a PNG header declaring 100000 x 100000 pixels: refused from the header alone
    bomb = png[:16] + (100000).to_bytes(4, "big") * 2 + png[24:]
    with pytest.raises(MediaError, match="exceeds the limit") as ei:
        vision.image_from_bytes(bomb)
    assert ei.value.status == 413


def test_media_of_another_kind_than_the_projector(model: lb.Model, proj_dir: Path, png: bytes) -> None:
    with MtmdContext(model, fx.build_audio_projector(proj_dir), warmup=False) as audio_only:
        with pytest.raises(MediaError, match="no vision encoder"):
            audio_only.image_from_bytes(png)


# ---------------------------------------------------------------- chat content parts


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_chat_with_image_and_audio_parts(av: MtmdContext, mctx: lb.Context, png: bytes) -> None:
    store = FileStore()
    fid = store.add(png, "cat.png", "vision").id
    wav = fx.wav_bytes(fx.sample_tone(1.0))
    messages = [
        {"role": "system", "content": "You describe media."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare"},
                {"type": "image_url", "image_url": {"url": _data_url(png, "image/png")}},
                {"type": "image_file", "image_file": {"file_id": fid}},
                {
                    "type": "input_audio",
                    "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"},
                },
                {"type": "text", "text": "briefly."},
            ],
        },
    ]
    resolver = MediaResolver(files=store.content)
    prompt = build_chat_prompt(mctx.model, av, messages, resolver=resolver)
    assert not isinstance(prompt, list)
    with prompt:
        assert [c.type for c in prompt.media_chunks] == ["image", "image", "audio"]
        assert prompt.media_chunks[0].id == prompt.media_chunks[1].id == media_hash(png)
        assert "<|im_start|>user" in prompt.text and prompt.text.count(av.marker) == 3
    gen = MediaGenerator(mctx, av)
    result = chat(gen, messages, resolver=resolver, max_tokens=4, sampling=GREEDY)
    assert result.completion_tokens > 0
    # a follow-up turn re-sends the same media: their KV is reused
    follow = [
        *messages,
        {"role": "assistant", "content": result.content},
        {"role": "user", "content": "More?"},
    ]
    pieces = list(chat_stream(gen, follow, resolver=resolver, max_tokens=2, sampling=GREEDY))
    assert pieces[-1].finish_reason is not None
    assert gen.last_media_reused == 3


def test_chat_media_errors(av: MtmdContext, vision: MtmdContext, model: lb.Model, png: bytes) -> None:
    img_msg = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": _data_url(png, "image/png")}}],
        }
    ]
    # a text-only model (no projector) given an image
    with pytest.raises(UnsupportedError, match=r"text-only.*--mmproj"):
        build_chat_prompt(model, None, img_msg)
    # text-only messages work without a projector (plain tokens)
    toks = build_chat_prompt(model, None, [{"role": "user", "content": "hi"}])
    assert isinstance(toks, list) and toks
    # audio to a vision-only projector
    audio_msg = [
        {
            "role": "user",
            "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}],
        }
    ]
    with pytest.raises(MediaError, match="no audio encoder"):
        build_chat_prompt(model, vision, audio_msg)
    # remote URLs are refused by default; unknown file ids and broken data URLs are errors
    for url, pattern in [
        ("http://example.com/cat.png", "remote media URLs are disabled"),
        ("file-doesnotexist", "no file store"),
        ("data:image/png;base64,!!!", "invalid base64"),
        ("ftp://example.com/x.png", "unsupported media reference"),
    ]:
        msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
        with pytest.raises(MediaError, match=pattern):
            build_chat_prompt(model, av, msg, resolver=MediaResolver(MediaPolicy()))
    with pytest.raises(MediaError, match="no uploaded file"):
        bad = [{"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": "file-nope"}}]}]
        build_chat_prompt(model, av, bad, resolver=MediaResolver(files=FileStore().content))
    with pytest.raises(MediaError, match="not audio"):
        wrong = [
            {
                "role": "user",
                "content": [
                    {
                        "type": "input_audio",
                        "input_audio": {"data": base64.b64encode(png).decode(), "format": "wav"},
                    }
                ],
            }
        ]
        build_chat_prompt(model, av, wrong)


# ---------------------------------------------------------------- CLI


def test_cli_mtmd(proj_dir: Path, png: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llamabind.cli.main import main

    img = tmp_path / "cat.png"
    img.write_bytes(png)
    wav = tmp_path / "tone.wav"
    wav.write_bytes(fx.wav_bytes(fx.sample_tone(1.0)))
    proj = str(fx.build_av_projector(proj_dir))
    common = ["-c", "512", "--no-warmup", "--temp", "0", "-n", "3"]
    rc = main(
        [
            "mtmd",
            "--mmproj",
            proj,
            "--image",
            str(img),
            "--audio",
            str(wav),
            "-p",
            "Describe.",
            "--json",
            *common,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    data = json.loads(out)
    media = [(c["type"], c["n_tokens"]) for c in data["chunks"] if c["type"] != "text"]
    assert media == [("image", N_IMG), ("audio", N_AUD)]
    assert data["completion_tokens"] > 0 and data["modalities"] == ["image", "audio"]
    # explicit markers, raw prompt, plain text output
    rc = main(["mtmd", "--mmproj", proj, "--image", str(img), "-p", "Look: <__media__> ->", "--raw", *common])
    assert rc == 0
    # errors: marker count, wrong media kind for the projector, missing projector
    assert main(["mtmd", "--mmproj", proj, "--image", str(img), "-p", "<__media__><__media__>", *common]) == 2
    vision_only = str(fx.build_vision_projector(proj_dir))
    assert main(["mtmd", "--mmproj", vision_only, "--audio", str(wav), "-p", "x", *common]) == 1
    assert "no audio encoder" in capsys.readouterr().err
    assert main(["mtmd", "--image", str(img), "-p", "x", *common]) == 2
    assert "--mmproj" in capsys.readouterr().err


# ---------------------------------------------------------------- batching-engine style prefill


def test_engine_style_prefill_in_a_shared_context(vision: MtmdContext, model: lb.Model, png: bytes) -> None:
    """What the continuous-batching scheduler does: text of several sequences shares batches, each
    media chunk is decoded alone into its slot's sequence, positions follow the cache keys."""
    with vision.image_from_bytes(png) as img, vision.tokenize(user_prompt(vision.marker), [img]) as p:
        # reference: the prompt alone in sequence 0 of its own context
        with lb.Context(model, n_ctx=512, n_batch=64) as ref:
            vision.eval(ref, p)
            want = ref.logits(-1)
        with lb.Context(model, n_ctx=1024, n_batch=64, n_seq_max=2) as ctx:
            other = model.tokenize("Some unrelated text in the other slot, decoded alongside.")
            batch = lb.Batch(64, 1)
            pending, other_pending, budget = 0, 0, 8
            idx = -1
            while pending < len(p.keys):
                batch.clear()
                media, n = p.next_prefill(pending, budget)
                if media is not None:
                    assert n == media.n_pos and pending == media.start
                    pending = vision.eval_chunk(ctx, p, media, pending, seq_id=1)
                    continue
                last = pending + n == len(p.keys)
                idx = batch.add_sequence(p.keys[pending : pending + n], pending, 1, logits_last=last)
                if other_pending < len(other):
                    take = other[other_pending : other_pending + budget]
                    batch.add_sequence(take, other_pending, 0, logits_last=False)
                    other_pending += len(take)
                ctx.decode(batch)
                pending += n
            assert ctx.memory.pos_max(1) == len(p.keys) - 1
            got = ctx.logits(idx)
        assert int(np.argmax(got)) == int(np.argmax(want))
        np.testing.assert_allclose(got, want, rtol=0, atol=0.5)
        with pytest.raises(ValueError, match="inside an image chunk"):
            p.next_prefill(p.media_chunks[0].start + 1, 8)
        assert p.safe_prefix(p.media_chunks[0].start + 3) == p.media_chunks[0].start


# ---------------------------------------------------------------- agreement with libmtmd's own eval


def _reference_logits(mt: MtmdContext, ctx: lb.Context, prompt: Any) -> np.ndarray:
    """Logits after libmtmd's mtmd_helper_eval_chunks over the whole prompt (its own positions)."""
    from llamabind._native import mtmd as nm

    result: dict[str, int] = {}

    def run(lctx: Any) -> int:
        rc, result["n_past"] = nm.helper_eval_chunks(mt._ptr(), lctx, prompt._ptr(), 0, 0, ctx.n_batch, True)
        result["rc"] = rc
        return rc

    ctx.decode_native(run, what="mtmd eval", n_tokens=prompt.n_tokens, n_outputs=1)
    assert result["rc"] == 0 and result["n_past"] == prompt.n_pos
    return ctx.logits(-1)


def test_eval_matches_libmtmd_reference(vision: MtmdContext, model: lb.Model, png: bytes) -> None:
    with vision.image_from_bytes(png) as img, vision.tokenize(user_prompt(vision.marker), [img]) as p:
        with lb.Context(model, n_ctx=512, n_batch=64) as a, lb.Context(model, n_ctx=512, n_batch=64) as b:
            vision.eval(a, p)
            ours = a.logits(-1)
            ref = _reference_logits(vision, b, p)
    assert int(np.argmax(ours)) == int(np.argmax(ref))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-2)


@pytest.fixture(scope="module")
def qwen2vl(proj_dir: Path) -> Iterator[tuple[lb.Model, MtmdContext]]:
    m = lb.Model(fx.build_tiny_qwen2vl(proj_dir))
    mt = MtmdContext(m, fx.build_qwen2vl_projector(proj_dir), n_threads=2, warmup=False)
    yield m, mt
    mt.close()
    m.close()


def test_mrope_positions(qwen2vl: tuple[lb.Model, MtmdContext]) -> None:
    """Qwen2-VL style M-RoPE: an image's tokens form a grid that advances the text position by the
    grid's larger side, not by its token count; evaluation, generation and KV reuse follow that."""
    model, mt = qwen2vl
    assert mt.uses_mrope and model.n_embd == fx.QWEN2VL_N_EMBD
    with mt.image_from_rgb(fx.sample_image(100, 20)) as img:
        p = mt.tokenize(user_prompt(mt.marker), [img])
    with p:
        image = p.media_chunks[0]
        assert image.n_tokens > image.n_pos > 0  # e.g. 14 tokens on a 7 x 2 grid span 7 positions
        assert p.n_pos == p.n_tokens - image.n_tokens + image.n_pos == len(p.keys)
        with lb.Context(model, n_ctx=512, n_batch=64) as a, lb.Context(model, n_ctx=512, n_batch=64) as b:
            assert mt.eval(a, p) == p.n_pos
            assert a.memory.pos_max(0) == p.n_pos - 1  # the text after the image continues at n_pos
            ours = a.logits(-1)
            ref = _reference_logits(mt, b, p)
            assert int(np.argmax(ours)) == int(np.argmax(ref))
            np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-2)
            gen = MediaGenerator(a, mt)
            r1 = gen.complete(p, max_tokens=4, sampling=GREEDY)
            assert r1.prompt_tokens == p.n_pos and r1.completion_tokens > 0
            r2 = gen.complete(p, max_tokens=4, sampling=GREEDY)
            assert r2.text == r1.text and r2.timings.cached_tokens == p.n_pos - 1
            assert gen.last_media_reused == 1


def test_serve_flags(tmp_path: Path) -> None:
    from llamabind.cli.commands.serve import build_config, projector_path
    from llamabind.cli.common import UsageError
    from llamabind.cli.main import build_parser

    model = tmp_path / "Foo-Q4_0.gguf"
    model.write_bytes(b"GGUF")
    (tmp_path / "mmproj-Foo-f16.gguf").write_bytes(b"GGUF")
    parse = build_parser().parse_args
    args = parse(["serve", "-m", str(model), "--allow-remote-media", "--files-max-bytes", "1000"])
    cfg = build_config(args)
    assert cfg.allow_remote_media and cfg.files_max_bytes == 1000 and cfg.mmproj_use_gpu
    assert projector_path(args, model) == str(tmp_path / "mmproj-Foo-f16.gguf")  # found beside the model
    assert projector_path(parse(["serve", "--no-mmproj"]), model) is None
    assert not build_config(parse(["serve"])).allow_remote_media  # remote media off by default
    with pytest.raises(UsageError, match="not found"):
        projector_path(parse(["serve", "--mmproj", str(tmp_path / "nope.gguf")]), model)
    with pytest.raises(UsageError, match="not both"):
        projector_path(parse(["serve", "--mmproj", str(model), "--no-mmproj"]), model)
