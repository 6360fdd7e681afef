"""Photometric mode: what turns a clean render into a "real" photo for the faces-m benchmark.

The domain gap has to be real for the benchmark to mean anything, so every factor a plain render holds
fixed varies here: light direction and colour, ambient level, specular highlights, a photo background
(crops of scikit-image's bundled sample photos, the only photos we may ship), a cap occluding the top of
the head, an occasional photo patch over the face, colour/gamma/contrast jitter, blur, sensor noise and
JPEG. All randomness is drawn up front from one generator in a fixed order (`draw`), so a seed fixes
every pixel whatever the device.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BANK_SIZE = 256  # side of each cached background photo, pixels
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "camera",
          "brick", "grass", "gravel", "coins", "moon", "text", "page", "colorwheel", "retina")
HALF_EXTENT = 1.15  # must match faces.HALF_EXTENT: image half-width in model units
CENTER_Y = -0.05


@dataclass
class PhotoParams:
    """Per-face random factors, all [B, ...] tensors on the render device (see `draw` for ranges)."""

    size: int
    light_dir: torch.Tensor  # [B, 3] unit, camera space, toward the light
    light_rgb: torch.Tensor  # [B, 3] diffuse light colour × intensity
    ambient_rgb: torch.Tensor  # [B, 3]
    specular: torch.Tensor  # [B] highlight strength
    shininess: torch.Tensor  # [B] Blinn–Phong exponent
    bg_index: torch.Tensor  # [B] int64 photo index into the bank
    bg_affine: torch.Tensor  # [B, 2, 3] crop of the photo, in affine_grid's normalized units
    cap_on: torch.Tensor  # [B] bool
    cap_geom: torch.Tensor  # [B, 4] centre x, centre y, radius x, radius y in model units
    cap_rgb: torch.Tensor  # [B, 3]
    cap_stripe: torch.Tensor  # [B, 2] stripe frequency (cycles per unit) and phase
    patch_on: torch.Tensor  # [B] bool: a photo patch covers part of the face
    patch_index: torch.Tensor  # [B] int64
    patch_affine: torch.Tensor  # [B, 2, 3]
    patch_box: torch.Tensor  # [B, 4] x0, y0, x1, y1 in model units
    gain: torch.Tensor  # [B, 3] per-channel white-balance gain
    gamma: torch.Tensor  # [B]
    contrast: torch.Tensor  # [B]
    saturation: torch.Tensor  # [B]
    blur_px: torch.Tensor  # [B] Gaussian σ in pixels
    noise: torch.Tensor  # [B] sensor noise σ
    noise_field: torch.Tensor  # [B, 3, S, S] unit normal noise
    jpeg_quality: torch.Tensor  # [B] int64, kept on CPU where the JPEG codec runs

    def to(self, device: torch.device) -> PhotoParams:
        moved = {f: getattr(self, f) for f in self.__dataclass_fields__}
        for f, v in moved.items():
            if isinstance(v, torch.Tensor) and f != "jpeg_quality":
                moved[f] = v.to(device)
        return PhotoParams(**moved)


@functools.lru_cache(maxsize=4)
def background_bank(device: str) -> torch.Tensor:
    """[N, 3, BANK_SIZE, BANK_SIZE] float photos from skimage.data, centre-cropped; loaded once per device."""
    import skimage.data

    photos = []
    for name in PHOTOS:
        img = torch.from_numpy(getattr(skimage.data, name)()).float() / 255.0
        img = img[..., None].expand(-1, -1, 3) if img.ndim == 2 else img[..., :3]
        img = img.permute(2, 0, 1)[None]  # [1, 3, H, W]
        scale = BANK_SIZE / min(img.shape[-2:])
        img = F.interpolate(img, scale_factor=scale, mode="area" if scale < 1 else "bilinear",
                            recompute_scale_factor=False)
        h, w = img.shape[-2:]
        top, left = (h - BANK_SIZE) // 2, (w - BANK_SIZE) // 2
        photos.append(img[0, :, top:top + BANK_SIZE, left:left + BANK_SIZE])
    return torch.stack(photos).contiguous().to(device)


def _uniform(g: torch.Generator, n: int, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, *shape, generator=g)


def _crop_affine(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    """[n, 2, 3] random square crops (side lo…hi of the photo), randomly mirrored."""
    half = _uniform(g, n, lo, hi)
    cx, cy = (_uniform(g, n, -1, 1) * (1 - half) for _ in range(2))
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    zero = torch.zeros(n)
    return torch.stack([half * flip, zero, cx, zero, half, cy], -1).view(n, 2, 3)


def draw(n: int, size: int, g: torch.Generator, device: torch.device) -> PhotoParams:
    """All random factors for n faces, from `g` only, in a fixed order (so the same seed, same photos)."""
    n_photos = len(PHOTOS)
    az, el = torch.deg2rad(_uniform(g, n, -75, 75)), torch.deg2rad(_uniform(g, n, -25, 65))
    light_dir = torch.stack([torch.sin(az) * torch.cos(el), torch.sin(el), torch.cos(az) * torch.cos(el)], -1)
    warmth = _uniform(g, n, 0, 1)[:, None]
    tint = warmth * torch.tensor([1.0, 0.82, 0.62]) + (1 - warmth) * torch.tensor([0.72, 0.85, 1.0])
    light_rgb = tint * _uniform(g, n, 0.55, 1.3)[:, None]
    ambient_rgb = _uniform(g, n, 0.08, 0.45)[:, None] * (1 + 0.15 * torch.randn(n, 3, generator=g)).clamp(0.6, 1.4)
    specular = _uniform(g, n, 0.0, 0.5)
    shininess = torch.exp(_uniform(g, n, math.log(4), math.log(60)))
    bg_index = torch.randint(0, n_photos, (n,), generator=g)
    bg_affine = _crop_affine(g, n, 0.2, 0.8)
    cap_on = torch.rand(n, generator=g) < 0.55
    cap_geom = torch.stack([_uniform(g, n, -0.12, 0.12), _uniform(g, n, 0.9, 1.15), _uniform(g, n, 0.75, 1.0),
                            _uniform(g, n, 0.45, 0.8)], -1)
    cap_rgb = torch.rand(n, 3, generator=g) * _uniform(g, n, 0.2, 1.0)[:, None]
    cap_stripe = torch.stack([_uniform(g, n, 2, 12), _uniform(g, n, 0, 2 * math.pi)], -1)
    patch_on = torch.rand(n, generator=g) < 0.2
    patch_index = torch.randint(0, n_photos, (n,), generator=g)
    patch_affine = _crop_affine(g, n, 0.1, 0.4)
    px0, py0 = _uniform(g, n, -1.2, 0.6), _uniform(g, n, -1.3, -0.2)
    patch_box = torch.stack([px0, py0, px0 + _uniform(g, n, 0.3, 0.7), py0 + _uniform(g, n, 0.25, 0.5)], -1)
    gain = 1 + 0.08 * torch.randn(n, 3, generator=g)
    gamma = torch.exp(_uniform(g, n, math.log(0.75), math.log(1.35)))
    contrast = _uniform(g, n, 0.7, 1.2)
    saturation = _uniform(g, n, 0.5, 1.3)
    blur_px = _uniform(g, n, 0.0, 1.0) * (size / 64)
    noise = torch.exp(_uniform(g, n, math.log(0.004), math.log(0.06)))
    noise_field = torch.randn(n, 3, size, size, generator=g)
    jpeg_quality = torch.randint(25, 91, (n,), generator=g)
    return PhotoParams(
        size, light_dir, light_rgb, ambient_rgb, specular, shininess, bg_index, bg_affine, cap_on, cap_geom,
        cap_rgb, cap_stripe, patch_on, patch_index, patch_affine, patch_box, gain, gamma, contrast, saturation,
        blur_px, noise, noise_field, jpeg_quality,
    ).to(device)


def shade(normal: torch.Tensor, albedo: torch.Tensor, batch: torch.Tensor, p: PhotoParams) -> torch.Tensor:
    """Per covered pixel [H, 3]: ambient + Lambert under a coloured light + Blinn–Phong highlight."""
    light = p.light_dir[batch]  # [H, 3]
    lambert = (normal * light).sum(-1, keepdim=True).clamp(min=0)
    half = F.normalize(light + torch.tensor([0.0, 0.0, 1.0], device=light.device), dim=-1)
    n_dot_h = (normal * half).sum(-1).clamp(min=0)
    highlight = (p.specular[batch] * n_dot_h ** p.shininess[batch])[:, None] * p.light_rgb[batch]
    return albedo * (p.ambient_rgb[batch] + lambert * p.light_rgb[batch]) + highlight * (lambert > 0)


def _crops(bank: torch.Tensor, index: torch.Tensor, affine: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, S, S] crops: one grid_sample per photo used, each photo broadcast (not copied) over its uses."""
    out = torch.empty(len(index), 3, size, size, device=bank.device)
    grid = F.affine_grid(affine, [len(index), 3, size, size], align_corners=False)
    for i in torch.unique(index).tolist():
        sel = torch.nonzero(index == i).squeeze(1)
        src = bank[i:i + 1].expand(len(sel), -1, -1, -1)
        out[sel] = F.grid_sample(src, grid[sel], mode="bilinear", padding_mode="reflection", align_corners=False)
    return out


