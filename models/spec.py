"""`DatasetSpec`: what a user asks for when they order a synthetic dataset.

Two validation stages, both naming the field and the reason:
1. the pydantic model checks everything that does not depend on a bundle (ranges, `low > high`,
   NaN, shard size vs count) — this is the API's 422 and the CLI's exit 2;
2. `spec.resolve(layout)` binds the label distributions to a bundle's `LabelLayout` (unknown field,
   a distribution that cannot apply to a categorical field, a vector of the wrong length) and raises
   `SpecError("labels.<field>", reason)`.

Distributions are written in *human* units (degrees, σ, classes); `models.sampling` converts them.
Pydantic lives here only: the GPU trainer never imports this module.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from models.layouts import LabelField, LabelLayout

MAX_COUNT = 10_000_000  # samples per dataset (an upper limit; the service may set a lower one)
MAX_SHARD_SIZE = 100_000  # samples per shard
MAX_SHARDS = 10_000  # shards per dataset: each is a job row and a broker message, so this bounds a spec's cost
MAX_GRID_FIELDS = 2
FIELD_KEY = r"^[a-z_][a-z0-9_]*(\[[0-9]+\])?$"  # `yaw_deg`, `shape`, `shape[3]`
MAX_FIELD_KEY = 64  # characters; label field names are short, and errors echo the key


class SpecError(ValueError):
    """A spec that cannot be honoured; `field` is a dotted path (`labels.yaw_deg`, `bundle`)."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class _Strict(BaseModel):
    # strict: `"count": true` or `"10"` is a wrong type to report, not a value to coerce silently.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)


Value = float | list[float]  # a scalar, or one value per slot of a vector field


class NormalParams(_Strict):
    mean: float = 0.0  # human units
    std: float = Field(1.0, ge=0.0)  # human units
    truncate: float | None = Field(None, gt=0.0)  # keep draws within mean ± truncate·std (resampled, not clipped)


class UniformParams(_Strict):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> UniformParams:
        if self.low > self.high:
            raise ValueError(f"low > high ({self.low} > {self.high})")
        return self


class ChoiceParams(_Strict):
    values: list[float] = Field(min_length=1, max_length=10_000)
    weights: list[float] | None = None  # relative, need not sum to 1

    @model_validator(mode="after")
    def _weights(self) -> ChoiceParams:
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError(f"weights has {len(self.weights)} entries for {len(self.values)} values")
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights must be ≥ 0 with a positive sum")
        return self


class GridParams(_Strict):
    values: list[float] | None = Field(None, min_length=1, max_length=10_000)
    low: float | None = None
    high: float | None = None
    steps: int | None = Field(None, ge=1, le=10_000)

    @model_validator(mode="after")
    def _one_form(self) -> GridParams:
        ranged = (self.low, self.high, self.steps)
        if self.values is not None:
            if any(v is not None for v in ranged):
                raise ValueError("give either values or low/high/steps, not both")
        elif any(v is None for v in ranged):
            raise ValueError("give values, or all of low, high and steps")
        elif self.low > self.high:  # type: ignore[operator]
            raise ValueError(f"low > high ({self.low} > {self.high})")
        return self

    def points(self) -> list[float]:
        if self.values is not None:
            return [float(v) for v in self.values]
        lo, hi, n = float(self.low), float(self.high), int(self.steps)  # type: ignore[arg-type]
        return [lo] if n == 1 else [lo + (hi - lo) * k / (n - 1) for k in range(n)]


class Fixed(_Strict):
    fixed: Value


class Normal(_Strict):
    normal: NormalParams


class Uniform(_Strict):
    uniform: UniformParams


class Choice(_Strict):
    choice: ChoiceParams


class Grid(_Strict):
    grid: GridParams


DIST_KINDS = ("fixed", "normal", "uniform", "choice", "grid")


