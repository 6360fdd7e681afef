"""`labelforge render`: contact sheets, WebDataset shards the stock reader loads, clear refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from typer.testing import CliRunner

from models.layouts import DIGITS, FACES
from service.cli import app

torch.set_num_threads(2)
runner = CliRunner()


def render(*args: str):
    return runner.invoke(app, ["render", "--device", "cpu", *args])


def test_digits_contact_sheet_is_a_grid_png(tmp_path: Path):
    out = tmp_path / "sheet.png"
    result = render("--layout", "digits", "--count", "16", "--size", "24", "--out", str(out))
    assert result.exit_code == 0, result.output
    with Image.open(out) as sheet:
        assert sheet.size == (4 * 26 + 2, 4 * 26 + 2)  # 4×4 tiles of 24px with 2px padding
        pixels = np.asarray(sheet.convert("L"), dtype=np.float32)
    assert pixels.std() > 20  # drawn strokes, not a blank page


def test_digits_shards_read_back_with_stock_webdataset(tmp_path: Path):
    result = render("--layout", "digits", "--count", "10", "--size", "16", "--seed", "4",
                    "--shards", str(tmp_path / "a"), "--shard-size", "4")
    assert result.exit_code == 0, result.output
    tars = sorted((tmp_path / "a").glob("*.tar"))
    assert [t.name for t in tars] == ["digits-000000.tar", "digits-000001.tar", "digits-000002.tar"]

    dataset = wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode("l")
    samples = list(dataset)
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(10)]
    for s in samples:
        image, labels, meta = s["png"], s["labels.npy"], s["json"]
        assert image.shape == (16, 16) and image.max() > 0.5  # greyscale render with ink
        assert labels.dtype == np.float32 and labels.shape == (DIGITS.dim,)
        assert meta["digit"] == int(labels[:10].argmax()) == int(s["cls"])
        assert meta["rotation_deg"] == pytest.approx(12.0 * float(labels[10]), rel=1e-5)

    # Same options → same bytes, whatever the shard size of an earlier run.
    again = render("--layout", "digits", "--count", "10", "--size", "16", "--seed", "4",
                   "--shards", str(tmp_path / "b"), "--shard-size", "4")
    assert again.exit_code == 0
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tmp_path / "b").glob("*.tar"))]
    assert digest == [hashlib.sha256(p.read_bytes()).hexdigest() for p in tars]


SHEET = "{sheet}"  # replaced by a path under tmp_path


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--layout", "cats", "--out", SHEET], "--layout"),
        (["--layout", "digits", "--size", "0", "--out", SHEET], "--size"),
        (["--layout", "digits", "--count", "0", "--out", SHEET], "--count"),
        (["--layout", "digits", "--mode", "photo", "--out", SHEET], "--mode"),
        (["--layout", "digits"], "--out"),  # nothing to write
        (["--layout", "faces", "--size", "4", "--out", SHEET], "size"),  # below the face renderer's minimum
    ],
)
def test_bad_options_exit_2_naming_the_option(tmp_path: Path, args: list[str], needle: str):
    sheet = tmp_path / "s.png"
    result = render(*[str(sheet) if a == SHEET else a for a in args])
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output
    assert not sheet.exists()


def test_faces_photo_shards_carry_the_400_label_vector(tmp_path: Path):
    result = render("--layout", "faces", "--mode", "photo", "--count", "3", "--size", "32",
                    "--shards", str(tmp_path), "--out", str(tmp_path / "sheet.png"))
    assert result.exit_code == 0, result.output
    samples = list(wds.WebDataset(str(tmp_path / "faces-000000.tar"), shardshuffle=False).decode("rgb"))
    assert len(samples) == 3
    for s in samples:
        assert s["png"].shape == (32, 32, 3)
        assert s["labels.npy"].shape == (FACES.dim,)
        assert len(s["json"]["shape"]) == 199 and isinstance(s["json"]["yaw_deg"], float)
        assert "cls" not in s  # no categorical field in the faces layout
    assert (tmp_path / "sheet.png").exists()
