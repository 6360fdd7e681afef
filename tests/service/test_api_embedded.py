"""The embedded service end to end: `labelforge serve` (API + worker subprocess, folder broker, SQLite,
local storage) driven over HTTP like a user would, with the tiny bundles."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from service_helpers import Server, wait_job

from service.client import Client

DIGITS, FACES = "tiny-digits", "tiny-faces"


def spec(name: str = "digits-demo", count: int = 24, shard_size: int = 8, **extra: object) -> dict:
    return {"name": name, "bundle": DIGITS, "count": count, "shard_size": shard_size, "seed": 3,
            "image": {"format": "png"}, **extra}


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def generated_faces(bundle, n: int) -> tuple[np.ndarray, list[bytes]]:  # type: ignore[no-untyped-def]
    """n images from the faces bundle's generator as uint8 [n, S, S, 3] and PNG bytes."""
    g = torch.Generator().manual_seed(0)
    images = bundle.generate(torch.randn(n, bundle.nz, generator=g), torch.randn(n, bundle.layout.dim, generator=g))
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return pixels, [png(p) for p in pixels]


def job_files(server: Server, job_id: str) -> list[Path]:
    root = server.data_dir / "storage" / "tenants"
    return [p for p in root.rglob("*") if p.is_file() and job_id in p.parts] if root.exists() else []


def job_rows(server: Server, job_id: str) -> int:
    with sqlite3.connect(server.data_dir / "labelforge.db") as db:
        return sum(db.execute(f"SELECT COUNT(*) FROM {t} WHERE {c} = ?", (job_id,)).fetchone()[0]
                   for t, c in (("jobs", "id"), ("shard_tasks", "job_id")))


def test_serve_writes_a_private_key_file(embedded: Server) -> None:
    key_file = embedded.data_dir / "api_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(embedded.data_dir / "labelforge.db") as db:
        hashes = [row[0] for row in db.execute("SELECT key_hash FROM tenants")]
    assert embedded.keys[0] not in " ".join(hashes)  # only its hash is stored


def test_every_job_endpoint_needs_a_valid_key(embedded: Server) -> None:
    import httpx

    for method, path in [("GET", "/datasets"), ("POST", "/datasets"), ("GET", "/labeling-jobs"),
                         ("POST", "/predict"), ("GET", "/models"), ("GET", "/datasets/x/shards")]:
        missing = httpx.request(method, embedded.url + path)
        wrong = httpx.request(method, embedded.url + path, headers={"Authorization": "Bearer lf_not-a-key"})
        assert (missing.status_code, wrong.status_code) == (401, 401), path
        assert "Authorization" in missing.json()["detail"] and wrong.json()["detail"] == "invalid API key"


def test_dataset_round_trip_with_client_range_and_webdataset(embedded: Server, tmp_path: Path) -> None:
    with Client(embedded.url, embedded.keys[0]) as lf:
        job = lf.create_dataset(spec())
        assert job["status"] in ("queued", "running") and job["bundle"] == DIGITS
        done = lf.wait(job["id"], timeout_s=90, progress=False)
        assert done["progress"]["samples"] == {"done": 24, "total": 24}
        assert done["progress"]["shards"]["done"] == 3 and done["progress"]["fraction"] == 1.0
        shards = lf.shards(job["id"])
        assert [s["file"] for s in shards] == [f"digits-demo-{i:06d}.tar" for i in range(3)]
        assert all(not s["presigned"] and s["url"].startswith(embedded.url) for s in shards)
        paths = lf.download_shards(job["id"], tmp_path / "dl")
        manifest = lf.manifest(job["id"])
        assert [lf.job(j["id"])["id"] for j in lf.list_jobs()] == [job["id"]]
    for path, shard in zip(paths, manifest["shards"], strict=True):
        assert path.stat().st_size == shard.get("bytes", path.stat().st_size)
    samples = list(wds.WebDataset([str(p) for p in paths], shardshuffle=False).decode("l8"))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(24)]
    assert all(s["labels.npy"].shape == (16,) and s["png"].shape[:2] == (16, 16) for s in samples)
    assert all(s["json"]["index"] == int(s["__key__"]) for s in samples)
    with embedded.client() as http:  # HTTP Range on the API's shard URL
        whole = paths[0].read_bytes()
        part = http.get(shards[0]["url"], headers={"Range": "bytes=512-1023"})
        assert part.status_code == 206 and part.content == whole[512:1024]
        assert part.headers["content-range"] == f"bytes 512-1023/{len(whole)}"
        metrics = http.get("/metrics").text
    assert 'labelforge_jobs{kind="dataset",status="succeeded"} 1.0' in metrics
    assert 'labelforge_samples_generated{kind="dataset"} 24.0' in metrics
    assert 'labelforge_http_requests_total{method="POST",route="/datasets",status="202"}' in metrics


