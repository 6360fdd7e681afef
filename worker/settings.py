"""Every knob of the service and the workers, read from `LABELFORGE_*` environment variables.

One `Settings` object configures the API (H7, `service/`) and the Celery workers alike. It lives in
`worker/` because `worker` may not import `service`; the service imports it from here.

Defaults make a laptop work with nothing installed ("embedded" mode): job records in SQLite under
`./data`, a broker that is just a folder under `./data/broker` (kombu's `filesystem://` transport, so
a real worker process with late acks needs no server), files under `./data/storage`, the shipped
bundles in `./bundles`. Distributed mode is the same code with `LABELFORGE_BROKER_URL=redis://…`,
`LABELFORGE_S3_ENDPOINT=…`, `LABELFORGE_DATABASE_URL=postgresql+psycopg://…`; there, placeholder
secrets are refused at start.

Contract for other modules:
    get_settings() -> Settings         # cached; `get_settings.cache_clear()` after changing env in tests
    Settings.embedded -> bool          # local broker and local storage
    Settings.broker_transport_options() -> dict
    Settings.storage_root -> Path      # local storage folder (when s3_endpoint is empty)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Values that say "nobody chose a secret": refused outside embedded mode.
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "changethis", "secret", "password", "minioadmin", "admin", "test", "example"}
)

EMBEDDED_BROKER_SCHEMES = ("filesystem://", "memory://", "sqla+sqlite://")


class Settings(BaseSettings):
    """Service + worker configuration. Field names map to `LABELFORGE_<NAME>` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="LABELFORGE_", extra="ignore", validate_default=True)

    # --- where things live ---
    data_dir: Path = Field(default=Path("./data"), description="Root for local state: SQLite, broker folder, local storage.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the job records: sqlite:///path or postgresql+psycopg://user@host/db; "
        "empty = sqlite:///{data_dir}/labelforge.db (sqlite:///./data/labelforge.db by default).",
    )
    broker_url: str = Field(
        default="filesystem://",
        description="Celery broker. `filesystem://` = embedded folder broker under data_dir/broker; or redis://host:6379/0.",
    )
    bundles_dir: Path = Field(default=Path("./bundles"), description="Folder of bundles; a spec's `bundle` names a subfolder.")

    # --- object storage (empty endpoint → local folder data_dir/storage) ---
    s3_endpoint: str = Field(default="", description="host:port of S3/MinIO; empty means local storage under data_dir.")
    s3_access_key: str = Field(default="", description="S3 access key id.")
    s3_secret_key: SecretStr = Field(default=SecretStr(""), description="S3 secret key.")
    s3_bucket: str = Field(default="labelforge", description="Bucket holding every tenant's files.")
    s3_secure: bool = Field(default=False, description="Use HTTPS to reach the S3 endpoint.")
    s3_region: str = Field(default="us-east-1", description="Region name sent to S3.")
    presign_expires_s: int = Field(default=3600, ge=60, le=3600, description="Lifetime of presigned GET URLs, seconds (≤ 1 h).")

    # --- API (H7) ---
    api_host: str = Field(default="127.0.0.1", description="Interface `labelforge serve` binds to.")
    api_port: int = Field(default=8000, ge=0, le=65535, description="Port `labelforge serve` binds to.")
    public_url: str = Field(default="", description="Base URL clients use to reach the API (for shard links); empty = derived.")
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys provisioned as tenants at start (tenant name = `key-N`).",
    )
    admin_key: SecretStr = Field(default=SecretStr(""), description="Key for admin endpoints (tenant management); empty = none.")

    # --- limits (answered with 4xx by the API, enforced again by workers) ---
    max_count: int = Field(default=1_000_000, ge=1, le=10_000_000, description="Most samples one dataset job may ask for.")
    max_upload_mb: int = Field(default=20, ge=1, description="Largest request body / labeling upload, MiB.")
    max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="Largest decoded image, pixels (decompression-bomb guard for Pillow)."
    )
    max_spec_bytes: int = Field(default=65_536, ge=256, description="Largest dataset spec JSON, bytes.")
    max_labeling_images: int = Field(default=100_000, ge=1, description="Most images in one labeling job.")
    max_archive_expand_ratio: int = Field(
        default=200, ge=1, description="Zip-bomb guard: uncompressed size may be at most this times the upload size."
    )
    labeling_shard_size: int = Field(default=1000, ge=1, description="Images per labeling shard.")

    # --- workers ---
    worker_concurrency: int = Field(default=1, ge=1, description="Celery pool processes per worker (one per GPU is typical).")
    device: str = Field(default="auto", description="Torch/ONNX device for bundles: auto (cuda if present), cpu, cuda, cuda:1.")
    bundle_engine: str = Field(default="onnx", description="Bundle runtime engine: onnx or torchscript.")
    heartbeat_interval_s: float = Field(default=2.0, gt=0, description="How often a running shard records progress, s.")
    max_deliveries: int = Field(default=3, ge=1, description="Crashing deliveries of one shard before the job fails (poison).")
    storage_retries: int = Field(default=5, ge=0, description="Retries of a shard after transient storage errors.")
    storage_retry_backoff_s: float = Field(default=2.0, gt=0, description="First retry delay, s; doubles per retry, ±50 % jitter.")
    storage_retry_backoff_max_s: float = Field(default=60.0, gt=0, description="Cap of the retry delay, s.")

    # --- reconciler (the DB, not the broker, is the source of truth) ---
    reconcile_interval_s: float = Field(default=10.0, gt=0, description="Seconds between reconciler passes.")
    shard_deadline_floor_s: float = Field(
        default=60.0, gt=0, description="A shard with no progress for max(floor, 2 × p99 shard time) seconds is re-enqueued."
    )
    shard_deadline_ceiling_s: float = Field(default=900.0, gt=0, description="Upper bound of that deadline, s.")
    visibility_timeout_s: float = Field(
        default=0.0,
        ge=0,
        description="Redis visibility timeout, s; 0 = shard_deadline_ceiling_s, so the broker never redelivers a "
        "shard before the reconciler would.",
    )
    # The folder broker is polled: each hand-off (API → first shard, shard → next shard, → finalize) waits
    # half a period on average. 0.2 s cost a 4-shard job ~0.5 s (5 % of its time on 2 cores); 0.05 s costs an
    # idle worker ~0.5 % of a core (measured). Redis and other brokers push, so this is embedded-only.
    broker_polling_interval_s: float = Field(default=0.05, gt=0, description="Poll period of the embedded folder broker, s.")

    # --- mode ---
    @property
    def embedded(self) -> bool:
        """Local broker and local storage: the laptop default where placeholder secrets are tolerated."""
        return self.broker_url.startswith(EMBEDDED_BROKER_SCHEMES) and not self.s3_endpoint

    @property
    def storage_root(self) -> Path:
        return self.data_dir / "storage"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def effective_visibility_timeout_s(self) -> float:
        return self.visibility_timeout_s or self.shard_deadline_ceiling_s

    def broker_transport_options(self) -> dict[str, object]:
        """Options for kombu: folders of the embedded broker, or Redis' visibility timeout."""
        if self.broker_url.startswith("filesystem://"):
            queue = str(self.broker_dir / "queue")
            return {
                "data_folder_in": queue,
                "data_folder_out": queue,
                "control_folder": str(self.broker_dir / "control"),
                "polling_interval": self.broker_polling_interval_s,
            }
        # Fail a publish within ~1 s when the broker is down: the job record keeps the work and the
        # reconciler resends, so an API request must not hang on kombu's default reconnect loop.
        return {"visibility_timeout": int(self.effective_visibility_timeout_s), "max_retries": 2,
                "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}

    def ensure_dirs(self) -> None:
        """Create the local folders embedded mode needs (broker queue, storage, SQLite parent)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.broker_url.startswith("filesystem://"):
            for key in ("data_folder_in", "control_folder"):
                Path(str(self.broker_transport_options()[key])).mkdir(parents=True, exist_ok=True)
        if not self.s3_endpoint:
            self.storage_root.mkdir(parents=True, exist_ok=True)

    @model_validator(mode="before")
    @classmethod
    def _split_api_keys(cls, data: object) -> object:
        """Accept `LABELFORGE_API_KEYS=k1,k2` as well as a list."""
        if isinstance(data, dict) and isinstance(data.get("api_keys"), str):
            data = {**data, "api_keys": [k.strip() for k in data["api_keys"].split(",") if k.strip()]}
        return data

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir.as_posix()}/labelforge.db"
        if self.shard_deadline_floor_s > self.shard_deadline_ceiling_s:
            raise ValueError("shard_deadline_floor_s must not exceed shard_deadline_ceiling_s")
        if self.embedded:
            return self
        # Outside embedded mode a guessable secret is a breach waiting to happen: refuse to start.
        if self.s3_endpoint and self.s3_secret_key.get_secret_value().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("s3_secret_key: placeholder or empty secret refused outside embedded mode")
        for i, key in enumerate(self.api_keys):
            if key.get_secret_value().lower() in PLACEHOLDER_SECRETS or len(key.get_secret_value()) < 16:
                raise ValueError(f"api_keys[{i}]: placeholder or short (< 16 chars) key refused outside embedded mode")
        admin = self.admin_key.get_secret_value()
        if admin and (admin.lower() in PLACEHOLDER_SECRETS or len(admin) < 16):
            raise ValueError("admin_key: placeholder or short (< 16 chars) key refused outside embedded mode")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (env read once). Tests change env then call `get_settings.cache_clear()`."""
    return Settings()