def _model_coords(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-space x [1, S] and y [S, 1] of pixel centres (orthographic camera of faces.py)."""
    c = (torch.arange(size, device=device) + 0.5) * (2 * HALF_EXTENT / size) - HALF_EXTENT
    return c[None, :], (-c + CENTER_Y)[:, None]


def _cap(p: PhotoParams, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha [B, 1, S, S], colour [B, 3, S, S]) of a striped cap over the top of the head."""
    x, y = _model_coords(p.size, device)
    cx, cy, rx, ry = (p.cap_geom[:, i, None, None] for i in range(4))
    dist = torch.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)  # [B, S, S], 1 on the rim
    px = HALF_EXTENT * 2 / p.size
    alpha = ((1 - dist) * ry / px).clamp(0, 1) * p.cap_on[:, None, None]
    stripe = torch.sin(p.cap_stripe[:, 0, None, None] * 2 * math.pi * x + p.cap_stripe[:, 1, None, None])
    brim = ((dist > 0.8) & (y < cy)).float()
    shade = (1 + 0.12 * stripe - 0.35 * brim) * (0.75 + 0.25 * (y - cy + ry) / (2 * ry)).clamp(0.5, 1.2)
    return alpha[:, None], p.cap_rgb[:, :, None, None] * shade[:, None]


