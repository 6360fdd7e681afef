"""The endpoints behind the web console, against `labelforge serve` with the tiny bundles: the console
page and its assets (no network references), the spec's JSON Schema, `POST /preview` (exactly the
dataset's first samples) and `POST /render` (the generator at a fixed z), and their 4xx answers."""

from __future__ import annotations

import base64
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from service_helpers import Server, wait_job

from models.sampling import SamplingPlan
from models.spec import DatasetSpec, resolve_labels
from service.web import STATIC

DIGITS, FACES = "tiny-digits", "tiny-faces"


def face_spec(**extra: object) -> dict:
    return {"name": "console-faces", "bundle": FACES, "count": 6, "shard_size": 6, "seed": 3,
            "image": {"format": "png"}, "labels": {"yaw_deg": {"uniform": {"low": -20, "high": 20}}}, **extra}


def data_url_bytes(url: str, mime: str) -> bytes:
    head, _, data = url.partition(",")
    assert head == f"data:{mime};base64"
    return base64.b64decode(data)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_console_page_and_its_modules_are_served_and_reference_nothing_remote(embedded: Server) -> None:
    with embedded.client() as http:
        page = http.get("/", headers={"Authorization": ""})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'src="console/js/app.js"' in page.text
        seen, todo = set(), ["js/app.js"]
        while todo:  # every ES module the console imports, transitively
            rel = todo.pop()
            seen.add(rel)
            res = http.get(f"/console/{rel}")
            assert res.status_code == 200 and "javascript" in res.headers["content-type"], rel
            base = Path(rel).parent
            for imp in re.findall(r'from "(\.{1,2}/[^"]+)"', res.text):
                target = "/".join(_norm(base / imp))
                if target not in seen:
                    todo.append(target)
        assert {"js/views/create.js", "js/views/predict.js", "js/views/explore.js", "js/schema-form.js"} <= seen
        assert http.get("/console/console.css").status_code == 200
        assert http.get("/console/nope.js").status_code == 404
        assert "/" not in http.get("/openapi.json").json()["paths"]
    remote = re.compile(r"""(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(\s*['"]?(https?:|//)""", re.I)
    for path in STATIC.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".js", ".css", ".svg"):
            text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")  # a namespace name, not fetched
            hits = [m.group(0) for m in remote.finditer(text)]
            assert not hits, f"{path.name} references the network: {hits}"


def _norm(path: Path) -> list[str]:
    parts: list[str] = []
    for p in path.parts:
        if p == "..":
            parts.pop()
        elif p != ".":
            parts.append(p)
    return parts


