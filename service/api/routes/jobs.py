"""Endpoints every job kind shares: list, status, delete, manifest, shard links, shard download.

Datasets and labeling jobs are the same record with a different `kind`, so `add_job_routes` adds
the same seven endpoints to each router; every lookup is scoped to the caller's tenant, and another
tenant's id answers exactly like an id that does not exist (404).
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from service.api.deps import SessionDep, SettingsDep, StorageDep, TenantDep, tenant_job
from service.api.predictor import BundleCatalog
from service.api.schemas import ErrorResponse, JobList, JobPublic, JobStatus, ShardLink, ShardList
from worker.db import JOB_SUCCEEDED, SHARD_STORED, Job
from worker.jobs import delete_job, enqueue, job_progress, list_jobs
from worker.settings import Settings
from worker.storage import Storage

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "No such job for this tenant"}}
CHUNK = 1 << 20  # bytes per streamed chunk when storage offers neither a local file nor a presigned URL


class DeletedResponse(JobPublic):
    """The job as it was, and how many stored objects were removed with it."""

    deleted_objects: int


def job_links(kind: str) -> dict[str, Any]:
    """OpenAPI links from a created job (its `id`) to the operations that take it, so clients and
    API fuzzers (schemathesis' stateful phase) can follow a job from creation to download and delete."""
    targets = {"Status": ("", "get"), "Delete": ("", "delete"), "Manifest": ("~1manifest", "get"),
               "Shards": ("~1shards", "get")}
    return {name: {"operationRef": f"#/paths/~1{kind}~1{{job_id}}{suffix}/{method}",
                   "parameters": {"job_id": "$response.body#/id"}} for name, (suffix, method) in targets.items()}


def enqueue_after_response(background: BackgroundTasks, request: Request, job: Job) -> None:
    """Send the job's shard tasks once the 202 is on its way, not before.

    A spec may make thousands of shards, each a row update and a broker message; sending them inside
    the request would hold the client for as long. The job is durable once committed, and the
    reconciler sends any shard this misses (a crash right after the answer, a broker outage).
    """
    factory, job_id = request.app.state.session_factory, job.id

    def send() -> None:
        with factory() as session:
            stored = session.get(Job, job_id)
            if stored is not None:  # deleted meanwhile: nothing to send
                enqueue(session, stored)

    background.add_task(send)


def unknown_bundle(catalog: BundleCatalog, name: str) -> str:
    """Why `name` is not a bundle, listing those that are (the worker's message names server folders)."""
    return f"unknown bundle {name[:80]!r}; available: {', '.join(b.name for b in catalog.list()) or 'none'}"


def job_status(job: Job, model: type[JobStatus]) -> JobStatus:
    """Record + progress → the status schema (progress comes from the shard rows, not the broker)."""
    return model.model_validate({**JobPublic.model_validate(job).model_dump(), "progress": job_progress(job),
                                 "error": job.error, "spec": job.spec})


def stored_shards(job: Job) -> dict[str, Any]:
    """File name → shard row, for shards that are completely stored."""
    return {PurePosixPath(s.key).name: s for s in job.shards if s.status == SHARD_STORED and s.key}


def shard_url(request: Request, settings: Settings, route: str, job: Job, file: str) -> str:
    """This API's download URL for a file (absolute; `public_url` wins behind a proxy)."""
    url = request.url_for(route, job_id=job.id, file=file)
    if settings.public_url:
        return settings.public_url.rstrip("/") + url.path
    return str(url)


def serve_object(storage: Storage, key: str, media_type: str, settings: Settings) -> Response:
    """A stored object: a local file with HTTP Range support, or a redirect to a presigned URL."""
    local_path = getattr(storage, "local_path", None)
    if local_path is not None:
        path = local_path(key)
        if not path.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"file {PurePosixPath(key).name!r} is not stored")
        return FileResponse(path, media_type=media_type, filename=PurePosixPath(key).name)
    url = storage.presign_get(key, settings.presign_expires_s)
    if url is not None:
        return RedirectResponse(url, status.HTTP_307_TEMPORARY_REDIRECT)
    stream = storage.open(key)
    return StreamingResponse(iter(lambda: stream.read(CHUNK), b""), media_type=media_type)