def _dist_kind(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        return key if key in DIST_KINDS else None
    if isinstance(value, BaseModel):
        return next(k for k in DIST_KINDS if hasattr(value, k))
    return None


Distribution = Annotated[
    Annotated[Fixed, Tag("fixed")]
    | Annotated[Normal, Tag("normal")]
    | Annotated[Uniform, Tag("uniform")]
    | Annotated[Choice, Tag("choice")]
    | Annotated[Grid, Tag("grid")],
    Discriminator(
        _dist_kind,
        custom_error_type="distribution",
        custom_error_message="must be an object with exactly one of: " + ", ".join(DIST_KINDS),
    ),
]


class ImageSpec(_Strict):
    format: Literal["png", "jpg", "webp"] = "jpg"
    quality: int = Field(95, ge=1, le=100)  # jpg/webp quality; ignored for png
    size: int | None = Field(None, ge=8, le=1024)  # output pixels per side; None = the bundle's size


class NoiseSpec(_Strict):
    mode: Literal["random", "fixed", "variants"] = "random"
    k: int = Field(1, ge=1, le=10_000)  # variants per label (mode "variants")

    @model_validator(mode="after")
    def _k(self) -> NoiseSpec:
        if self.mode == "variants" and self.k < 2:
            raise ValueError("k: mode 'variants' needs k ≥ 2 noise draws per label")
        if self.mode != "variants" and self.k != 1:
            raise ValueError(f"k: only used with mode 'variants' (mode is '{self.mode}')")
        return self


Extra = Literal["sim", "mask", "z"]

_EXAMPLE_FACES: dict[str, Any] = {
    "name": "faces-frontal",
    "bundle": "faces-m",
    "count": 10000,
    "seed": 7,
    "shard_size": 1000,
    "image": {"format": "jpg", "quality": 95},
    "labels": {
        "yaw_deg": {"uniform": {"low": -30, "high": 30}},
        "pitch_deg": {"normal": {"mean": 0, "std": 5, "truncate": 2}},
        "shape[0]": {"fixed": 1.5},
    },
    "noise": {"mode": "random"},
    "extras": ["sim"],
}
_EXAMPLE_DIGITS: dict[str, Any] = {
    "name": "digits-grid",
    "bundle": "digits",
    "count": 1000,
    "seed": 1,
    "shard_size": 500,
    "image": {"format": "png"},
    "labels": {"digit": {"grid": {"values": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}},
               "rotation_deg": {"grid": {"low": -20, "high": 20, "steps": 5}}},
    "noise": {"mode": "variants", "k": 4},
}


class DatasetSpec(_Strict):
    """A dataset order: which bundle, how many samples, how to draw their labels and noise, how to encode."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_FACES, _EXAMPLE_DIGITS]})

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="slug used in shard file names")
    bundle: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="name of a bundle (see GET /models)")
    count: int = Field(ge=1, le=MAX_COUNT, description="number of samples")
    seed: int = Field(0, ge=0, lt=2**63, description="sample i depends only on (seed, i)")
    shard_size: int = Field(1000, ge=1, le=MAX_SHARD_SIZE, description="samples per tar shard")
    image: ImageSpec = ImageSpec.model_validate({})  # frozen, so one shared default is safe
    labels: dict[Annotated[str, Field(pattern=FIELD_KEY, max_length=MAX_FIELD_KEY)], Distribution] = Field(
        default_factory=dict,
        description="per-field distributions in human units; unspecified fields are drawn from the prior. "
        "Vector fields can be addressed per slot as `shape[3]`.",
        max_length=1000,
    )
    noise: NoiseSpec = NoiseSpec.model_validate({})
    extras: list[Extra] = Field(default_factory=list, description="extra members: sim render, mask, z")

    @model_validator(mode="after")
    def _shards(self) -> DatasetSpec:
        if self.shard_size > self.count:
            raise ValueError(f"shard_size: {self.shard_size} is larger than count ({self.count})")
        if self.num_shards > MAX_SHARDS:
            raise ValueError(f"shard_size: {self.count} samples in shards of {self.shard_size} make "
                             f"{self.num_shards} shards, more than {MAX_SHARDS}; use larger shards")
        grids = [k for k, d in self.labels.items() if isinstance(d, Grid)]
        if len(grids) > MAX_GRID_FIELDS:
            raise ValueError(f"labels.{grids[MAX_GRID_FIELDS]}: at most {MAX_GRID_FIELDS} fields may use grid")
        return self

    @field_validator("extras")
    @classmethod
    def _unique_extras(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each extra may appear once")
        return v

    @property
    def num_shards(self) -> int:
        return math.ceil(self.count / self.shard_size)

    def resolve(self, layout: LabelLayout) -> ResolvedLabels:
        """Bind the label distributions to a layout; raises `SpecError('labels.<field>', …)`."""
        return resolve_labels(self.labels, layout)


_TYPE_LOC = re.compile(r"^(float|int|str|bool|list\[.*\]|union\[.*\]|function-.*|\[key\])$")


def format_validation_error(exc: ValidationError) -> list[str]:
    """Human lines `labels.yaw_deg: low > high (2 > 1)` from a pydantic error (tags dropped)."""
    lines = []
    for err in exc.errors():
        # Drop union-member and dict-key markers pydantic adds to locations (`float`, `list[float]`, `[key]`).
        loc = [str(p) for p in err["loc"] if not _TYPE_LOC.match(str(p))]
        # Discriminated-union tags repeat the kind (`labels.x.uniform.uniform`): drop the tag.
        cleaned: list[str] = []
        for p in loc:
            if cleaned and p == cleaned[-1] and p in DIST_KINDS:
                continue
            cleaned.append(p)
        msg = err["msg"].removeprefix("Value error, ")
        if len(cleaned) >= 1 and cleaned[-1] in DIST_KINDS and err["type"] == "value_error":
            cleaned = cleaned[:-1]
        # Field-named model errors (`shard_size: …`, `labels.x: …`) already say where they belong.
        if msg.split(":", 1)[0] in ("shard_size", "k") or msg.startswith("labels."):
            head, _, rest = msg.partition(": ")
            path = ".".join([*cleaned, head]) if head == "k" else head
            lines.append(f"{path}: {rest}")
        else:
            lines.append(f"{'.'.join(cleaned) or 'spec'}: {msg}")
    return list(dict.fromkeys(_first_per_path(lines)))


def _first_per_path(lines: list[str]) -> list[str]:
    """One message per path: a union reports each member's complaint, the first says enough."""
    seen: set[str] = set()
    out = []
    for line in lines:
        path = line.split(": ", 1)[0]
        if path not in seen:
            seen.add(path)
            out.append(line)
    return out


def parse_spec(data: dict[str, Any] | str | bytes) -> DatasetSpec:
    """Parse a spec from a dict or JSON text; raises `SpecError` whose message lists every problem."""
    try:
        if isinstance(data, (str, bytes)):
            return DatasetSpec.model_validate_json(data)
        return DatasetSpec.model_validate(data)
    except ValidationError as exc:
        lines = format_validation_error(exc)
        first_field = lines[0].split(":", 1)[0]
        raise SpecError(first_field, "; ".join(lines).removeprefix(first_field + ": ")) from None


# --- binding to a layout -----------------------------------------------------------------------


@dataclass(frozen=True)
class SlotRule:
    """One distribution applied to `slots` (indices within `field`), in human units."""

    field: LabelField
    slots: tuple[int, ...]  # positions within the field (all of them for a field-wide rule)
    dist: Fixed | Normal | Uniform | Choice | Grid
    key: str  # the spec key it came from, for messages (`shape[3]`)


@dataclass(frozen=True)
class ResolvedLabels:
    """Label rules bound to a layout: what `models.sampling` executes. Fields without a rule → prior."""

    layout: LabelLayout
    rules: tuple[SlotRule, ...]  # field-wide rules first, then per-slot overrides (later wins)
    grid_keys: tuple[str, ...]  # spec keys of grid rules, in spec order (first varies slowest)


def _check_dist(f: LabelField, key: str, dist: Any, n_slots: int) -> None:
    where = f"labels.{key}"
    if f.kind == "categorical":
        if isinstance(dist, (Normal, Uniform)):
            raise SpecError(where, "a categorical field takes fixed, choice or grid (class indices)")
        values: list[Any] = []
        if isinstance(dist, Fixed):
            values = dist.fixed if isinstance(dist.fixed, list) else [dist.fixed]
            if isinstance(dist.fixed, list):
                raise SpecError(where, "fixed takes one class index")
        elif isinstance(dist, Choice):
            values = dist.choice.values
        elif isinstance(dist, Grid):
            values = dist.grid.points()
        for v in values:
            if v != round(v) or not 0 <= v < f.size:
                raise SpecError(where, f"class {v} is not an integer in [0, {f.size - 1}]")
        return
    if isinstance(dist, Fixed) and isinstance(dist.fixed, list) and len(dist.fixed) != n_slots:
        raise SpecError(where, f"fixed list has {len(dist.fixed)} values, the field has {n_slots} slots")


def resolve_labels(labels: dict[str, Any], layout: LabelLayout) -> ResolvedLabels:
    wide: list[SlotRule] = []
    per_slot: list[SlotRule] = []
    grid_keys: list[str] = []
    for key, dist in labels.items():
        name, _, index = key.partition("[")
        if name not in layout.names:
            raise SpecError(f"labels.{key}", f"unknown field; layout '{layout.name}' has {', '.join(layout.names)}")
        f = layout[name]
        if index:
            if not f.is_vector:
                raise SpecError(f"labels.{key}", f"'{name}' is not a vector field; address it as '{name}'")
            slot = int(index.rstrip("]"))
            if slot >= f.size:
                raise SpecError(f"labels.{key}", f"index {slot} out of range; '{name}' has {f.size} slots (0..{f.size - 1})")
            _check_dist(f, key, dist, 1)
            per_slot.append(SlotRule(f, (slot,), dist, key))
        else:
            _check_dist(f, key, dist, f.size if f.kind == "continuous" else 1)
            wide.append(SlotRule(f, tuple(range(f.size)) if f.kind == "continuous" else (0,), dist, key))
        if isinstance(dist, Grid):
            grid_keys.append(key)
    return ResolvedLabels(layout, tuple(wide + per_slot), tuple(grid_keys))
