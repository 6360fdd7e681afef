"""`/datasets`: order a synthetic dataset from a spec, follow it, download its shards and card."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Request, status
from fastapi.responses import Response

from models.spec import DatasetSpec
from service.api.deps import (
    CatalogDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    TenantDep,
    input_error,
    tenant_job,
)
from service.api.routes.jobs import (
    NOT_FOUND,
    add_job_routes,
    enqueue_after_response,
    job_links,
    serve_object,
    unknown_bundle,
)
from service.api.schemas import DatasetCard, DatasetPublic, DatasetStatus, ErrorResponse
from worker.db import KIND_DATASET, Job
from worker.jobs import JobInputError, create_dataset_job

router = APIRouter(prefix="/datasets", tags=["datasets"], responses={401: {"model": ErrorResponse}})

CARD_IMAGES = ("card.png", "histograms.png")  # written by models.card beside card.md


def require_json(request: Request) -> None:
    """415 for a spec sent as anything but JSON: FastAPI would hand the raw text to the model and
    answer a 422 about a "dictionary", which does not tell the client to fix its content type."""
    content_type = request.headers.get("content-type")
    if content_type is None:  # FastAPI reads an untyped body as JSON
        return
    main = content_type.split(";")[0].strip().lower()
    if main != "application/json" and not main.endswith("+json"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            f"content-type: send the spec as application/json, not {main[:60] or 'nothing'}")


@router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=DatasetPublic, summary="Order a dataset",
    responses={202: {"links": job_links("datasets")},
               413: {"model": ErrorResponse, "description": "Spec larger than LABELFORGE_MAX_SPEC_BYTES"},
               415: {"model": ErrorResponse, "description": "Body is not application/json"},
               422: {"description": "Invalid spec; `loc` names the field"}},
)
def create_dataset(spec: DatasetSpec, tenant: TenantDep, _json: Annotated[None, Depends(require_json)],
                   session: SessionDep, settings: SettingsDep, catalog: CatalogDep, request: Request,
                   background: BackgroundTasks) -> Job:
    """Check the spec against its bundle and limits, record the job and queue one task per shard."""
    try:
        job = create_dataset_job(session, tenant.id, spec, settings=settings)
    except JobInputError as exc:
        reason = unknown_bundle(catalog, spec.bundle) if exc.field == "bundle" else exc.reason
        raise input_error(exc.field, reason) from None
    enqueue_after_response(background, request, job)
    return job


add_job_routes(router, KIND_DATASET, "dataset", DatasetPublic, DatasetStatus)


@router.get("/{job_id}/card", response_model=DatasetCard, summary="Dataset card",
            responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "Card not written yet"}})
def get_card(job_id: str, request: Request, tenant: TenantDep, session: SessionDep,
             storage: StorageDep) -> DatasetCard:
    """The dataset card (markdown) with links to its contact sheet and label histograms."""
    job = tenant_job(session, tenant, job_id, KIND_DATASET)
    key = f"{job.prefix}card.md"
    if not storage.exists(key):
        raise HTTPException(status.HTTP_409_CONFLICT, f"card not written yet: job is {job.status}")
    images = {name: str(request.url_for("get_card_image", job_id=job.id, file=name))
              for name in CARD_IMAGES if storage.exists(job.prefix + name)}
    return DatasetCard(markdown=storage.get_bytes(key).decode("utf-8"), images=images)


@router.get("/{job_id}/card/{file}", response_class=Response, summary="Dataset card image",
            responses={**NOT_FOUND, 200: {"content": {"image/png": {}}, "description": "PNG image"}})
def get_card_image(job_id: str, file: str, tenant: TenantDep, session: SessionDep, storage: StorageDep,
                   settings: SettingsDep) -> Response:
    """One image of the dataset card (`card.png` contact sheet or `histograms.png`)."""
    job = tenant_job(session, tenant, job_id, KIND_DATASET)
    if file not in CARD_IMAGES or not storage.exists(job.prefix + file):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"file: no card image named {PurePosixPath(file).name!r}")
    return serve_object(storage, job.prefix + file, "image/png", settings)
