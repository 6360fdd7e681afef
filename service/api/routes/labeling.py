"""`/labeling-jobs`: label a collection of real images (a tar/zip upload or stored objects) with a bundle."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from service.api.deps import CatalogDep, LimitsDep, SessionDep, SettingsDep, TenantDep, input_error
from service.api.routes.jobs import add_job_routes, enqueue_after_response, job_links, unknown_bundle
from service.api.schemas import ErrorResponse, LabelingFromKeys, LabelingJobPublic, LabelingJobStatus
from worker import labeling
from worker.db import KIND_LABELING, Job
from worker.jobs import JobInputError, create_labeling_job
from worker.storage import validate_key

router = APIRouter(prefix="/labeling-jobs", tags=["labeling"], responses={401: {"model": ErrorResponse}})

_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary",
                                            "description": "A tar (optionally gz/bz2/xz) or zip of images"}},
                    "required": ["file"],
                },
            },
            "application/json": {
                "schema": LabelingFromKeys.model_json_schema(ref_template="#/components/schemas/{model}")
            },
        },
    }
}

NamePattern = r"^[a-z0-9][a-z0-9-]{0,62}$"
MAX_KEY_SEGMENT = 255  # bytes per '/'-separated part of a storage key: no file system stores a longer name


@router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=LabelingJobPublic, summary="Start a labeling job",
    openapi_extra=_REQUEST_BODY,
    responses={202: {"links": job_links("labeling-jobs")},
               400: {"model": ErrorResponse, "description": "Malformed multipart body (e.g. too many parts)"},
               413: {"model": ErrorResponse, "description": "Upload over LABELFORGE_MAX_UPLOAD_MB"},
               415: {"model": ErrorResponse, "description": "Not a tar/zip archive or wrong content type"},
               422: {"description": "Invalid input; `loc` names the field or archive member"}},
)
async def create_labeling(
    request: Request, tenant: TenantDep, session: SessionDep, settings: SettingsDep, limits: LimitsDep,
    catalog: CatalogDep, background: BackgroundTasks,
    bundle: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$",
                                        description="Bundle (multipart form; JSON carries its own)")] = None,
    name: Annotated[str, Query(pattern=NamePattern, description="Slug for shard names (multipart form)")] = "labels",
) -> Job:
    """Check every image (names, sizes, pixels, decodability), record the job and queue its shards."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    kwargs: dict[str, Any]
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise input_error("file", "upload the tar or zip as multipart field 'file'")
        if bundle is None:
            raise input_error("bundle", "query parameter 'bundle' is required with an upload", where="query")
        data = await upload.read()
        try:
            labeling.archive_format(data)
        except labeling.LabelingInputError:
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "file: not a tar or zip archive") from None
        kwargs = {"bundle": bundle, "upload": data, "name": name}
    elif content_type == "application/json" or content_type.endswith("+json"):
        try:
            body = LabelingFromKeys.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                                 for e in exc.errors()]) from None
        for i, key in enumerate(body.source_keys):  # checked before the tenant's folder is prefixed
            try:
                validate_key(key)
            except ValueError as exc:
                raise input_error(f"source_keys[{i}]", str(exc)) from None
            if any(len(part.encode()) > MAX_KEY_SEGMENT for part in key.split("/")):
                raise input_error(f"source_keys[{i}]", f"a path segment is longer than {MAX_KEY_SEGMENT} bytes")
        own = f"tenants/{tenant.id}/"
        kwargs = {"bundle": body.bundle, "name": body.name,
                  "source_keys": [own + key for key in body.source_keys]}
    else:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            "content-type: send multipart/form-data (field 'file') or application/json")
    try:
        job = await run_in_threadpool(create_labeling_job, session, tenant.id, settings=settings, **kwargs)
    except labeling.LabelingInputError as exc:  # an archive member: its name is the field
        raise input_error(exc.field, exc.reason, loc=["body", "file", exc.field]) from None
    except JobInputError as exc:
        member = exc.field not in ("bundle", "name", "upload") and not exc.field.startswith("source_keys")
        loc = ["body", "file", exc.field] if member else None
        reason = unknown_bundle(catalog, kwargs["bundle"]) if exc.field == "bundle" else exc.reason
        raise input_error(exc.field, reason.replace(f"tenants/{tenant.id}/", ""), loc=loc) from None
    enqueue_after_response(background, request, job)
    return job


add_job_routes(router, KIND_LABELING, "labeling job", LabelingJobPublic, LabelingJobStatus)
