"""The one shared config of the RenderBEGAN networks (thesis §3.3, defaults from its Fig. 4.1).

S, G, D and P all read the same object so a run directory can rebuild every network from the single
`net` entry of `training_options.json`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

G_INPUTS = ("stack", "dense")


@dataclass
class NetConfig:
    image_size: int = 32  # pixels per side, a power of two in 8..128 (up/down steps = log2(S/4))
    channels: int = 3  # image channels (1 for digits, 3 for faces)
    label_dim: int = 400  # label vector length = layout.dim
    nz: int = 32  # noise dims N_z
    nh: int = 64  # discriminator embedding dims N_h
    c: int = 32  # base channel count; widest layers have 4c (G, S, D-encoder) or 5c (D-decoder input)
    dropout_d: float = 0.4  # dropout between D's FC pairs; the thesis names no value, so P's 0.4 is reused
    dropout_p: float = 0.4  # dropout before P's last FC layer (thesis Fig. 3.11)
    hidden: int = 256  # width of the hidden FC layer in D's encoder/decoder heads and in P (thesis: unstated)
    g_input: str = "stack"  # G's 4×4 input: "stack" tiles (z, l) (thesis), "dense" projects it (see Generator)

    def __post_init__(self) -> None:
        s = self.image_size
        if s < 8 or s > 128 or s & (s - 1):
            raise ValueError(f"image_size: must be a power of two in 8..128, got {s}")
        for name in ("channels", "label_dim", "nz", "nh", "c", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)}")
        if self.g_input not in G_INPUTS:
            raise ValueError(f"g_input: must be one of {', '.join(G_INPUTS)}, got {self.g_input!r}")
        for name in ("dropout_d", "dropout_p"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ValueError(f"{name}: must be in [0, 1), got {getattr(self, name)}")

    @property
    def n_up(self) -> int:
        """Resolution doublings between the 4×4 seed and the image: log2(S/4) (3 at 32×32)."""
        return self.image_size.bit_length() - 3

    def widths(self) -> list[int]:
        """Channels from the 4×4 stage to full size, decreasing linearly 4c → c (n_up + 1 entries)."""
        n = self.n_up
        return [round(4 * self.c - 3 * self.c * i / n) for i in range(n + 1)]

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> NetConfig:
        """Build from a dict, naming any unknown key (so a typo in a YAML config is an error, not ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"net.{unknown[0]}: unknown option; known: {', '.join(sorted(known))}")
        return cls(**data)  # type: ignore[arg-type]
