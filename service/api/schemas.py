"""Response and request bodies of the HTTP API, one family per resource.

The dataset *create* body is `models.spec.DatasetSpec` itself (the one validated spec, shared with
`labelforge generate`); everything here is what the API answers with, plus the small request bodies
that are not a spec (predict, labeling from storage keys).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.spec import FIELD_KEY, MAX_FIELD_KEY

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]

_JOB_EXAMPLE: dict[str, Any] = {
    "id": "3f2a9c0d1e4b4c5a8f7e6d5c4b3a2910",
    "kind": "dataset",
    "name": "frontal-faces",
    "bundle": "faces-m",
    "bundle_sha": "9b1c…",
    "status": "running",
    "created_at": "2026-11-23T09:30:00Z",
    "started_at": "2026-11-23T09:30:01Z",
    "finished_at": None,
}


class ErrorResponse(BaseModel):
    """Every non-validation 4xx/5xx: one sentence that names the offending field or setting."""

    detail: str = Field(examples=["bundle: unknown bundle 'faces-x'; available: digits, faces-m"])


class SampleCounts(BaseModel):
    done: int
    total: int


class ShardCounts(BaseModel):
    done: int
    total: int
    running: int
    failed: int


class Progress(BaseModel):
    """How far a job is, read from its durable record (not from the broker)."""

    samples: SampleCounts
    shards: ShardCounts
    fraction: float = Field(description="Samples done / total, 0..1.")
    eta_s: float | None = Field(None, description="Seconds to completion at the rate so far; null until known.")
    errors: list[str] = Field(default_factory=list, description="The job's error and every shard error recorded.")
    redeliveries: int = Field(0, description="Shard deliveries beyond the first (crashed or lost workers).")


class JobPublic(BaseModel):
    """A job as listed: identity, bundle and status."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_JOB_EXAMPLE]})

    id: str
    kind: Literal["dataset", "labeling"]
    name: str
    bundle: str
    bundle_sha: str
    status: JobStatusName
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobStatus(JobPublic):
    """A job in detail: progress in samples and shards, ETA, the error of a failed job, its inputs."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        **_JOB_EXAMPLE,
        "progress": {"samples": {"done": 512, "total": 2048},
                     "shards": {"done": 2, "total": 8, "running": 1, "failed": 0},
                     "fraction": 0.25, "eta_s": 6.1, "errors": [], "redeliveries": 0},
        "error": None, "spec": {"name": "frontal-faces", "bundle": "faces-m", "count": 2048},
    }]})

    progress: Progress
    error: str | None = Field(None, description="Why the job failed (e.g. a poison shard's exception).")
    spec: dict[str, Any] = Field(description="The accepted spec (datasets) or inputs (labeling jobs).")


class DatasetPublic(JobPublic):
    """A dataset job as listed and as answered by `POST /datasets` (202)."""


class DatasetStatus(JobStatus):
    """One dataset job with progress, ETA and errors."""


class LabelingJobPublic(JobPublic):
    """A labeling job as listed and as answered by `POST /labeling-jobs` (202)."""


class LabelingJobStatus(JobStatus):
    """One labeling job with progress, ETA and errors."""


class JobList(BaseModel):
    """A tenant's jobs, newest first."""

    items: list[JobPublic]
    count: int


class ShardLink(BaseModel):
    """Where to download one shard: a presigned S3 URL (expires) or this API's streaming URL."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "file": "frontal-faces-000000.tar", "url": "/datasets/3f2a…/shards/frontal-faces-000000.tar",
        "bytes": 1048576, "samples": 256, "sha256": "5e…", "presigned": False, "expires_s": None,
    }]})

    file: str
    url: str
    bytes: int
    samples: int | None = None
    sha256: str | None = None
    presigned: bool = Field(description="True when `url` goes straight to object storage (no API key needed).")
    expires_s: int | None = Field(None, description="Lifetime of a presigned URL, seconds.")


class ShardList(BaseModel):
    """Every stored shard of a job, in order."""

    items: list[ShardLink]
    count: int


class DatasetCard(BaseModel):
    """The dataset card (markdown) and links to its images (contact sheet, label histograms)."""

    markdown: str
    images: dict[str, str] = Field(description="image file name → URL")


class PredictRequest(BaseModel):
    """JSON form of `POST /predict`: base64-encoded image files (PNG, JPEG, WebP or BMP)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{
        "images": ["iVBORw0KGgoAAAANSUhEUgAA…"], "bundle": "faces-m", "render": False,
    }]})

    images: list[str] = Field(min_length=1, description="Base64 of each image file's bytes.")
    bundle: str | None = Field(None, max_length=100, description="Bundle name; default: the first faces bundle.")
    render: bool = Field(False, description="Add the simulator's rendering of each prediction as a PNG.")


class Prediction(BaseModel):
    """Labels read from one image. Face bundles fill shape/texture/yaw/pitch; every bundle fills `fields`."""

    index: int = Field(description="Position of the image in the request.")
    filename: str | None = None
    labels: list[float] = Field(description="The standardized label vector (400 values for faces).")
    fields: dict[str, float | int | list[float]] = Field(description="Named fields in human units.")
    shape: list[float] | None = Field(None, description="199 shape coefficients, σ units (faces).")
    texture: list[float] | None = Field(None, description="199 texture coefficients, σ units (faces).")
    yaw_deg: float | None = None
    pitch_deg: float | None = None
    render_png_base64: str | None = Field(None, description="Simulator rendering of the labels (render=true).")