def add_job_routes(router: APIRouter, kind: str, noun: str, public: type[JobPublic], detail: type[JobStatus]) -> None:
    """Add list/status/delete/manifest/shards/shard-file routes for jobs of `kind` to `router`."""
    file_route = f"get_{kind}_shard"

    @router.get("", response_model=JobList, summary=f"List {noun}s")
    def list_(tenant: TenantDep, session: SessionDep,
              limit: Annotated[int, Query(ge=1, le=1000, description="Most jobs to return")] = 100) -> JobList:
        """The tenant's jobs of this kind, newest first."""
        jobs = list_jobs(session, tenant.id, kind=kind, limit=limit)
        return JobList(items=[public.model_validate(j) for j in jobs], count=len(jobs))

    @router.get("/{job_id}", response_model=detail, responses=NOT_FOUND, summary=f"Status of a {noun}")
    def get(job_id: str, tenant: TenantDep, session: SessionDep) -> JobStatus:
        """Status, progress in samples and shards, ETA and errors of one job."""
        return job_status(tenant_job(session, tenant, job_id, kind), detail)

    @router.delete("/{job_id}", response_model=DeletedResponse, responses=NOT_FOUND, summary=f"Delete a {noun}")
    def delete(job_id: str, tenant: TenantDep, session: SessionDep, settings: SettingsDep) -> DeletedResponse:
        """Cancel running work, delete every stored file of the job and its records."""
        job = tenant_job(session, tenant, job_id, kind)
        snapshot = JobPublic.model_validate(job).model_dump()
        deleted = delete_job(session, job, settings=settings)
        return DeletedResponse(**snapshot, deleted_objects=deleted)

    @router.get("/{job_id}/manifest", response_model=dict[str, Any], summary=f"Manifest of a {noun}",
                responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "Job not finished"}})
    def manifest(job_id: str, tenant: TenantDep, session: SessionDep, storage: StorageDep) -> dict[str, Any]:
        """The finished job's manifest.json: spec, bundle sha, shards with sha256 and counts."""
        job = tenant_job(session, tenant, job_id, kind)
        key = f"{job.prefix}manifest.json"
        if job.status != JOB_SUCCEEDED or not storage.exists(key):
            raise HTTPException(status.HTTP_409_CONFLICT, f"manifest not written yet: job is {job.status}")
        return json.loads(storage.get_bytes(key))

    @router.get("/{job_id}/shards", response_model=ShardList, responses=NOT_FOUND, summary=f"Shards of a {noun}")
    def shards(job_id: str, request: Request, tenant: TenantDep, session: SessionDep, storage: StorageDep,
               settings: SettingsDep) -> ShardList:
        """Download links of every stored shard: presigned when storage is S3, API URLs otherwise."""
        job = tenant_job(session, tenant, job_id, kind)
        items = []
        for file, row in stored_shards(job).items():
            presigned = storage.presign_get(row.key, settings.presign_expires_s)
            items.append(ShardLink(
                file=file, url=presigned or shard_url(request, settings, file_route, job, file),
                bytes=row.size_bytes, samples=row.samples, sha256=row.sha256, presigned=presigned is not None,
                expires_s=settings.presign_expires_s if presigned else None,
            ))
        return ShardList(items=items, count=len(items))

    @router.get("/{job_id}/shards/{file}", name=file_route, response_class=Response, summary="Download a shard",
                responses={**NOT_FOUND, 200: {"content": {"application/x-tar": {}}, "description": "The tar shard"},
                           206: {"description": "Partial content (HTTP Range)"},
                           307: {"description": "Redirect to a presigned URL (S3 storage)"}})
    def shard_file(job_id: str, file: str, tenant: TenantDep, session: SessionDep, storage: StorageDep,
                   settings: SettingsDep) -> Response:
        """One shard's bytes (HTTP Range supported), or a redirect to its presigned URL."""
        job = tenant_job(session, tenant, job_id, kind)
        row = stored_shards(job).get(file)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"file: no stored shard named {file!r} in this job")
        return serve_object(storage, row.key, "application/x-tar", settings)
