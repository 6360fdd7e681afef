"""`/predict`: labels for one photo or a small batch, from the in-process micro-batching predictor."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from service.api.deps import CatalogDep, LimitsDep, TenantDep, input_error
from service.api.limits import Limits, decode_image
from service.api.metrics import PREDICT_IMAGES
from service.api.schemas import ErrorResponse, Prediction, PredictRequest, PredictResponse

router = APIRouter(prefix="/predict", tags=["predict"], responses={401: {"model": ErrorResponse}})

_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                                             "description": "Image files (PNG, JPEG, WebP, BMP)"}},
                    "required": ["files"],
                },
            },
            "application/json": {"schema": PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")},
        },
    }
}


@router.post(
    "", response_model=PredictResponse, summary="Predict labels for images", openapi_extra=_REQUEST_BODY,
    responses={400: {"model": ErrorResponse, "description": "Malformed multipart body (e.g. too many files)"},
               413: {"model": ErrorResponse, "description": "Upload or image too large"},
               415: {"model": ErrorResponse, "description": "Not a supported image or content type"},
               422: {"description": "Invalid request; `loc`/`detail` names the field"}},
)
async def predict(
    request: Request, tenant: TenantDep, catalog: CatalogDep, limits: LimitsDep,
    bundle: Annotated[str | None, Query(max_length=100, description="Bundle name (default: first faces bundle)")] = None,
    render: Annotated[bool, Query(description="Add the simulator's rendering of each prediction as PNG")] = False,
) -> PredictResponse:
    """Read labels (face: shape, texture, yaw, pitch; other layouts: their named fields) out of images."""
    blobs, names, bundle, render = await _read_images(request, limits, bundle, render)
    name = catalog.info(bundle, "bundle").name if bundle else catalog.default_name("faces")
    # After the first call the bundle is a dict lookup away: no thread hop for it.
    ready = catalog.loaded(name)
    if ready is None:
        ready = await run_in_threadpool(catalog.predictor, name)
    loaded, batcher = ready
    images = await run_in_threadpool(_decode_all, blobs, names, limits, loaded.channels, loaded.image_size)
    labels = await batcher.submit(images)  # [B, dim]
    PREDICT_IMAGES.inc(len(blobs))
    pngs = await batcher.call(_render_pngs, loaded, labels) if render else [None] * len(blobs)
    named = loaded.layout.to_named(labels)
    predictions = []
    for i, (vec, fields, png) in enumerate(zip(labels, named, pngs, strict=True)):
        faces = {k: fields[k] for k in ("shape", "texture", "yaw_deg", "pitch_deg") if k in fields}
        predictions.append(Prediction(index=i, filename=names[i], labels=vec.tolist(), fields=fields,
                                      render_png_base64=png, **faces))
    return PredictResponse(bundle=loaded.name, bundle_sha=loaded.sha, predictions=predictions)


async def _read_images(request: Request, limits: Limits, bundle: str | None,
                       render: bool) -> tuple[list[bytes], list[str | None], str | None, bool]:
    """(image bytes, file names, bundle, render) from a multipart upload or a JSON base64 list."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=limits.max_images_per_predict, max_fields=8)
        files = [f for key in ("files", "file") for f in form.getlist(key) if isinstance(f, UploadFile)]
        if not files:
            raise input_error("files", "upload at least one image as multipart field 'files'")
        blobs = [await f.read() for f in files]
        names: list[str | None] = [f.filename for f in files]
    elif content_type == "application/json" or content_type.endswith("+json"):
        try:
            body = PredictRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                                 for e in exc.errors()]) from None
        blobs = []
        for i, text in enumerate(body.images):
            try:
                blobs.append(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError):
                raise input_error(f"images.{i}", "not valid base64") from None
        names = [None] * len(blobs)
        bundle, render = bundle or body.bundle, render or body.render
    else:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            "content-type: send multipart/form-data (field 'files') or application/json")
    if len(blobs) > limits.max_images_per_predict:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            f"files: {len(blobs)} images, more than {limits.max_images_per_predict} per call; "
                            "use a labeling job for collections")
    return blobs, names, bundle, render


def _decode_all(blobs: list[bytes], names: list[str | None], limits: Limits, channels: int,
                size: int) -> np.ndarray:
    """[B, C, S, S] float32 batch; the first bad image names itself (`files[2]` or `images[2]`)."""
    field = "images" if names and names[0] is None else "files"
    return np.stack([decode_image(b, field=f"{field}[{i}]", max_pixels=limits.max_image_pixels,
                                  channels=channels, size=size) for i, b in enumerate(blobs)])


def _render_pngs(bundle: Any, labels: np.ndarray) -> list[str]:
    """The simulator's rendering of each label vector, as base64 PNG."""
    import torch
    from PIL import Image

    with torch.inference_mode():
        images = bundle.simulate(torch.from_numpy(labels)).clamp(0, 1)  # [B, C, S, S]
    pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # [B, S, S, C]
    out = []
    for px in pixels:
        buf = io.BytesIO()
        Image.fromarray(px[..., 0] if px.shape[-1] == 1 else px).save(buf, format="PNG")
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out
