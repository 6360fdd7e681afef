"""Settings: laptop defaults need nothing; distributed mode refuses guessable secrets; the broker's
redelivery timeout follows the reconciler's deadline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.settings import Settings, get_settings


def test_defaults_are_embedded_and_local() -> None:
    s = Settings(_env_file=None)
    assert s.embedded
    assert s.database_url == "sqlite:///data/labelforge.db"
    assert s.max_upload_bytes == 20 * 1024 * 1024
    assert s.broker_transport_options()["data_folder_in"] == str(Path("data/broker/queue"))


def test_env_is_read_with_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LABELFORGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LABELFORGE_API_KEYS", "first-key-0123456789, second-key-0123456789")
    monkeypatch.setenv("LABELFORGE_MAX_UPLOAD_MB", "5")
    get_settings.cache_clear()
    try:
        s = get_settings()
        assert s.database_url == f"sqlite:///{tmp_path}/labelforge.db"
        assert [k.get_secret_value() for k in s.api_keys] == ["first-key-0123456789", "second-key-0123456789"]
        assert s.max_upload_bytes == 5 * 1024 * 1024
        assert get_settings() is s  # cached
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("over", "field"),
    [({"s3_endpoint": "minio:9000", "s3_secret_key": "minioadmin"}, "s3_secret_key"),
     ({"broker_url": "redis://redis:6379/0", "api_keys": "changeme"}, "api_keys[0]"),
     ({"broker_url": "redis://redis:6379/0", "admin_key": "admin"}, "admin_key")],
)
def test_placeholder_secrets_refused_outside_embedded_mode(over: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(field) + ".*refused"):
        Settings(_env_file=None, **over)


def test_placeholder_secrets_tolerated_in_embedded_mode() -> None:
    assert Settings(_env_file=None, api_keys="changeme").embedded


def test_redis_visibility_timeout_matches_reconciler_ceiling() -> None:
    s = Settings(_env_file=None, broker_url="redis://r:6379/0", shard_deadline_ceiling_s=600)
    assert s.broker_transport_options()["visibility_timeout"] == 600
    with pytest.raises(ValidationError, match="shard_deadline_floor_s"):
        Settings(_env_file=None, shard_deadline_floor_s=100, shard_deadline_ceiling_s=50)