def test_spec_schema_is_the_datasetspec_json_schema(embedded: Server) -> None:
    with embedded.client() as http:
        doc = http.get("/schemas/dataset-spec").json()
        assert http.get("/schemas/dataset-spec", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert doc["name"] == "DatasetSpec" and doc["json_schema"] == DatasetSpec.model_json_schema()
    assert doc["json_schema"]["examples"], "the console fills its form from the schema's examples"


def test_preview_is_exactly_the_first_samples_of_the_dataset(embedded: Server) -> None:
    body = face_spec(extras=["sim"])
    with embedded.client() as http:
        preview = http.post("/preview", params={"samples": 4}, json=body)
        assert preview.status_code == 200, preview.text
        res = preview.json()
        assert http.get("/datasets").json()["count"] == 0, "a preview stores no job"
        job = http.post("/datasets", json=body).json()
        assert wait_job(http, "datasets", job["id"], embedded)["status"] == "succeeded"
        shard = http.get(f"/datasets/{job['id']}/shards").json()["items"][0]
        tar = tarfile.open(fileobj=io.BytesIO(http.get(shard["url"]).content))
    assert res["bundle"] == FACES and res["format"] == "png" and res["image_size"] == 16
    assert [s["index"] for s in res["samples"]] == [0, 1, 2, 3]
    for s in res["samples"]:
        key = f"{s['index']:09d}"
        assert data_url_bytes(s["image"], "image/png") == tar.extractfile(f"{key}.png").read()
        assert data_url_bytes(s["sim"], "image/png") == tar.extractfile(f"{key}.sim.png").read()
        assert -20 <= s["fields"]["yaw_deg"] <= 20 and len(s["fields"]["shape"]) == 199


def test_preview_caps_size_and_encodes_in_the_specs_format(embedded: Server) -> None:
    with embedded.client() as http:
        res = http.post("/preview", params={"samples": 16},
                        json=face_spec(count=40, shard_size=10, image={"format": "jpg", "size": 600})).json()
    assert len(res["samples"]) == 16 and res["image_size"] == 256 and res["format"] == "jpg"
    assert pixels(data_url_bytes(res["samples"][0]["image"], "image/jpeg")).shape == (256, 256, 3)
    assert res["samples"][0]["sim"] is None


@pytest.mark.parametrize(("body", "params", "code", "loc", "says"), [
    (face_spec(bundle="faces-x"), {}, 422, ["body", "bundle"], "available: tiny-digits, tiny-faces"),
    (face_spec(labels={"mouth": {"fixed": 1}}), {}, 422, ["body", "labels", "mouth"], "unknown field"),
    (face_spec(labels={"shape[300]": {"fixed": 1}}), {}, 422, ["body", "labels", "shape[300]"], "out of range"),
    (face_spec(labels={"yaw_deg": {"uniform": {"low": 5, "high": 1}}}), {}, 422, ["body", "labels", "yaw_deg", "uniform"], "low > high"),
    (face_spec(shard_size=60), {}, 422, ["body", "shard_size"], "larger than count"),
    ({**face_spec(), "bundle": DIGITS, "labels": {"digit": {"fixed": 12}}}, {}, 422, ["body", "labels", "digit"], "class 12"),
    (face_spec(), {"samples": 17}, 422, ["query", "samples"], "less than or equal to 16"),
    (face_spec(), {"samples": 0}, 422, ["query", "samples"], "greater than or equal to 1"),
])
def test_preview_names_the_bad_field(embedded: Server, body: dict, params: dict, code: int, loc: list, says: str) -> None:
    with embedded.client() as http:
        res = http.post("/preview", params=params, json=body)
    assert res.status_code == code, res.text
    detail = res.json()["detail"]
    assert detail[0]["loc"] == loc and says in detail[0]["msg"], detail


def test_preview_refuses_without_key_non_json_and_oversized_specs(embedded: Server) -> None:
    with embedded.client() as http:
        assert http.post("/preview", json=face_spec(), headers={"Authorization": ""}).status_code == 401
        wrong = http.post("/preview", content=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert wrong.status_code == 415 and "application/json" in wrong.json()["detail"]
        padded = json.dumps(face_spec()) + " " * 70_000  # valid JSON, over the 64 KiB spec limit
        huge = http.post("/preview", content=padded.encode(), headers={"Content-Type": "application/json"})
        assert huge.status_code == 413 and "LABELFORGE_MAX_SPEC_BYTES" in huge.json()["detail"]


def _expected_render(bundle, labels: dict[str, float], seed: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """G(z, l) computed here: l from the layout (unset fields at the centre), z = sample 0's noise for `seed`."""
    layout = bundle.layout
    vec = layout.from_named({k: v for k, v in labels.items() if "[" not in k}, fill_missing=True)
    for key, value in labels.items():
        if "[" in key:
            name, slot = key[:-1].split("[")
            vec[layout[name].start + int(slot)] = layout[name].to_standardized(value)
    z = SamplingPlan(resolve_labels({}, layout), seed, bundle.nz).noise(torch.zeros(1, dtype=torch.long))
    image = bundle.generate(z, torch.from_numpy(vec)[None])[0]
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def test_render_is_the_generator_at_the_seeds_fixed_z(embedded: Server, tiny_faces_bundle) -> None:  # type: ignore[no-untyped-def]
    labels = {"yaw_deg": 20.0, "pitch_deg": -6.0, "shape[1]": 1.5}
    with embedded.client() as http:
        first = http.post("/render", json={"bundle": FACES, "labels": labels, "seed": 5}).json()
        again = http.post("/render", json={"bundle": FACES, "labels": labels, "seed": 5}).json()
        turned = http.post("/render", json={"bundle": FACES, "labels": {**labels, "yaw_deg": -40}, "seed": 5}).json()
        other_z = http.post("/render", json={"bundle": FACES, "labels": labels, "seed": 6, "simulator": False}).json()
    got = pixels(data_url_bytes(first["image"], "image/png"))
    want = _expected_render(tiny_faces_bundle, labels, 5)
    assert got.shape == (16, 16, 3) and np.abs(got.astype(int) - want.astype(int)).max() <= 1  # ONNX vs TorchScript
    assert first["image"] == again["image"], "same labels and seed, same image"
    assert turned["image"] != first["image"] and other_z["image"] != first["image"]
    assert first["fields"]["yaw_deg"] == pytest.approx(20.0) and first["fields"]["shape"][1] == pytest.approx(1.5)
    assert first["fields"]["shape"][0] == 0.0 and first["fields"]["texture"] == [0.0] * 199
    assert pixels(data_url_bytes(first["simulator"], "image/png")).shape == (16, 16, 3)
    assert other_z["simulator"] is None and other_z["seed"] == 6


def test_render_digits_by_class(embedded: Server) -> None:
    with embedded.client() as http:
        three = http.post("/render", json={"bundle": DIGITS, "labels": {"digit": 3, "thickness": 0.1}}).json()
        seven = http.post("/render", json={"bundle": DIGITS, "labels": {"digit": 7, "thickness": 0.1}}).json()
    assert three["fields"]["digit"] == 3 and seven["fields"]["digit"] == 7
    assert three["fields"]["thickness"] == pytest.approx(0.1) and three["fields"]["scale"] == pytest.approx(0.85)
    assert pixels(data_url_bytes(three["image"], "image/png")).shape == (16, 16)
    assert three["image"] != seven["image"]


@pytest.mark.parametrize(("body", "loc", "says"), [
    ({"bundle": FACES, "labels": {"mouth": 1.0}}, ["body", "labels", "mouth"], "unknown field"),
    ({"bundle": FACES, "labels": {"shape[199]": 1.0}}, ["body", "labels", "shape[199]"], "out of range"),
    ({"bundle": FACES, "labels": {"yaw_deg[0]": 1.0}}, ["body", "labels", "yaw_deg[0]"], "not a vector field"),
    ({"bundle": FACES, "labels": {"shape": [1.0, 2.0]}}, ["body", "labels", "shape"], "199 slots"),
    ({"bundle": DIGITS, "labels": {"digit": 2.5}}, ["body", "labels", "digit"], "not an integer"),
    ({"bundle": FACES, "labels": {"yaw_deg": "left"}}, ["body", "labels", "yaw_deg"], "valid number"),
    ({"bundle": FACES, "labels": {"Yaw": 1.0}}, ["body", "labels", "Yaw"], "pattern"),
    ({"bundle": "faces-x"}, ["body", "bundle"], "available: tiny-digits, tiny-faces"),
    ({"bundle": FACES, "seed": -1}, ["body", "seed"], "greater than or equal to 0"),
    ({"bundle": FACES, "zoom": 2}, ["body", "zoom"], "Extra inputs"),
])
def test_render_names_the_bad_field(embedded: Server, body: dict, loc: list, says: str) -> None:
    with embedded.client() as http:
        res = http.post("/render", json=body)
    assert res.status_code == 422, res.text
    detail = res.json()["detail"]
    assert detail[0]["loc"][:len(loc)] == loc and says in detail[0]["msg"], detail


def test_render_needs_a_key_and_defaults_to_the_faces_bundle(embedded: Server) -> None:
    with embedded.client() as http:
        assert http.post("/render", json={}, headers={"Authorization": ""}).status_code == 401
        res = http.post("/render", json={})
    assert res.status_code == 200 and res.json()["bundle"] == FACES


def test_openapi_documents_the_console_endpoints(embedded: Server) -> None:
    with embedded.client() as http:
        spec = http.get("/openapi.json").json()
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    ok = {p: paths[p][m]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
          for p, m in (("/preview", "post"), ("/render", "post"), ("/schemas/dataset-spec", "get"))}
    assert ok == {"/preview": "PreviewResponse", "/render": "RenderResponse", "/schemas/dataset-spec": "SpecSchemaDocument"}
    assert paths["/render"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("RenderRequest")
    assert paths["/preview"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("DatasetSpec")
    assert {"PreviewSample", "RenderRequest"} <= set(schemas) and "422" in paths["/render"]["post"]["responses"]
