"""`/preview`: the first few samples of the dataset a spec describes, generated now and not stored.

The web console calls it on every edit of the spec form, so it runs the engine's own `BatchProducer`
and `SampleSerializer` (sample i depends only on (seed, i): a preview shows exactly the images the
dataset will contain) on the bundle's single inference thread, capped at `PREVIEW_MAX_SAMPLES`
images of at most `PREVIEW_MAX_SIZE` pixels, so a burst of previews cannot starve `/predict`.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from models.engine import BatchProducer, SampleSerializer
from models.spec import DatasetSpec, SpecError
from service.api.deps import CatalogDep, TenantDep, input_error
from service.api.predictor import BundleCatalog
from service.api.routes.datasets import require_json
from service.api.routes.jobs import unknown_bundle
from service.api.schemas import PREVIEW_MAX_SAMPLES, ErrorResponse, PreviewResponse, PreviewSample

router = APIRouter(prefix="/preview", tags=["datasets"], responses={401: {"model": ErrorResponse}})

PREVIEW_MAX_SIZE = 256  # pixels per side; a larger spec size is previewed at this size
PREVIEW_EXTRAS = ("sim",)  # extras shown in a preview (mask and z are not images worth a look)
_MIME = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


def data_url(data: bytes, mime: str) -> str:
    """`data:` URL of encoded image bytes, ready for an `<img src>`."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def known_bundle(catalog: BundleCatalog, name: str | None, field: str = "bundle") -> str:
    """`name` if installed (default: the first faces bundle), else a 422 at `body.<field>` listing them."""
    if name is None:
        return catalog.default_name("faces")
    if name not in {b.name for b in catalog.list()}:
        raise input_error(field, unknown_bundle(catalog, name))
    return name


@router.post(
    "", response_model=PreviewResponse, summary="Preview a dataset spec",
    responses={413: {"model": ErrorResponse, "description": "Spec larger than LABELFORGE_MAX_SPEC_BYTES"},
               415: {"model": ErrorResponse, "description": "Body is not application/json"},
               422: {"description": "Invalid spec; `loc` names the field"}},
)
async def preview(
    spec: DatasetSpec, tenant: TenantDep, catalog: CatalogDep, _json: Annotated[None, Depends(require_json)],
    samples: Annotated[int, Query(ge=1, le=PREVIEW_MAX_SAMPLES, description="How many samples (the first ones)")] = 8,
) -> PreviewResponse:
    """Generate samples 0…n-1 of the spec's dataset (same bytes as its shards) without storing anything."""
    name = known_bundle(catalog, spec.bundle)
    bundle = await run_in_threadpool(catalog.load, name)
    batcher = await run_in_threadpool(catalog.batcher, name)
    try:
        return await batcher.call(_preview, spec, bundle, min(samples, spec.count))
    except SpecError as exc:  # layout-dependent problems: unknown field, class out of range, slot count
        raise input_error(exc.field, exc.reason) from None


def _preview(spec: DatasetSpec, bundle: Any, n: int) -> PreviewResponse:
    size = min(spec.image.size or bundle.image_size, PREVIEW_MAX_SIZE)
    spec = spec.model_copy(update={"image": spec.image.model_copy(update={"size": size}),
                                   "extras": [e for e in spec.extras if e in PREVIEW_EXTRAS]})
    batch = BatchProducer(spec, bundle).produce(torch.arange(n), encode=False)  # raises SpecError
    assert isinstance(batch.images, np.ndarray)  # encode=False: pixels, not encoded bytes
    serializer = SampleSerializer(spec, bundle)
    mime = _MIME[spec.image.format]
    out = []
    for i, fields in enumerate(bundle.layout.to_named(batch.labels)):
        sim = data_url(serializer.encode_image(batch.sim[i], "png"), "image/png") if batch.sim is not None else None
        out.append(PreviewSample(index=int(batch.index[i]), image=data_url(serializer.encode_image(batch.images[i]), mime),
                                 sim=sim, fields=fields))
    return PreviewResponse(bundle=bundle.name, bundle_sha=bundle.sha, image_size=size, format=spec.image.format,
                           samples=out)