class PredictResponse(BaseModel):
    """Predictions for every image of the request, with the bundle that made them."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "bundle": "faces-m", "bundle_sha": "9b1c…",
        "predictions": [{"index": 0, "filename": "me.jpg", "labels": [0.1, -0.3],
                         "fields": {"yaw_deg": 12.5, "pitch_deg": -3.0}, "yaw_deg": 12.5, "pitch_deg": -3.0}],
    }]})

    bundle: str
    bundle_sha: str
    predictions: list[Prediction]


class LabelingFromKeys(BaseModel):
    """JSON form of `POST /labeling-jobs`: images already in storage, relative to the tenant's folder."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{
        "name": "my-photos", "bundle": "faces-m", "source_keys": ["uploads/a.jpg", "uploads/b.png"],
    }]})

    name: str = Field("labels", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="Slug used in shard names.")
    bundle: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="Bundle name (see GET /models).")
    source_keys: list[Annotated[str, Field(min_length=1, max_length=400)]] = Field(
        min_length=1, description="Storage keys relative to the tenant's folder `tenants/{tenant}/`.")


class ModelPublic(BaseModel):
    """A shipped bundle: identity, label layout, sizes and evaluation figures."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "faces-m", "sha": "9b1c…", "domain": "faces-m", "trained": False, "image_size": 64,
        "channels": 3, "nz": 32, "trainer": "renderbegan", "layout": {"name": "faces", "dim": 400},
        "evaluation": {},
    }]})

    name: str
    sha: str
    domain: str | None = None
    trained: bool | None = None
    image_size: int | None = None
    channels: int | None = None
    nz: int | None = None
    trainer: str | None = None
    layout: dict[str, Any]
    evaluation: dict[str, Any] | None = None


class ModelList(BaseModel):
    items: list[ModelPublic]
    count: int


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Each dependency's state; the answer is 503 when any is not "ok"."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "unready", "checks": {"database": "ok", "broker": "error: connection refused", "storage": "ok"},
    }]})

    status: Literal["ok", "unready"]
    checks: dict[str, str]


# --- web console: spec schema, preview, render ---------------------------------------------------

PREVIEW_MAX_SAMPLES = 16  # samples one `POST /preview` may ask for: a look, not a dataset


class SpecSchemaDocument(BaseModel):
    """The JSON Schema (draft 2020-12) of a request body, so clients can build forms and validate offline."""

    name: str = Field(examples=["DatasetSpec"])
    json_schema: dict[str, Any] = Field(description="JSON Schema of the body, with `$defs` and examples.")


class PreviewSample(BaseModel):
    """One preview sample: exactly sample `index` of the dataset the spec describes."""

    index: int
    image: str = Field(description="The generated image as a data URL, in the spec's format.")
    sim: str | None = Field(None, description="The simulator's render as a PNG data URL (spec extras has 'sim').")
    fields: dict[str, float | int | list[float]] = Field(description="The sample's labels in human units.")


class PreviewResponse(BaseModel):
    """The first samples of a spec's dataset, generated now and not stored."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "bundle": "faces-m", "bundle_sha": "9b1c…", "image_size": 32, "format": "jpg",
        "samples": [{"index": 0, "image": "data:image/jpeg;base64,/9j/4AAQ…", "sim": None,
                     "fields": {"yaw_deg": 12.5, "pitch_deg": -3.0}}],
    }]})

    bundle: str
    bundle_sha: str
    image_size: int = Field(description="Pixels per side of the preview images (the spec's, at most 256).")
    format: Literal["png", "jpg", "webp"]
    samples: list[PreviewSample]


class RenderRequest(BaseModel):
    """Labels in human units for the generator and simulator; missing fields sit at the prior's centre."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, json_schema_extra={"examples": [{
        "bundle": "faces-m", "labels": {"yaw_deg": 20.0, "pitch_deg": -5.0, "shape[0]": 1.5}, "seed": 0,
    }]})

    bundle: str | None = Field(None, max_length=100, description="Bundle name; default: the first faces bundle.")
    labels: dict[Annotated[str, Field(pattern=FIELD_KEY, max_length=MAX_FIELD_KEY)],
                 float | list[float]] = Field(
        default_factory=dict, max_length=1000,
        description="Field → value in human units; vector slots as `shape[3]`. Unset fields: 0 σ / class 0.")
    seed: int = Field(0, ge=0, lt=2**63, description="The noise z is sample 0's noise in a dataset with this seed.")
    simulator: bool = Field(True, description="Also return the simulator's render of the same labels.")


class RenderResponse(BaseModel):
    """What the bundle draws for one label vector: the generator's image at a fixed z, and the simulator's."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "bundle": "faces-m", "bundle_sha": "9b1c…", "seed": 0, "image": "data:image/png;base64,iVBORw0KGgo…",
        "simulator": "data:image/png;base64,iVBORw0KGgo…", "fields": {"yaw_deg": 20.0, "pitch_deg": -5.0},
    }]})

    bundle: str
    bundle_sha: str
    seed: int
    image: str = Field(description="Generator output G(z, l) as a PNG data URL, at the bundle's size.")
    simulator: str | None = Field(None, description="Simulator output S(l) as a PNG data URL.")
    fields: dict[str, float | int | list[float]] = Field(description="The labels rendered, in human units.")