def test_tenants_see_only_their_own_jobs(embedded: Server) -> None:
    with embedded.client(1) as b, embedded.client(2) as c:
        job = b.post("/datasets", json=spec("b-private", count=8, shard_size=8)).json()
        wait_job(b, "datasets", job["id"], embedded)
        for path in ("", "/manifest", "/shards", "/card", "/shards/b-private-000000.tar"):
            assert c.get(f"/datasets/{job['id']}{path}").status_code == 404, path
        assert c.delete(f"/datasets/{job['id']}").status_code == 404
        assert c.get(f"/labeling-jobs/{job['id']}").status_code == 404  # right id, wrong kind
        assert job["id"] not in [j["id"] for j in c.get("/datasets").json()["items"]]
        assert b.get(f"/datasets/{job['id']}/shards").json()["count"] == 1  # still there for its owner


def test_delete_cancels_and_leaves_no_files_or_rows(embedded: Server) -> None:
    with embedded.client(1) as b:
        finished = b.post("/datasets", json=spec("to-delete", count=16, shard_size=8)).json()
        wait_job(b, "datasets", finished["id"], embedded)
        assert job_files(embedded, finished["id"]) and job_rows(embedded, finished["id"])
        running = b.post("/datasets", json=spec("to-cancel", count=4000, shard_size=100)).json()
        for job in (finished, running):
            gone = b.delete(f"/datasets/{job['id']}")
            assert gone.status_code == 200 and gone.json()["id"] == job["id"]
            assert b.get(f"/datasets/{job['id']}").status_code == 404
        time.sleep(3)  # a shard still running when the job was deleted must clean up after itself
        for job in (finished, running):
            assert job_files(embedded, job["id"]) == [] and job_rows(embedded, job["id"]) == 0


@pytest.mark.parametrize(("body", "loc"), [
    ({"name": "x", "bundle": DIGITS, "count": 0}, ["body", "count"]),
    ({"name": "x", "bundle": DIGITS, "count": 10, "shard_size": 20}, ["body", "shard_size"]),
    ({"name": "Bad Name", "bundle": DIGITS, "count": 10, "shard_size": 10}, ["body", "name"]),
    ({"name": "x", "bundle": "no-such-bundle", "count": 10, "shard_size": 10}, ["body", "bundle"]),
    ({"name": "x", "bundle": DIGITS, "count": 10, "shard_size": 10, "labels": {"yaw_deg": {"fixed": 1}}}, ["body", "labels", "yaw_deg"]),
    ({"name": "x", "bundle": DIGITS, "count": 10, "shard_size": 10, "labels": {"rotation_deg": {"uniform": {"low": 5, "high": 1}}}},
     ["body", "labels", "rotation_deg"]),
    ({"name": "x", "bundle": DIGITS, "count": 20_000_000}, ["body", "count"]),
])
def test_bad_specs_are_422_naming_the_field_and_leave_nothing(embedded: Server, body: dict, loc: list) -> None:
    with embedded.client(2) as c:
        before = c.get("/datasets").json()["count"]
        answer = c.post("/datasets", json=body)
        assert answer.status_code == 422
        locs = [e["loc"][: len(loc)] for e in answer.json()["detail"]]
        assert loc in locs, answer.json()
        assert c.get("/datasets").json()["count"] == before


def test_upload_and_format_limits(embedded: Server) -> None:
    with embedded.client(2) as c:
        big = c.post("/predict", files={"files": ("big.png", b"\0" * (3 * 1024 * 1024))})
        assert big.status_code == 413 and "MAX_UPLOAD_MB" in big.json()["detail"]
        text = c.post("/predict", files={"files": ("notes.txt", b"hello, not an image")})
        assert text.status_code == 415 and text.json()["detail"].startswith("files[0]")
        wrong_type = c.post("/predict", content=b"raw bytes", headers={"content-type": "image/png"})
        assert wrong_type.status_code == 415
        not_archive = c.post("/labeling-jobs", params={"bundle": FACES}, files={"file": ("x.tar", b"nope" * 100)})
        assert not_archive.status_code == 415
        before = c.get("/labeling-jobs").json()["count"]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            info = tarfile.TarInfo("../escape.png")
            info.size = 4
            tf.addfile(info, io.BytesIO(b"\x89PNG"))
        traversal = c.post("/labeling-jobs", params={"bundle": FACES}, files={"file": ("x.tar", buf.getvalue())})
        assert traversal.status_code == 422 and "../escape.png" in json.dumps(traversal.json())
        assert c.get("/labeling-jobs").json()["count"] == before


