"""Face model: BFM2009/BFM2017 loaders read the same model into one FaceModel; the built-in one is sane."""

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from models.bfm import load_bfm2017
from models.face_model import builtin_face_model, load_face_model


@pytest.fixture(scope="module")
def tiny_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    v, k = 40, 5
    mean_um = rng.normal(size=(v, 3)) * 50_000.0  # µm, like BFM2009
    pcs, _ = np.linalg.qr(rng.normal(size=(3 * v, k)))
    tpcs, _ = np.linalg.qr(rng.normal(size=(3 * v, k)))
    return {"mean": mean_um.ravel(), "pcs": pcs, "std": np.array([5e4, 3e4, 2e4, 1e4, 5e3]),
            "tmean": rng.uniform(0, 255, 3 * v), "tpcs": tpcs, "tstd": np.array([30.0, 20, 10, 5, 2]),
            "tri": rng.integers(0, v, size=(60, 3))}


def test_bfm2009_and_bfm2017_files_load_into_the_same_model(tiny_model, tmp_path) -> None:
    m = tiny_model
    scipy.io.savemat(tmp_path / "01_MorphableModel.mat", {
        "shapeMU": m["mean"][:, None], "shapePC": m["pcs"], "shapeEV": m["std"][:, None],
        "texMU": m["tmean"][:, None], "texPC": m["tpcs"], "texEV": m["tstd"][:, None], "tl": m["tri"] + 1})
    with h5py.File(tmp_path / "model2017.h5", "w") as h:  # mm, colours in [0, 1], σ-scaled basis, σ²
        h["shape/model/mean"] = m["mean"] / 1000
        h["shape/model/pcaBasis"] = m["pcs"] * (m["std"] / 1000)
        h["shape/model/pcaVariance"] = (m["std"] / 1000) ** 2
        h["color/model/mean"] = m["tmean"] / 255
        h["color/model/pcaBasis"] = m["tpcs"]
        h["color/model/pcaVariance"] = (m["tstd"] / 255) ** 2
        h["shape/representer/cells"] = m["tri"].T
    a, b = load_face_model(tmp_path / "01_MorphableModel.mat"), load_bfm2017(tmp_path / "model2017.h5")
    assert a.shape_basis.shape == (199, 40, 3) and a.texture_basis.shape == (199, 40, 3)
    for field in ("mean_shape", "shape_basis", "shape_std", "mean_texture", "texture_basis", "texture_std"):
        assert torch.allclose(getattr(a, field), getattr(b, field), atol=1e-4), field
    assert torch.equal(a.triangles, b.triangles)
    assert a.shape_std[5:].abs().max() == 0  # padded components do nothing
    assert a.mean_shape[:, 1].max() - a.mean_shape[:, 1].min() == pytest.approx(2.0, rel=1e-4)
    assert 0 <= a.mean_texture.min() and a.mean_texture.max() <= 1


def test_builtin_model_is_symmetric_with_decreasing_orthonormal_components() -> None:
    m = builtin_face_model()
    assert m.shape_basis.shape[0] == 199 and m.texture_basis.shape[0] == 199
    assert torch.all(m.shape_std[:-1] >= m.shape_std[1:]) and torch.all(m.texture_std[:-1] >= m.texture_std[1:])
    flat = m.shape_basis.reshape(199, -1).double()
    assert torch.allclose(flat @ flat.T, torch.eye(199, dtype=torch.float64), atol=1e-4)
    mirrored = m.mean_shape * torch.tensor([-1.0, 1.0, 1.0])
    dist = torch.cdist(mirrored.double(), m.mean_shape.double(), compute_mode="donot_use_mm_for_euclid_dist").amin(1)
    assert dist.max() < 1e-4  # every vertex has a mirror twin
