"""Schemathesis over the served OpenAPI spec: every operation, authenticated, every phase (examples,
coverage, fuzzing, stateful through the spec's links), every check: 0 server errors, 0 schema violations.

One check is left out: `positive_data_acceptance` (a schema-valid request must be accepted). The bodies
carry things a schema cannot state: base64 that must decode to an image, archives of images, label
field names that depend on the bundle, storage keys that must exist. Refusing those is the 4xx the
bad-input catalogue asks for; every refusal must still be documented and well-formed, which the
other checks verify.

The quick run (3 examples per operation, no coverage phase) is in the default suite; `make fuzz` runs
the thorough one (every phase, LABELFORGE_FUZZ_EXAMPLES examples per operation, default 50). The server's bundles are named like the spec's examples (`faces-m`, `digits`) so the examples
and the stateful phase reach real jobs.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.report import record
from tests.service.service_helpers import BIN, FAST, KEY_B, Proc, Server, free_port, wait_http

CONFIG = Path(__file__).with_name("schemathesis.toml")
HANG_S = 30  # seconds; a slower answer counts as a hang (speed itself is measured in bench/, not here)
THOROUGH_EXAMPLES = int(os.environ.get("LABELFORGE_FUZZ_EXAMPLES", "50"))


@pytest.fixture(scope="module")
def fuzz_server(tiny_bundle_dir: Path, tiny_faces_bundle_dir: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    bundles = tmp / "bundles"
    bundles.mkdir()
    (bundles / "digits").symlink_to(tiny_bundle_dir, target_is_directory=True)
    (bundles / "faces-m").symlink_to(tiny_faces_bundle_dir, target_is_directory=True)
    port = free_port()
    env = {**FAST, "LABELFORGE_DATA_DIR": str(tmp / "data"), "LABELFORGE_DATABASE_URL": f"sqlite:///{tmp}/data/lf.db",
           "LABELFORGE_BROKER_URL": "filesystem://", "LABELFORGE_BUNDLES_DIR": str(bundles),
           "LABELFORGE_API_KEYS": KEY_B, "LABELFORGE_MAX_UPLOAD_MB": "2", "LABELFORGE_MAX_COUNT": "10000"}
    proc = Proc([str(BIN / "labelforge"), "serve", "--port", str(port)], env, tmp / "serve.log", cwd=tmp)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield Server(f"http://127.0.0.1:{port}", [KEY_B], env, tmp / "data", [proc])
    finally:
        proc.stop()


def run_schemathesis(server: Server, workdir: Path, examples: int, phases: str) -> dict[str, int | str]:
    """Run the CLI against `server`; returns the figures of its summary. Fails with the report on any failure."""
    cmd = [str(BIN / "schemathesis"), "--config-file", str(CONFIG), "--no-color", "run", f"{server.url}/openapi.json",
           "-H", f"Authorization: Bearer {server.keys[0]}", "--checks", "all",
           "--exclude-checks", "positive_data_acceptance", "--max-examples", str(examples), "--phases", phases,
           "--workers", "1",
           "--seed", "20261123", "--generation-database", "none", "--continue-on-failure",
           "--request-timeout", "60", "--max-response-time", str(HANG_S), "--report", "ndjson", "--report-dir", str(workdir / "report")]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1800)
    out = done.stdout + done.stderr
    generated = re.search(r"(\d+) generated", out)
    operations = re.search(r"Tested: (\d+)", out)
    server_log = server.procs[0].log()
    figures: dict[str, int | str] = {"examples_per_operation": examples, "phases": phases, "operations": int(operations[1]) if operations else 0,
               "test_cases": int(generated[1]) if generated else 0, "server_tracebacks": server_log.count("Traceback"),
               "exit_code": done.returncode}
    assert done.returncode == 0, f"schemathesis found problems:\n{out[-12000:]}"
    assert figures["server_tracebacks"] == 0, server_log[-6000:]
    spec = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert figures["operations"] == sum(len(ops) for ops in spec["paths"].values()), out[-3000:]
    return figures


def test_fuzz_quick_every_endpoint(fuzz_server: Server, tmp_path: Path) -> None:
    figures = run_schemathesis(fuzz_server, tmp_path, examples=3, phases="examples,fuzzing,stateful")
    record("fuzz_quick", "schemathesis (examples, fuzzing and stateful phases, all checks but positive_data_acceptance) over every "
           "operation of the served API with an API key: exit 0, no 5xx, no undocumented status or "
           "response-schema violation, no traceback in the server log", **figures)


@pytest.mark.reliability
@pytest.mark.timeout(1800)
def test_fuzz_thorough_every_endpoint(fuzz_server: Server, tmp_path: Path) -> None:
    figures = run_schemathesis(fuzz_server, tmp_path, examples=THOROUGH_EXAMPLES,
                               phases="examples,coverage,fuzzing,stateful")
    record("fuzz", "schemathesis (all phases, all checks but positive_data_acceptance) over every "
           "operation of the served API with an API key: exit 0, no 5xx, no undocumented status or "
           "response-schema violation, no traceback in the server log", **figures)