def test_predict_matches_the_bundle_for_faces_and_digits(embedded: Server, tiny_faces_bundle, tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    pixels, pngs = generated_faces(tiny_faces_bundle, 3)
    with embedded.client(0) as http:
        multipart = http.post("/predict", params={"bundle": FACES},
                              files=[("files", (f"f{i}.png", b, "image/png")) for i, b in enumerate(pngs)])
        assert multipart.status_code == 200, multipart.text
        as_json = http.post("/predict", json={"images": [base64.b64encode(pngs[0]).decode()], "bundle": FACES,
                                              "render": True})
        digits = http.post("/predict", params={"bundle": DIGITS}, files={"files": ("d.png", png(pixels[0, :, :, 0]))})
    body = multipart.json()
    assert body["bundle_sha"] == tiny_faces_bundle.sha and len(body["predictions"]) == 3
    expected = tiny_faces_bundle.predict(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255)[1].numpy()
    for pred, want in zip(body["predictions"], expected, strict=True):
        assert len(pred["labels"]) == 400 and len(pred["shape"]) == 199 and len(pred["texture"]) == 199
        np.testing.assert_allclose(pred["labels"], want, atol=1e-3)
        assert pred["yaw_deg"] == pytest.approx(30.0 * pred["labels"][398], abs=1e-6)
        assert pred["pitch_deg"] == pytest.approx(15.0 * pred["labels"][399], abs=1e-6)
    single = as_json.json()["predictions"][0]
    np.testing.assert_allclose(single["labels"], body["predictions"][0]["labels"], atol=1e-5)
    rendered = Image.open(io.BytesIO(base64.b64decode(single["render_png_base64"])))
    assert rendered.size == (16, 16) and rendered.mode == "RGB"
    digit = digits.json()["predictions"][0]
    assert digit["shape"] is None and len(digit["labels"]) == 16 and digit["fields"]["digit"] in range(10)


def test_labeling_job_round_trip(embedded: Server, tiny_faces_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pixels, pngs = generated_faces(tiny_faces_bundle, 5)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, data in enumerate(pngs):
            zf.writestr(f"photos/p{i}.png", data)
    with Client(embedded.url, embedded.keys[0]) as lf:
        job = lf.create_labeling_job(buf.getvalue(), bundle=FACES, name="my-photos")
        done = lf.wait(job["id"], kind="labeling-jobs", timeout_s=90, progress=False)
        assert done["progress"]["samples"] == {"done": 5, "total": 5}
        paths = lf.download_shards(job["id"], tmp_path, kind="labeling-jobs")
        assert lf.manifest(job["id"], kind="labeling-jobs")["count"] == 5
    samples = list(wds.WebDataset([str(p) for p in paths], shardshuffle=False).decode("rgb8"))
    expected = tiny_faces_bundle.predict(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255)[1].numpy()
    assert len(samples) == 5
    for s, want in zip(samples, expected, strict=True):
        assert s["png"].shape == (16, 16, 3) and s["labels.npy"].shape == (400,)
        np.testing.assert_allclose(s["labels.npy"], want, atol=1e-3)
        assert set(s["json"]) >= {"shape", "texture", "yaw_deg", "pitch_deg"}


def test_models_lists_the_bundles_with_layouts(embedded: Server) -> None:
    with embedded.client(0) as http:
        models = {m["name"]: m for m in http.get("/models").json()["items"]}
    assert set(models) == {DIGITS, FACES}
    assert models[FACES]["layout"]["dim"] == 400 and models[DIGITS]["layout"]["dim"] == 16
    assert models[FACES]["trained"] is False and len(models[FACES]["sha"]) == 64


def test_stopping_serve_stops_its_worker(bundles_dir: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    from service_helpers import BIN, FAST, Proc, free_port, wait_http

    port = free_port()
    env = {**FAST, "LABELFORGE_DATA_DIR": str(tmp_path / "data"), "LABELFORGE_BUNDLES_DIR": str(bundles_dir),
           "LABELFORGE_DATABASE_URL": f"sqlite:///{tmp_path}/data/labelforge.db"}
    serve = Proc([str(BIN / "labelforge"), "serve", "--port", str(port)], env, tmp_path / "serve.log", cwd=tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", serve)
        children = subprocess.run(["pgrep", "-P", str(serve.proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 1  # the worker
        os.kill(serve.proc.pid, signal.SIGTERM)  # only the API process, as a service manager would
        serve.proc.wait(40)
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{children[0]}") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not os.path.exists(f"/proc/{children[0]}"), "worker outlived labelforge serve"
    finally:
        serve.stop()
