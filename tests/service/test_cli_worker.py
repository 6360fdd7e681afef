"""`labelforge worker` refuses bad configuration with a message naming the setting and exit code 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from service.cli import app
from worker.settings import get_settings


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [({"LABELFORGE_MAX_UPLOAD_MB": "lots"}, [], "max_upload_mb"),
     ({"LABELFORGE_BROKER_URL": "redis://127.0.0.1:1/0", "LABELFORGE_API_KEYS": "changeme"}, [], "api_keys[0]"),
     ({}, ["-Q", "gpu,typo"], "--queues")],
)
def test_worker_refuses_bad_config(monkeypatch: pytest.MonkeyPatch, env: dict, args: list, message: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["worker", *args])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
