"""docker-compose.yml wires the distributed deployment: validated by `docker compose config` where a
compose-capable docker client exists, and by parsing the YAML and checking its contract otherwise."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
REQUIRED_ENV = {"POSTGRES_PASSWORD": "pg-secret-123456", "MINIO_ROOT_USER": "labelforge",
                "MINIO_ROOT_PASSWORD": "minio-secret-123456", "LABELFORGE_API_KEYS": "key-0123456789abcdef"}


def compose_client() -> list[str] | None:
    """`docker compose` (plugin) or `docker-compose`, if one of them actually works here."""
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "version"], capture_output=True).returncode == 0:
            return cmd
    return None


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_docker_compose_config_accepts_the_file() -> None:
    cmd = compose_client()
    if cmd is None:
        pytest.skip("no compose-capable docker client on this machine; the YAML checks below still run")
    ok = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True,
                        env={"PATH": "/usr/bin:/bin:/usr/local/bin", **REQUIRED_ENV})
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin:/usr/local/bin"})
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr  # secrets have no defaults


def test_every_service_the_issue_names_is_there_with_a_healthcheck(compose: dict) -> None:
    services = compose["services"]
    assert {"redis", "minio", "create-bucket", "postgres", "api", "worker", "flower"} <= set(services)
    for name in ("redis", "minio", "postgres", "api", "worker", "flower"):
        assert "test" in services[name]["healthcheck"], name


def test_redis_keeps_an_append_only_file(compose: dict) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_bucket_is_created_before_api_and_worker_start(compose: dict) -> None:
    services = compose["services"]
    script = services["create-bucket"]["volumes"][0].split(":")[0]
    assert (REPO / script).is_file() and "mc mb --ignore-existing" in (REPO / script).read_text()
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["create-bucket"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == deps["postgres"]["condition"] == "service_healthy"


def test_worker_reserves_an_nvidia_gpu_and_builds_on_cuda(compose: dict) -> None:
    worker = compose["services"]["worker"]
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    dockerfile = (REPO / worker["build"]["dockerfile"]).read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+-runtime", dockerfile, re.M) and "onnxruntime-gpu" in dockerfile


def test_api_and_worker_are_configured_only_by_env(compose: dict) -> None:
    for name in ("api", "worker"):
        env = compose["services"][name]["environment"]
        assert env["LABELFORGE_BROKER_URL"].startswith("redis://redis:6379")
        assert env["LABELFORGE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["LABELFORGE_S3_ENDPOINT"] == "minio:9000"
        # secrets come from the caller's environment and have no default to fall back on
        for key in ("LABELFORGE_S3_SECRET_KEY", "LABELFORGE_API_KEYS"):
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", env[key]), (name, key)
        assert "volumes" not in compose["services"][name]  # no config files mounted in
    assert compose["services"]["api"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    api_cmd = (REPO / "deploy/Dockerfile.api").read_text()
    assert "service.api.main:create_app" in api_cmd and "--factory" in api_cmd
