"""The API's edge pieces on their own: image limits, the micro-batcher, API keys, body-size limit."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from PIL import Image

from service.api.auth import authenticate, create_tenant, hash_key
from service.api.limits import decode_image
from service.api.main import create_app
from service.api.predictor import MicroBatcher
from worker.db import Tenant, get_sessionmaker, init_db, make_engine
from worker.settings import Settings


def png_bytes(size: int = 20, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size, size, 3) if mode == "RGB" else (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height but carries almost no data (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


# --- image limits ---

def test_decode_image_resizes_to_bundle_input() -> None:
    out = decode_image(png_bytes(20), field="files[0]", max_pixels=10_000, channels=3, size=8)
    assert out.shape == (3, 8, 8) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    gray = decode_image(png_bytes(20), field="files[0]", max_pixels=10_000, channels=1, size=8)
    assert gray.shape == (1, 8, 8)


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, format="GIF")
    return buf.getvalue()


@pytest.mark.parametrize(("data", "code", "words"), [
    (b"this is not an image", 415, "not an image"),
    (png_bytes(20)[:60], 422, "truncated or corrupt"),
    (gif_bytes(), 415, "unsupported image format GIF"),
])
def test_decode_image_refuses_bad_bytes_naming_the_field(data: bytes, code: int, words: str) -> None:
    with pytest.raises(HTTPException) as err:
        decode_image(data, field="files[3]", max_pixels=10_000, channels=3, size=8)
    assert err.value.status_code == code
    assert err.value.detail.startswith("files[3]: ") and words in err.value.detail


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    bomb = png_header_only(20_000, 20_000)  # 400 Mpx claimed, ~100 bytes sent
    start = time.perf_counter()
    with pytest.raises(HTTPException) as err:
        decode_image(bomb, field="files[0]", max_pixels=40_000_000, channels=3, size=8)
    assert err.value.status_code == 413 and "MAX_IMAGE_PIXELS" in err.value.detail
    assert time.perf_counter() - start < 0.5  # refused without decoding 1.2 GB of pixels
    with pytest.raises(HTTPException) as ours:  # under Pillow's own bomb limit, over ours
        decode_image(png_header_only(12_000, 12_000), field="files[0]", max_pixels=40_000_000, channels=3, size=8)
    assert ours.value.status_code == 413 and "12000x12000" in ours.value.detail
    with pytest.raises(HTTPException) as small:
        decode_image(png_bytes(64), field="files[0]", max_pixels=1000, channels=3, size=8)
    assert small.value.status_code == 413 and "MAX_IMAGE_PIXELS" in small.value.detail


# --- micro-batching ---

def test_micro_batcher_batches_concurrent_calls_and_returns_each_its_rows() -> None:
    calls: list[int] = []
    threads: set[int] = set()

    def fn(batch: np.ndarray) -> np.ndarray:  # [B, 1, 2, 2] → [B, 2]: each row identifies its input
        calls.append(len(batch))
        threads.add(threading.get_ident())
        time.sleep(0.01)
        return np.stack([batch[:, 0, 0, 0], batch[:, 0, 0, 0] * 2], axis=1)

    batcher = MicroBatcher(fn, max_batch=64, window_s=0.005)

    async def main() -> list[np.ndarray]:
        inputs = [np.full((1 + i % 2, 1, 2, 2), float(i), dtype=np.float32) for i in range(24)]
        return await asyncio.gather(*(batcher.submit(x) for x in inputs))

    results = asyncio.run(main())
    batcher.close()
    for i, out in enumerate(results):
        assert out.shape == (1 + i % 2, 2)
        np.testing.assert_array_equal(out[:, 0], float(i))
        np.testing.assert_array_equal(out[:, 1], 2.0 * i)
    assert sum(calls) == sum(1 + i % 2 for i in range(24))
    assert len(calls) <= 3, f"24 concurrent calls should share a few batches, ran {calls}"
    assert len(threads) == 1  # one inference thread: ONNX Runtime is never entered concurrently


def test_micro_batcher_passes_errors_to_every_caller_and_keeps_serving() -> None:
    fail = {"on": True}

    def fn(batch: np.ndarray) -> np.ndarray:
        if fail["on"]:
            raise RuntimeError("engine exploded")
        return batch.reshape(len(batch), -1)

    batcher = MicroBatcher(fn, window_s=0.002)

    async def main() -> None:
        x = np.zeros((1, 1, 1, 1), dtype=np.float32)
        outcomes = await asyncio.gather(batcher.submit(x), batcher.submit(x), return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        fail["on"] = False
        assert (await batcher.submit(x)).shape == (1, 1)

    asyncio.run(main())
    batcher.close()


# --- API keys ---

def test_api_keys_are_stored_hashed_and_checked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/auth.db"
    init_db(make_engine(url))
    with get_sessionmaker(url)() as session:
        tenant, key = create_tenant(session, "alice")
        session.commit()
        row = session.get(Tenant, tenant.id)
        assert row is not None and key not in row.key_hash and row.key_hash == hash_key(key)
        assert authenticate(session, f"Bearer {key}").id == tenant.id
        for header, words in [(None, "missing"), (f"Basic {key}", "Bearer"), ("Bearer lf_wrong", "invalid"),
                              (f"Bearer {key}x", "invalid")]:
            with pytest.raises(HTTPException) as err:
                authenticate(session, header)
            assert err.value.status_code == 401 and words in err.value.detail


# --- request body limit (the real app in-process) ---

def test_body_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path}/db.sqlite",
                        api_keys=["k-test-0000000000"], max_upload_mb=1, bundles_dir=tmp_path / "none")
    with TestClient(create_app(settings)) as client:
        auth = {"Authorization": "Bearer k-test-0000000000"}
        big = b"\0" * (1024 * 1024 + 1)
        declared = client.post("/predict", headers=auth, files={"files": ("a.png", big)})
        assert declared.status_code == 413 and "MAX_UPLOAD_MB" in declared.json()["detail"]
        streamed = client.post("/predict", headers={**auth, "content-type": "application/json"},
                               content=iter([b"\0" * 65536] * 20))  # chunked: no Content-Length
        assert streamed.status_code == 413
        spec = client.post("/datasets", headers={**auth, "content-type": "application/json"},
                           content=b" " * (settings.max_spec_bytes + 1))
        assert spec.status_code == 413 and "MAX_SPEC_BYTES" in spec.json()["detail"]