def _blur(img: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a different σ per image (σ = 0 leaves the image unchanged)."""
    b, c, s, _ = img.shape
    radius = max(1, int(math.ceil(3 * float(sigma_px.max()))))
    t = torch.arange(-radius, radius + 1, device=img.device, dtype=img.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma_px.clamp(min=1e-3)[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [B·C, 2r+1]
    x = F.pad(img.reshape(1, b * c, s, s), (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k[:, None, None, :], groups=b * c)
    x = F.conv2d(x, k[:, None, :, None], groups=b * c)
    return x.view(b, c, s, s)


def _jpeg(img: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Round-trip each image through JPEG at its own quality (torchvision, on CPU)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    u8 = (img.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    out = torch.stack([decode_jpeg(encode_jpeg(im, quality=int(q))) for im, q in zip(u8, quality, strict=True)])
    return out.to(img.device).float() / 255.0


def compose(face: torch.Tensor, mask: torch.Tensor, p: PhotoParams) -> tuple[torch.Tensor, torch.Tensor]:
    """face [B, 3, S, S] (shaded, 0 off-face), mask [B, 1, S, S] → (photo image, visible-face mask)."""
    device = face.device
    bank = background_bank(str(device))
    img = mask * face + (1 - mask) * _crops(bank, p.bg_index, p.bg_affine, p.size)
    cap_alpha, cap_rgb = _cap(p, device)
    img = (1 - cap_alpha) * img + cap_alpha * cap_rgb
    x, y = _model_coords(p.size, device)
    box = p.patch_box[:, :, None, None]
    inside = (x >= box[:, 0]) & (x <= box[:, 2]) & (y >= box[:, 1]) & (y <= box[:, 3])  # [B, S, S]
    patch_alpha = (inside & p.patch_on[:, None, None]).float()[:, None]
    if bool(p.patch_on.any()):
        img = (1 - patch_alpha) * img + patch_alpha * _crops(bank, p.patch_index, p.patch_affine, p.size)
    visible = mask * (cap_alpha < 0.5) * (patch_alpha < 0.5)
    # camera response: white balance, saturation, contrast, gamma
    img = img.clamp(0, 1) * p.gain[:, :, None, None]
    grey = img.mean(1, keepdim=True)
    img = grey + p.saturation[:, None, None, None] * (img - grey)
    img = 0.5 + p.contrast[:, None, None, None] * (img - 0.5)
    img = img.clamp(0, 1) ** p.gamma[:, None, None, None]
    img = _blur(img, p.blur_px)
    img = img + p.noise[:, None, None, None] * p.noise_field
    return _jpeg(img, p.jpeg_quality), visible
