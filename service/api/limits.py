"""Input limits enforced at the API edge, each answered with a 4xx that names the limit.

Why here and not in the routes: a request body must be refused *before* it is buffered (a 2 GB
upload must not reach the multipart parser), so the size check is an ASGI middleware that looks at
`Content-Length` first and then counts the bytes actually streamed (chunked uploads carry no length).
Image checks read the header first (Pillow's lazy `open`) so a decompression bomb is refused before
its pixels are decoded; labeling archives are checked by `worker.labeling.inspect_archive`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from fastapi import HTTPException, status
from PIL import Image, UnidentifiedImageError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.settings import Settings

IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "BMP": "image/bmp"}
MAX_IMAGES_PER_PREDICT = 64  # a "small batch": bigger collections belong in a labeling job


@dataclass(frozen=True)
class Limits:
    """Every request-side limit in one place (built from `Settings`, so all are env-configurable)."""

    max_upload_bytes: int  # bytes; any request body (multipart uploads, base64 JSON)
    max_spec_bytes: int  # bytes; a DatasetSpec JSON body
    max_image_pixels: int  # width·height of one decoded image (decompression-bomb guard)
    max_images_per_job: int  # images in one labeling job (archive members or storage keys)
    max_images_per_predict: int  # images in one /predict call
    max_archive_expand_ratio: int  # uncompressed archive size / upload size (zip-bomb guard)

    def max_expanded_bytes(self, upload_bytes: int) -> int:
        """Largest uncompressed size allowed for an archive of `upload_bytes` (zip-bomb guard)."""
        return self.max_archive_expand_ratio * max(upload_bytes, 1)

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_upload_bytes=settings.max_upload_bytes,
            max_spec_bytes=settings.max_spec_bytes,
            max_image_pixels=settings.max_image_pixels,
            max_images_per_job=settings.max_labeling_images,
            max_images_per_predict=MAX_IMAGES_PER_PREDICT,
            max_archive_expand_ratio=settings.max_archive_expand_ratio,
        )


class BodyTooLarge(Exception):
    """Raised from the wrapped `receive` once the streamed body passes its limit."""


class BodySizeLimitMiddleware:
    """Answer 413 for bodies over the limit, before the application reads them.

    `limit_for(scope)` returns (limit in bytes, setting name) so the message can say which setting
    to raise. A declared `Content-Length` over the limit is refused without reading a single byte;
    otherwise bytes are counted as they stream and the request is cut off at the limit.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], tuple[int, str]]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, limit, setting)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_413(send, limit, setting)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, limit: int, setting: str) -> None:
    body = json.dumps(
        {"detail": f"request body is larger than the {limit} byte limit (LABELFORGE_{setting.upper()})"}
    ).encode()
    await send({
        "type": "http.response.start",
        "status": status.HTTP_413_CONTENT_TOO_LARGE,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})


def decode_image(data: bytes, *, field: str, max_pixels: int, channels: int, size: int) -> np.ndarray:
    """Untrusted image bytes → [C, size, size] float32 in [0, 1], ready for `Bundle.predict`.

    415 for bytes that are not a supported image, 413 for images over `max_pixels` (read from the
    header, before any pixel is decoded), 422 for truncated or corrupt data. `field` names the part of
    the request the image came from (e.g. `files[2]`) so the client knows which one to fix.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in IMAGE_FORMATS:
                raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                                    f"{field}: unsupported image format {img.format}; use PNG, JPEG, WebP or BMP")
            width, height = img.size
            if width * height > max_pixels:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                                    f"{field}: image has {width}x{height} pixels, more than the "
                                    f"{max_pixels} pixel limit (LABELFORGE_MAX_IMAGE_PIXELS)")
            img.load()
            mode = "L" if channels == 1 else "RGB"
            resized = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
    except UnidentifiedImageError:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            f"{field}: not an image; use PNG, JPEG, WebP or BMP") from None
    except Image.DecompressionBombError as exc:  # Pillow's own guard fires on open for huge headers
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            f"{field}: {exc}; the limit is {max_pixels} pixels (LABELFORGE_MAX_IMAGE_PIXELS)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"{field}: image data is truncated or corrupt ({exc})") from None
    arr = np.asarray(resized, dtype=np.float32) / 255.0  # [S, S] or [S, S, 3]
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # [C, S, S]
