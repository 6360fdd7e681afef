"""Label layouts: what each slot of a label vector means.

A label is a float32 vector in *standardized* units: every continuous field is N(0, 1) under its
prior and every categorical field is one-hot. Networks only ever see that vector. People and the API
speak *human* units (degrees, σ of a principal component, fractions of the image), so a `LabelLayout`
converts both ways and names the offending field whenever a conversion is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

FieldKind = Literal["continuous", "categorical"]


class LayoutError(ValueError):
    """A label value that does not fit its layout. `field` names the culprit for API/CLI messages."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class LabelField:
    """One named field: a slice of the label vector.

    For continuous fields: human = offset + scale · standardized (elementwise), prior N(0, 1).
    For categorical fields the slice is one-hot over `size` classes; the human value is the class index.
    """

    name: str  # key used in the API, CLI and shard `.json` (e.g. "yaw_deg", "shape", "digit")
    start: int  # first index in the vector
    size: int  # number of slots
    kind: FieldKind = "continuous"
    unit: str = "σ"  # human unit ("deg", "σ", "frac of image", "class")
    scale: float = 1.0  # human units per standard deviation
    offset: float = 0.0  # human value at standardized 0
    description: str = ""

    @property
    def stop(self) -> int:
        return self.start + self.size

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def is_vector(self) -> bool:
        """Continuous fields with several slots (shape, texture) are addressed as a whole or as `name[i]`."""
        return self.kind == "continuous" and self.size > 1

    def to_human(self, standardized: np.ndarray) -> np.ndarray:
        """[..., size] standardized → [..., size] human (continuous) or [...] class index (categorical)."""
        if self.kind == "categorical":
            return standardized.argmax(axis=-1)
        return self.offset + self.scale * standardized

    def to_standardized(self, human: np.ndarray | float | np.number) -> np.ndarray:
        """Human value(s) → standardized slots; validates finiteness and class range."""
        arr = np.asarray(human, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise LayoutError(self.name, "must be a finite number (got NaN or infinity)")
        if self.kind == "categorical":
            if np.any(arr != np.round(arr)) or np.any(arr < 0) or np.any(arr >= self.size):
                raise LayoutError(self.name, f"must be an integer class in [0, {self.size - 1}]")
            return np.eye(self.size, dtype=np.float32)[arr.astype(np.int64)]
        return ((arr - self.offset) / self.scale).astype(np.float32)


@dataclass(frozen=True)
class LabelLayout:
    """Ordered named fields covering a label vector of `dim` slots exactly once."""

    name: str
    fields: tuple[LabelField, ...]
    parts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # loss-reporting groups

    def __post_init__(self) -> None:
        cursor = 0
        names: set[str] = set()
        for f in self.fields:
            if f.start != cursor:
                raise ValueError(f"layout {self.name}: field {f.name} starts at {f.start}, expected {cursor}")
            if f.name in names:
                raise ValueError(f"layout {self.name}: duplicate field {f.name}")
            names.add(f.name)
            cursor = f.stop

    @property
    def dim(self) -> int:
        return self.fields[-1].stop

    def __getitem__(self, name: str) -> LabelField:
        for f in self.fields:
            if f.name == name:
                return f
        raise LayoutError(name, f"unknown field; layout '{self.name}' has {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def part_slices(self) -> dict[str, list[slice]]:
        """Slices per reporting part (e.g. shape / texture / angles), for per-part label losses."""
        groups = self.parts or {f.name: (f.name,) for f in self.fields}
        return {part: [self[n].slice for n in members] for part, members in groups.items()}

    def to_named(self, labels: np.ndarray | torch.Tensor) -> list[dict[str, object]]:
        """[B, dim] standardized → one dict per row in human units (lists for vector fields)."""
        arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.shape[-1] != self.dim:
            raise LayoutError("labels", f"expected {self.dim} values for layout '{self.name}', got {arr.shape[-1]}")
        out: list[dict[str, object]] = []
        for row in arr.astype(np.float64):
            named: dict[str, object] = {}
            for f in self.fields:
                human = f.to_human(row[f.slice])
                if f.kind == "categorical":
                    named[f.name] = int(human)
                elif f.size == 1:
                    named[f.name] = float(human[0])
                else:
                    named[f.name] = [float(v) for v in human]
            out.append(named)
        return out

    def from_named(self, named: Mapping[str, object], *, fill_missing: bool = False) -> np.ndarray:
        """Human-unit dict → standardized [dim] float32. Unknown or malformed fields raise `LayoutError`.

        Missing fields raise unless `fill_missing`, in which case they take the prior's centre
        (0 for continuous, class 0 for categorical), which is what a round trip of partial input needs.
        """
        known = set(self.names)
        for key in named:
            if key not in known:
                raise LayoutError(key, f"unknown field; layout '{self.name}' has {', '.join(self.names)}")
        vec = np.zeros(self.dim, dtype=np.float32)
        for f in self.fields:
            if f.name not in named:
                if not fill_missing:
                    raise LayoutError(f.name, "missing")
                if f.kind == "categorical":
                    vec[f.start] = 1.0
                continue
            value = named[f.name]
            if f.kind == "categorical" or f.size == 1:
                if isinstance(value, (list, tuple, np.ndarray)) or isinstance(value, bool) or not isinstance(
                    value, (int, float, np.integer, np.floating)
                ):
                    raise LayoutError(f.name, "must be a single number")
            else:
                arr = np.asarray(value, dtype=object)
                if arr.ndim != 1 or len(arr) != f.size:
                    raise LayoutError(f.name, f"must be a list of {f.size} numbers")
                try:
                    value = np.asarray(value, dtype=np.float64)
                except (TypeError, ValueError):
                    raise LayoutError(f.name, f"must be a list of {f.size} numbers") from None
            vec[f.slice] = f.to_standardized(value)
        return vec

    def describe(self) -> dict[str, object]:
        """JSON-ready description, stored in bundle manifests and served by `GET /models`."""
        return {
            "name": self.name,
            "dim": self.dim,
            "fields": [
                {
                    "name": f.name,
                    "start": f.start,
                    "size": f.size,
                    "kind": f.kind,
                    "unit": f.unit,
                    "scale": f.scale,
                    "offset": f.offset,
                    "description": f.description,
                }
                for f in self.fields
            ],
            "parts": {k: list(v) for k, v in self.parts.items()},
        }


N_SHAPE = 199
N_TEXTURE = 199
YAW_DEG_PER_SIGMA = 30.0
PITCH_DEG_PER_SIGMA = 15.0

FACES = LabelLayout(
    name="faces",
    fields=(
        LabelField("shape", 0, N_SHAPE, description="shape PCA coefficients in units of each component's σ"),
        LabelField("texture", N_SHAPE, N_TEXTURE, description="texture PCA coefficients in units of σ"),
        LabelField(
            "yaw_deg", 2 * 199, 1, unit="deg", scale=YAW_DEG_PER_SIGMA,
            description="head rotation about the vertical axis; positive turns the face to its left "
            "(towards the image's right)",
        ),
        LabelField(
            "pitch_deg", 2 * 199 + 1, 1, unit="deg", scale=PITCH_DEG_PER_SIGMA,
            description="head rotation about the horizontal axis; positive tilts the face up",
        ),
    ),
    parts={"shape": ("shape",), "texture": ("texture",), "angles": ("yaw_deg", "pitch_deg")},
)

DIGITS = LabelLayout(
    name="digits",
    fields=(
        LabelField("digit", 0, 10, kind="categorical", unit="class", description="digit class 0–9"),
        LabelField("rotation_deg", 10, 1, unit="deg", scale=12.0, description="in-plane rotation, counter-clockwise"),
        LabelField("thickness", 11, 1, unit="frac of image", scale=0.02, offset=0.085, description="stroke width"),
        LabelField("scale", 12, 1, unit="ratio", scale=0.08, offset=0.85, description="glyph height / image height"),
        LabelField("slant", 13, 1, unit="shear", scale=0.15, description="horizontal shear, positive leans right"),
        LabelField("dx", 14, 1, unit="frac of image", scale=0.04, description="horizontal shift, positive right"),
        LabelField("dy", 15, 1, unit="frac of image", scale=0.04, description="vertical shift, positive down"),
    ),
    parts={"digit": ("digit",), "pose": ("rotation_deg", "scale", "slant", "dx", "dy"), "stroke": ("thickness",)},
)

LAYOUTS: dict[str, LabelLayout] = {FACES.name: FACES, DIGITS.name: DIGITS}


def get_layout(name: str) -> LabelLayout:
    """Layout by name; a clear error lists the known ones."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise LayoutError("layout", f"unknown layout '{name}'; known: {', '.join(LAYOUTS)}") from None


def sample_prior(layout: LabelLayout, n: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """[n, dim] labels from the layout's prior: N(0,1) continuous slots, uniform one-hot classes."""
    gen_device = generator.device if generator is not None else device
    out = torch.randn(n, layout.dim, generator=generator, device=gen_device)
    for f in layout.fields:
        if f.kind == "categorical":
            cls = torch.randint(0, f.size, (n,), generator=generator, device=gen_device)
            out[:, f.slice] = torch.nn.functional.one_hot(cls, f.size).to(out.dtype)
    return out.to(device)
