"""The core's one way to run native work on a Context (exclusive / decode_native), its one
return-code mapping (core.status), and the libmtmd handle owners of core.mtmd."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import llamabind as lb
import tests.helpers.fixtures_mtmd as fx
from llamabind.core.mtmd import Bitmap, MtmdChunks, MtmdProjector
from llamabind.core.status import check_decode_status
from llamabind.errors import (
    AbortedError,
    ClosedError,
    ConcurrentUseError,
    DecodeError,
    MediaError,
    NoKvSlotError,
)
from llamabind.multimodal import MtmdContext
from tests.helpers.core import PROMPT, THREADS

# ---------------------------------------------------------------- return codes


def test_status_ok_returns() -> None:
    assert check_decode_status(0, "decode", n_tokens=3, n_ctx=8) is None


def test_status_no_kv_slot() -> None:
    with pytest.raises(
        NoKvSlotError,
        match=r"^encode: no KV cache slot for a batch of 7 tokens \(n_ctx=64\); "
        "free sequences or use a larger context$",
    ) as info:
        check_decode_status(1, "encode", n_tokens=7, n_ctx=64)
    assert info.value.code == 1


def test_status_aborted() -> None:
    with pytest.raises(AbortedError, match=r"^image decode aborted$") as info:
        check_decode_status(2, "image decode", n_tokens=16, n_ctx=512)
    assert info.value.code == 2 and isinstance(info.value, DecodeError)


def test_status_invalid_batch() -> None:
    with pytest.raises(DecodeError, match=r"^process: invalid batch \(llama.cpp rejected it") as info:
        check_decode_status(-1, "process", n_tokens=1, n_ctx=8)
    assert info.value.code == -1
    assert type(info.value) is DecodeError


@pytest.mark.parametrize("rc", [-3, -2, 3, 99])
def test_status_other_codes(rc: int) -> None:
    with pytest.raises(DecodeError, match=rf"^decode failed with code {rc}$") as info:
        check_decode_status(rc, "decode", n_tokens=1, n_ctx=8)
    assert info.value.code == rc and type(info.value) is DecodeError


# ---------------------------------------------------------------- Context.exclusive / decode_native


def _hold(ctx: lb.Context) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    """Another thread enters ctx.exclusive() and stays until the returned event is set."""
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with ctx.exclusive() as handle:
                assert handle
                entered.set()
                release.wait(10)
        except BaseException as exc:  # pragma: no cover - reported through errors
            errors.append(exc)
            entered.set()

    t = threading.Thread(target=run)
    t.start()
    assert entered.wait(10)
    return t, release, errors


def test_exclusive_refuses_a_second_thread(ctx: lb.Context, model: lb.Model) -> None:
    t, release, errors = _hold(ctx)
    try:
        with pytest.raises(ConcurrentUseError, match=r"^this Context is in use by another thread; "):
            with ctx.exclusive():
                pass
        with pytest.raises(ConcurrentUseError):
            ctx.decode_native(lambda _h: 0, what="decode", n_tokens=1)
        with pytest.raises(ConcurrentUseError):
            ctx.decode(lb.Batch.from_tokens(model.tokenize(PROMPT)))
    finally:
        release.set()
        t.join()
    assert errors == []
    with ctx.exclusive() as handle:  # free again once the other thread left
        assert handle


def test_exclusive_releases_on_error(ctx: lb.Context) -> None:
    with pytest.raises(RuntimeError, match="boom"), ctx.exclusive():
        raise RuntimeError("boom")
    with ctx.exclusive() as handle:
        assert handle


def test_exclusive_on_a_closed_context(model: lb.Model) -> None:
    c = lb.Context(model, n_ctx=64, n_batch=8, n_threads=THREADS)
    c.close()
    with pytest.raises(ClosedError), c.exclusive():
        pass
    with pytest.raises(ClosedError):
        c.decode_native(lambda _h: 0, what="decode", n_tokens=1)


def test_decode_native_maps_codes_and_counts_outputs(ctx: lb.Context, model: lb.Model) -> None:
    seen: list[Any] = []

    def fake(handle: Any) -> int:
        seen.append(handle)
        return 1

    with pytest.raises(
        NoKvSlotError, match=r"^media decode: no KV cache slot for a batch of 5 tokens"
    ) as info:
        ctx.decode_native(fake, what="media decode", n_tokens=5)
    assert info.value.code == 1 and seen and seen[0]
    # a real decode leaves one output; a native call that reports none makes logits(-1) an error
    ctx.decode(lb.Batch.from_tokens(model.tokenize(PROMPT)))
    assert ctx.logits(-1).shape == (ctx.n_vocab,)
    ctx.decode_native(lambda _h: 0, what="media decode", n_tokens=5, n_outputs=0)
    with pytest.raises(IndexError, match=r"0 outputs in the last batch"):
        ctx.logits(-1)


def test_decode_native_abort_clears_the_flag(ctx: lb.Context, model: lb.Model) -> None:
    ctx.abort()
    with pytest.raises(AbortedError, match=r"^process aborted$"):
        ctx.decode_native(lambda _h: 2, what="process", n_tokens=1)
    # the flag was cleared with the error: a real decode runs through
    ctx.decode(lb.Batch.from_tokens(model.tokenize(PROMPT)))
    assert np.isfinite(ctx.logits(-1)).all()


# ---------------------------------------------------------------- core.mtmd owners


@pytest.fixture(scope="module")
def proj_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.build_vision_projector(tmp_path_factory.mktemp("mmproj-core"))


@pytest.fixture()
def projector(model: lb.Model, proj_path: Path) -> Iterator[MtmdProjector]:
    p = MtmdProjector(model, proj_path, n_threads=2, warmup=False)
    yield p
    p.close()


def test_closed_bitmap_raises(projector: MtmdProjector) -> None:
    rgb = np.ascontiguousarray(fx.sample_image()[:, :, :3])
    bmp = Bitmap.from_rgb(rgb.shape[1], rgb.shape[0], rgb.tobytes())
    assert bmp.data() == rgb.tobytes()
    with bmp:
        pass
    assert bmp.closed and repr(bmp) == "<Bitmap (closed)>"
    with pytest.raises(ClosedError, match="Bitmap is closed"):
        bmp.data()
    with pytest.raises(ClosedError):
        bmp.id = "x"
    with pytest.raises(ClosedError):
        MtmdChunks(projector, f"look: {projector.marker}", [bmp])
    bmp.close()  # idempotent


def test_closed_projector_raises(model: lb.Model, proj_path: Path) -> None:
    p = MtmdProjector(model, proj_path, n_threads=2, warmup=False)
    png = fx.png_bytes(fx.sample_image())
    with p.bitmap_from_buffer(png, "image", "png") as bmp:
        assert bmp is not None
        chunks = MtmdChunks(p, f"look: {p.marker} now", [bmp])
    assert chunks.kind(1) == "image" and chunks.info(1).n_tokens > 0
    p.close()
    assert p.closed
    with pytest.raises(ClosedError, match="MtmdProjector is closed"):
        p.bitmap_from_buffer(png, "image", "png")
    with pytest.raises(ClosedError):
        p.encode_chunk(chunks, 1)
    with pytest.raises(ClosedError):
        MtmdChunks(p, "plain text")
    chunks.close()
    with pytest.raises(ClosedError, match="MtmdChunks is closed"):
        chunks.text_tokens(0)


def test_closed_mtmd_context_and_prompt_raise(model: lb.Model, proj_path: Path) -> None:
    mt = MtmdContext(model, proj_path, n_threads=2, warmup=False)
    with mt.image_from_rgb(fx.sample_image()) as img:
        prompt = mt.tokenize(f"look: {mt.marker} now", [img])
    chunk = prompt.media_chunks[0]
    with mt:
        pass
    assert mt.closed
    with pytest.raises(ClosedError, match="MtmdContext is closed"):
        mt.image_from_rgb(fx.sample_image())
    with pytest.raises(ClosedError):
        mt.encode(prompt, chunk)
    prompt.close()
    with pytest.raises(ClosedError, match="MediaPrompt is closed"):
        prompt.check_chunk(chunk)


def test_model_close_closes_the_projector_first(proj_path: Path) -> None:
    m = lb.Model(lb.default_model_path())
    p = MtmdProjector(m, proj_path, n_threads=2, warmup=False)
    assert p.model is m  # the projector keeps its model alive
    m.close()
    assert p.closed
    with pytest.raises(ClosedError):
        p.bitmap_from_buffer(fx.png_bytes(fx.sample_image()), "image", "png")


def test_chunks_of_another_projector_are_refused(
    projector: MtmdProjector, model: lb.Model, proj_path: Path
) -> None:
    with MtmdProjector(model, proj_path, n_threads=2, warmup=False) as other:
        with Bitmap.from_rgb(2, 2, bytes(12)) as bmp, MtmdChunks(other, f"{other.marker}", [bmp]) as ch:
            with pytest.raises(ValueError, match="tokenized by another MtmdContext"):
                projector.encode_chunk(ch, 0)


def test_marker_count_mismatch_is_media_error(projector: MtmdProjector) -> None:
    with Bitmap.from_rgb(2, 2, bytes(12)) as bmp, pytest.raises(MediaError, match="markers"):
        MtmdChunks(projector, "no marker here", [bmp])
