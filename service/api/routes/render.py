"""`/render`: what a bundle draws for one label vector — the generator at a fixed z, and the simulator.

This is the console's explorer (sliders over yaw, pitch and leading shape components). The labels go
through the same spec machinery as a dataset: each given value becomes a `fixed` distribution, every
other field is fixed at its prior's centre (0 σ, class 0), and z is the noise of sample 0 in a dataset
with the request's seed. So a render is exactly sample 0 of a one-sample dataset with those labels,
and a bad field name or slot is reported as `labels.<key>` just as `POST /datasets` reports it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from models.engine import sampling_plan
from models.spec import DatasetSpec, SpecError
from service.api.deps import CatalogDep, TenantDep, input_error
from service.api.routes.preview import data_url, known_bundle
from service.api.schemas import ErrorResponse, RenderRequest, RenderResponse

router = APIRouter(prefix="/render", tags=["models"], responses={401: {"model": ErrorResponse}})


@router.post("", response_model=RenderResponse, summary="Render labels with a bundle",
             responses={413: {"model": ErrorResponse, "description": "Body larger than LABELFORGE_MAX_SPEC_BYTES"},
                        422: {"description": "Invalid labels; `loc` names the field"}})
async def render(body: RenderRequest, tenant: TenantDep, catalog: CatalogDep) -> RenderResponse:
    """The generator's image G(z, l) at the seed's fixed z, and the simulator's S(l), for labels in human units."""
    name = known_bundle(catalog, body.bundle)
    bundle = await run_in_threadpool(catalog.load, name)
    batcher = await run_in_threadpool(catalog.batcher, name)
    try:
        return await batcher.call(_render, body, bundle, name)
    except SpecError as exc:
        raise input_error(exc.field, exc.reason) from None


def centred_spec(body: RenderRequest, bundle: Any, name: str) -> DatasetSpec:
    """A one-sample spec: the request's values fixed, every other field fixed at its prior's centre."""
    centre: dict[str, Any] = {f.name: {"fixed": 0.0 if f.kind == "categorical" else f.offset}
                              for f in bundle.layout.fields}
    given = {key: {"fixed": value} for key, value in body.labels.items()}
    return DatasetSpec.model_validate({"name": "render", "bundle": name, "count": 1, "shard_size": 1,
                                       "seed": body.seed, "labels": {**centre, **given}, "noise": {"mode": "fixed"}})


def _render(body: RenderRequest, bundle: Any, name: str) -> RenderResponse:
    plan = sampling_plan(centred_spec(body, bundle, name), bundle)  # raises SpecError('labels.<key>', …)
    index = torch.zeros(1, dtype=torch.long)
    labels, z = plan.labels(index), plan.noise(index)  # [1, D], [1, nz]
    with torch.inference_mode():
        image = _png(bundle.generate(z, labels))
        sim = _png(bundle.simulate(labels)) if body.simulator else None
    return RenderResponse(bundle=bundle.name, bundle_sha=bundle.sha, seed=body.seed, image=image, simulator=sim,
                          fields=bundle.layout.to_named(labels)[0])


def _png(images: torch.Tensor) -> str:
    """[1, C, S, S] in [0, 1] → PNG data URL (rounded as the engine's encoder rounds)."""
    from PIL import Image

    px = (images[0].clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # [S, S, C]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(px[..., 0] if px.shape[-1] == 1 else px)).save(buf, format="PNG")
    return data_url(buf.getvalue(), "image/png")
