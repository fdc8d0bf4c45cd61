"""Procedural lateral lumbar-spine radiographs with boxed lesions: the project's default, shippable data.

Each image is a projected density map (soft tissue, bowel gas, iliac crest, T11-S3 with cortex, trabecular
texture and posterior elements) passed through a film-like tone curve with exposure, pose and noise
variation. Lesions of the seven VinDr-SpineXR types change the anatomy locally and come with boxes.
Units: the image width is 1.0; boxes are returned in output pixels. Deterministic per (seed, index).
"""

import dataclasses
from collections.abc import Iterator

import numpy as np

from clinical.labels import LESION_TYPES, NO_FINDING

Box = tuple[float, float, float, float]
LEVELS = ('T11', 'T12', 'L1', 'L2', 'L3', 'L4', 'L5', 'S1', 'S2', 'S3')
FIRST_LUMBAR, FIRST_SACRAL = 2, 7
HALF_HEIGHT = np.array([0.050, 0.054, 0.057, 0.059, 0.060, 0.060, 0.058, 0.054, 0.043, 0.034])
HALF_WIDTH = np.array([0.066, 0.070, 0.076, 0.080, 0.083, 0.085, 0.085, 0.082, 0.066, 0.052])
DISC = np.array([0.022, 0.026, 0.031, 0.036, 0.040, 0.043, 0.038, 0.006, 0.004])  # Below each level.


# ----------------------------------------------------------------------------
# One rendered phantom: the image and its VinDr-style findings.


@dataclasses.dataclass
class PhantomImage:
    image: np.ndarray  # [H, W] float32 in [0, 1], bone bright.
    findings: list[tuple[str, Box | None]]  # (lesion_type, box in pixels) rows; [("No finding", None)] if normal.

    @property
    def lesion_types(self) -> list[str]:
        return [lesion_type for lesion_type, _box in self.findings]


# ----------------------------------------------------------------------------
# One vertebra as drawn: pose, size, shape changes and local findings. Its (cx, cy, phi) also serves as a
# plain local frame for rods, bowel gas and the iliac crest.


@dataclasses.dataclass
class _Vertebra:
    cx: float
    cy: float
    phi: float  # Tilt of the long axis from vertical; positive = lower end posterior (right).
    a: float  # Half AP width.
    b: float  # Half height.
    anterior: float = 1.0  # Height factor at the anterior wall (collapse).
    posterior: float = 1.0
    density: float = 1.0
    sclerosis_top: float = 0.0
    sclerosis_bottom: float = 0.0
    sacral: bool = False

    def to_global(self, xl, yl):
        c, s = np.cos(self.phi), np.sin(self.phi)
        return self.cx + xl * c + yl * s, self.cy - xl * s + yl * c


# ----------------------------------------------------------------------------
# Pixel grid of the render; primitives are evaluated only inside a window around them.


class _Canvas:
    def __init__(self, height: int, width: int):
        self.px = width  # Pixels per unit.
        self.density = np.zeros((height, width), dtype=np.float32)
        self.edge = 1.0 / width  # Antialiasing ramp, one render pixel.

    def window(self, cx: float, cy: float, radius: float):
        h, w = self.density.shape
        x0, x1 = max(int((cx - radius) * self.px), 0), min(int((cx + radius) * self.px) + 1, w)
        y0, y1 = max(int((cy - radius) * self.px), 0), min(int((cy + radius) * self.px) + 1, h)
        if x0 >= x1 or y0 >= y1:
            return None
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5) / self.px
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5) / self.px
        return (slice(y0, y1), slice(x0, x1)), xs[None, :], ys[:, None]

    def local(self, v: _Vertebra, radius: float):
        win = self.window(v.cx, v.cy, radius)
        if win is None:
            return None
        sl, xs, ys = win
        c, s = np.cos(v.phi), np.sin(v.phi)
        dx, dy = xs - v.cx, ys - v.cy
        return sl, dx * c - dy * s, dx * s + dy * c

    def inside(self, sdf):
        return np.clip(0.5 - sdf / self.edge, 0, 1)


# ----------------------------------------------------------------------------
# Signed distance functions in local coordinates (negative inside).


def _box_sdf(x, y, a, b, r):
    qx, qy = np.abs(x) - (a - r), np.abs(y) - (b - r)
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def _ellipse_sdf(x, y, a, b, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    x, y = x * c - y * s, x * s + y * c
    k0 = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    k1 = np.sqrt((x / a**2) ** 2 + (y / b**2) ** 2) + 1e-9
    return k0 * (k0 - 1) / k1


# ----------------------------------------------------------------------------
# Vertebral body (cortex, trabecular texture, endplate sclerosis) and posterior elements.


def _draw_vertebra(canvas: _Canvas, v: _Vertebra, texture: np.ndarray, look: dict) -> None:
    win = canvas.local(v, 1.3 * max(v.a, v.b))
    if win is not None:
        sl, xl, yl = win
        t = np.clip((v.a - xl) / (2 * v.a), 0, 1)  # 0 posterior wall .. 1 anterior wall.
        height = v.posterior + (v.anterior - v.posterior) * t
        height = height * (1 - 0.08 * (1 - np.clip(xl / v.a, -1, 1) ** 2))  # Concave endplates.
        ys = yl / height
        xl = xl / np.where(xl < 0, 1 - 0.07 * (1 - np.clip(ys / v.b, -1, 1) ** 2), 1)  # Concave anterior wall.
        sdf = _box_sdf(xl, ys, v.a, v.b, 0.15 * v.b)
        inside = canvas.inside(sdf)
        cortex = inside - canvas.inside(sdf + look['cortex'])
        ends = canvas.inside(v.b - look['cortex'] * 2.5 - ys) * v.sclerosis_bottom
        ends += canvas.inside(ys + v.b - look['cortex'] * 2.5) * v.sclerosis_top
        trabecular = look['trabecular'] * v.density * (1 + look['texture'] * texture[sl])
        canvas.density[sl] += inside * (trabecular + ends) + cortex * look['cortical']
    if v.sacral:
        return
    win = canvas.local(v, 3.4 * v.a)
    if win is not None:
        sl, xl, yl = win
        a, b = v.a, v.b
        c, s = np.cos(0.18), np.sin(0.18)  # The spinous process points slightly caudally.
        sx, sy = xl - 2.5 * a, yl - 0.15 * b
        parts = [
            _box_sdf(xl - 1.2 * a, yl + 0.5 * b, 0.3 * a, 0.4 * b, 0.12 * b),  # Pedicle.
            _box_sdf(xl - 1.72 * a, yl - 0.05 * b, 0.26 * a, 1.32 * b, 0.22 * a),  # Articular pillar and facets.
            _box_sdf(sx * c + sy * s, -sx * s + sy * c, 0.75 * a, 0.42 * b, 0.2 * b),  # Spinous process.
        ]
        sdf = np.minimum.reduce(parts)
        inside = canvas.inside(sdf)
        cortex = inside - canvas.inside(sdf + look['cortex'])
        canvas.density[sl] += inside * look['posterior'] + cortex * look['cortical'] * 0.6


# ----------------------------------------------------------------------------
# A filled, rimmed blob (spur, focus, stenosis) or a metal part in a vertebra's local frame.


def _draw_blob(canvas, v, center, radii, angle, amount, rim=0.0, radius=None, box=False):
    win = canvas.local(v, radius or 3.4 * v.a)
    if win is None:
        return
    sl, xl, yl = win
    x, y = xl - center[0], yl - center[1]
    if box:
        c, s = np.cos(angle), np.sin(angle)
        sdf = _box_sdf(x * c - y * s, x * s + y * c, radii[0], radii[1], 0.3 * min(radii))
    else:
        sdf = _ellipse_sdf(x, y, radii[0], radii[1], angle)
    inside = canvas.inside(sdf)
    canvas.density[sl] += inside * amount + (inside - canvas.inside(sdf + 1.5 / canvas.px)) * rim


# ----------------------------------------------------------------------------
# Band-limited noise fields of unit variance, all from one white-noise spectrum.


def _noise_fields(rng, shape: tuple[int, int], px: int) -> list[np.ndarray]:
    spectrum = np.fft.rfft2(rng.standard_normal(shape, dtype=np.float32))
    fy = np.fft.fftfreq(shape[0])[:, None] * px
    fx = np.fft.rfftfreq(shape[1])[None, :] * px
    f = np.sqrt(fx**2 + fy**2)  # Cycles per unit.
    fields = []
    vertical = 0.3 + 0.7 * fx**2 / (f**2 + 1e-6)  # Lumbar trabeculae run mostly vertically.
    trabecular = np.exp(-(((f - 45) / 20) ** 2)) * vertical
    for gain in (trabecular, np.exp(-((f / 2.5) ** 2)), np.exp(-(((f - 4.5) / 2) ** 2))):
        field = np.fft.irfft2(spectrum * gain, s=shape).astype(np.float32)
        fields.append(field / (field.std() + 1e-8))
    return fields  # Trabecular texture, slow soft-tissue variation, bowel-gas blobs.


# ----------------------------------------------------------------------------
# Random normal anatomy and acquisition: sizes, curve, pose, exposure.


def _sample_anatomy(rng, aspect: float) -> dict:
    scale = rng.uniform(0.9, 1.08)
    return dict(
        half_height=HALF_HEIGHT * scale * rng.uniform(0.94, 1.06, len(LEVELS)),
        half_width=HALF_WIDTH * scale * rng.uniform(0.95, 1.05) * rng.uniform(0.97, 1.03, len(LEVELS)),
        disc=DISC * scale * rng.uniform(0.85, 1.15, len(DISC)),
        height_factor=[(1.0, 1.0) for _ in LEVELS],
        slip=np.zeros(len(LEVELS)),
        lordosis=rng.uniform(0.7, 1.2),  # Radians of tilt per unit of arc length.
        sacral_bend=rng.uniform(1.5, 2.5),
        tilt=rng.uniform(-0.12, 0.12),
        anchor=(rng.uniform(0.36, 0.44), aspect / 2 + rng.uniform(-0.05, 0.05)),
    )


def _sample_look(rng) -> dict:
    return dict(
        soft=rng.uniform(0.45, 0.6),
        trabecular=rng.uniform(0.3, 0.4),
        cortical=rng.uniform(0.22, 0.32),
        posterior=rng.uniform(0.2, 0.3),
        texture=rng.uniform(0.1, 0.18),
        cortex=rng.uniform(0.005, 0.008),
        skin=rng.uniform(0.86, 1.05),
        gain=rng.uniform(2.6, 3.6),
        mid=rng.uniform(0.55, 0.7),
        gradient=rng.uniform(-0.12, 0.12),
        noise=rng.uniform(0.012, 0.03),
        blur=rng.uniform(0.0015, 0.003),
    )


# ----------------------------------------------------------------------------
# Stack the vertebrae along a lordotic curve (arc-length integration), then apply slips and the anchor.


def _layout(anat: dict) -> list[_Vertebra]:
    hh = np.asarray(anat['half_height']) * [np.mean(f) for f in anat['height_factor']]
    centers = np.concatenate([[0.0], np.cumsum(hh[:-1] + anat['disc'] + hh[1:])])
    s = np.linspace(-0.1, centers[-1] + 0.1, 512)
    s_sacrum = centers[FIRST_SACRAL] - hh[FIRST_SACRAL]
    phi = anat['tilt'] + anat['lordosis'] * (s - centers[4]) + anat['sacral_bend'] * np.maximum(s - s_sacrum, 0)
    ds = s[1] - s[0]
    x, y = np.cumsum(np.sin(phi)) * ds, np.cumsum(np.cos(phi)) * ds
    cx, cy, cphi = (np.interp(centers, s, q) for q in (x, y, phi))
    for i in np.nonzero(anat['slip'])[0]:  # Vertebra i and all above move anteriorly over vertebra i + 1.
        disc_phi = np.interp(centers[i] + hh[i], s, phi)
        cx[: i + 1] -= anat['slip'][i] * np.cos(disc_phi)
        cy[: i + 1] += anat['slip'][i] * np.sin(disc_phi)
    cx += anat['anchor'][0] - cx[4]
    cy += anat['anchor'][1] - cy[4]
    return [
        _Vertebra(cx[i], cy[i], cphi[i], anat['half_width'][i], anat['half_height'][i], *anat['height_factor'][i],
                  sacral=i >= FIRST_SACRAL)
        for i in range(len(LEVELS))
    ]  # fmt: skip


# ----------------------------------------------------------------------------
# Soft tissue (elliptical body cross-section, posterior skin line), bowel gas and the iliac crest.


def _draw_background(canvas, rng, look, fields, aspect, verts):
    lowfreq, gasfield = fields
    h, w = canvas.density.shape
    xs = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / canvas.px
    ys = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / canvas.px
    front = verts[4].cx - verts[4].a
    depth = np.clip((xs - front + 0.75) / (look['skin'] - front + 0.75), 0, 1)  # 0 belly .. 1 back skin.
    thickness = np.sqrt(np.clip(1 - (2 * depth - 1.15) ** 2, 0, 1)) * (xs < look['skin'])
    canvas.density += thickness * look['soft'] * (1 + 0.1 * lowfreq + look['gradient'] * (ys / aspect - 0.5))
    gas = np.clip((gasfield - rng.uniform(1.0, 1.8)) / 0.4, 0, 1) * np.clip((front - 0.03 - xs) / 0.05, 0, 1)
    canvas.density -= gas * look['soft'] * rng.uniform(0.15, 0.3)  # Bowel gas: lucencies anterior to the spine.
    l5 = verts[6]
    crest = _Vertebra(l5.cx + rng.uniform(0.05, 0.2), l5.cy + rng.uniform(0.15, 0.25), rng.uniform(-0.4, 0.0), 1, 1)
    radii = (rng.uniform(0.28, 0.36), rng.uniform(0.2, 0.26))
    _draw_blob(canvas, crest, (0, 0), radii, 0, look['trabecular'] * 0.1, rim=look['cortical'] * 0.35, radius=0.4)


# ----------------------------------------------------------------------------
# Lesion sampling: which types, at which levels; type-specific anatomy changes and boxes follow.


def _sample_lesions(rng, prevalence, multi_lesion_rate, lesions):
    if lesions is not None:
        return list(lesions)
    if rng.random() >= prevalence:
        return []
    count = 2 + int(rng.random() < 0.3) if rng.random() < multi_lesion_rate else 1
    return list(rng.choice(LESION_TYPES, size=count, replace=False))


def _choose_levels(rng, lesion_type: str, visible: set[int]) -> list[int]:
    if lesion_type == 'Spondylolysthesis':  # Slip of L3, L4 or L5 over the level below.
        options, weights, count = [[4], [5], [6]], [0.2, 0.45, 0.35], 1
    elif lesion_type == 'Surgical implant':  # Screws in 2-3 consecutive vertebrae.
        n = int(rng.integers(2, 4))
        options, weights, count = [list(range(i, i + n)) for i in (3, 4, 5)], [1, 1, 1], 1
    elif lesion_type in ('Vertebral collapse', 'Other lesions'):
        options, weights, count = [[i] for i in range(2, 7)], [0.35, 0.3, 0.2, 0.1, 0.05], 1
    else:  # Disc, foramen or corners between vertebra i and i + 1.
        options, weights, count = [[i] for i in range(2, 7)], [1] * 5, 1 + int(rng.random() < 0.3)
    pair = lesion_type not in ('Vertebral collapse', 'Other lesions', 'Surgical implant')
    keep = [k for k, o in enumerate(options) if all(i in visible for i in o + [o[-1] + pair])]
    if not keep:  # Extreme pose: fall back to L3, always near the centre.
        return [4, 5] if lesion_type == 'Surgical implant' else [4]
    p = np.array([weights[k] for k in keep], dtype=float)
    chosen = rng.choice(keep, size=min(count, len(keep)), replace=False, p=p / p.sum())
    return sorted(i for k in chosen for i in options[k])


# ----------------------------------------------------------------------------
# Geometry-changing lesions, applied before layout.


def _apply_geometry(anat, lesion_type, levels, rng):
    for i in levels:
        if lesion_type == 'Disc space narrowing':
            anat['disc'][i] *= rng.uniform(0.1, 0.25)
        elif lesion_type == 'Vertebral collapse':
            front = rng.uniform(0.3, 0.55)
            anat['height_factor'][i] = (front, rng.uniform(0.75, 1.0) if rng.random() < 0.7 else front + 0.1)
        elif lesion_type == 'Spondylolysthesis':
            anat['slip'][i] = rng.uniform(0.3, 0.5) * 2 * anat['half_width'][i]


# ----------------------------------------------------------------------------
# Local drawing of each lesion after layout; returns the box corners in units (local points -> global).


def _draw_lesion(canvas, verts, lesion_type, i, rng, look):
    v, w = verts[i], verts[i + 1]
    a, b = v.a, v.b
    if lesion_type == 'Disc space narrowing':
        v.sclerosis_bottom, w.sclerosis_top = rng.uniform(0.25, 0.4), rng.uniform(0.25, 0.4)
        return [(v, [(-a, 0.6 * b), (a, 1.1 * b)]), (w, [(-w.a, -1.1 * w.b), (w.a, -0.6 * w.b)])]
    if lesion_type == 'Osteophytes':
        length = rng.uniform(0.55, 0.9) * a
        for u, sign in ((v, 1), (w, -1)):  # Beaks from the anterior corners reaching toward the disc.
            ang = sign * rng.uniform(0.5, 0.9)
            tip = (-u.a - 0.35 * length * np.cos(ang), sign * (u.b * 0.85 + 0.35 * length * np.sin(abs(ang))))
            _draw_blob(canvas, u, tip, (0.5 * length, 0.24 * u.b), ang, look['cortical'] * 2.2, radius=2 * u.a)
        upper = (v, [(-a - length, 0.3 * b), (-0.6 * a, 1.2 * b)])
        return [upper, (w, [(-w.a - length, -1.2 * w.b), (-0.6 * w.a, -0.3 * w.b)])]
    if lesion_type == 'Foraminal stenosis':  # Facet hypertrophy and a posterior spur fill the foramen.
        _draw_blob(canvas, w, (1.42 * w.a, -1.25 * w.b), (0.3 * w.a, 0.6 * w.b), -0.2, look['posterior'] * 1.8)
        _draw_blob(canvas, v, (1.08 * a, 0.9 * b), (0.2 * a, 0.16 * b), 0.4, look['cortical'] * 1.5)
        return [(v, [(0.95 * a, 0.0), (1.75 * a, 1.0 * b)]), (w, [(0.95 * w.a, -1.6 * w.b), (1.75 * w.a, -0.9 * w.b)])]
    if lesion_type == 'Vertebral collapse':
        v.density *= 1.4
        return [(v, [(-1.05 * a, -1.05 * b), (1.05 * a, 1.05 * b)])]
    if lesion_type == 'Spondylolysthesis':
        return [(v, [(-a, -b), (a, b)]), (w, [(-w.a, -w.b), (w.a, w.b)])]
    if lesion_type == 'Other lesions':
        r = rng.uniform(0.45, 0.65) * b
        center = (rng.uniform(-0.5, 0.4) * a, rng.uniform(-0.4, 0.4) * b)
        amount = look['trabecular'] * (rng.uniform(1.2, 1.6) if rng.random() < 0.5 else -rng.uniform(0.8, 1.0))
        _draw_blob(canvas, v, center, (r, r * rng.uniform(0.7, 1.0)), rng.uniform(0, 3), amount, radius=1.5 * a)
        return [(v, [(center[0] - 1.2 * r, center[1] - 1.2 * r), (center[0] + 1.2 * r, center[1] + 1.2 * r)])]
    raise ValueError(f'unknown lesion type {lesion_type!r}')


# ----------------------------------------------------------------------------
# Pedicle screws, posterior rods and sometimes an interbody cage, over consecutive levels.


def _draw_implant(canvas, verts, levels, rng):
    metal, corners = rng.uniform(3.0, 4.0), []
    heads = []
    for i in levels:
        v = verts[i]
        y = -0.35 * v.b
        _draw_blob(canvas, v, (0.55 * v.a, y), (1.0 * v.a, 0.1 * v.b), 0.08, metal, box=True)
        _draw_blob(canvas, v, (1.6 * v.a, y - 0.1 * v.a), (0.17 * v.a, 0.2 * v.b), 0.08, metal, box=True)
        heads.append(v.to_global(1.6 * v.a, y - 0.1 * v.a))
        corners.append((v, [(-0.5 * v.a, -0.7 * v.b), (1.9 * v.a, 0.3 * v.b)]))
    for (x0, y0), (x1, y1) in zip(heads[:-1], heads[1:]):  # Rod segments between screw heads.
        rod = _Vertebra((x0 + x1) / 2, (y0 + y1) / 2, np.arctan2(x1 - x0, y1 - y0), 1, 1)
        half = 0.5 * np.hypot(x1 - x0, y1 - y0)
        _draw_blob(canvas, rod, (0, 0), (0.006, half + 0.01), 0, metal, box=True, radius=half + 0.02)
    if rng.random() < 0.5:  # Interbody cage in the disc of the first fused pair.
        v = verts[levels[0]]
        cage = (0, v.b + 0.5 * _disc_gap(v, verts[levels[0] + 1]))
        _draw_blob(canvas, v, cage, (0.6 * v.a, 0.25 * v.b), 0, metal * 0.4, rim=metal * 0.6, box=True)
    return corners


def _disc_gap(v: _Vertebra, w: _Vertebra) -> float:
    return max(np.hypot(w.cx - v.cx, w.cy - v.cy) - v.b - w.b, 0.0)


# ----------------------------------------------------------------------------
# Boxes: local corner points of each involved vertebra -> global units -> padded output pixels.


def _box_pixels(parts, px_out: int, shape: tuple[int, int]) -> Box:
    points = []
    for v, corners in parts:
        (x0, y0), (x1, y1) = corners
        for xl, yl in ((x0, y0), (x0, y1), (x1, y0), (x1, y1)):
            points.append(v.to_global(xl, yl))
    xs, ys = np.array(points).T * px_out
    h, w = shape
    return (
        float(np.clip(xs.min() - 1, 0, w)),
        float(np.clip(ys.min() - 1, 0, h)),
        float(np.clip(xs.max() + 1, 0, w)),
        float(np.clip(ys.max() + 1, 0, h)),
    )


# ----------------------------------------------------------------------------
# Film-like tone curve, detector noise and area downsampling to the output grid.


def _expose(density, rng, look, px: int, supersample: int) -> np.ndarray:
    fy = np.fft.fftfreq(density.shape[0])[:, None] * px
    fx = np.fft.rfftfreq(density.shape[1])[None, :] * px
    mtf = np.exp(-2 * (np.pi * look['blur']) ** 2 * (fx**2 + fy**2))  # Gaussian detector blur.
    density = np.fft.irfft2(np.fft.rfft2(density) * mtf, s=density.shape).astype(np.float32)
    density += rng.standard_normal(density.shape, dtype=np.float32) * look['noise']
    image = 1 / (1 + np.exp(-look['gain'] * (density - look['mid'])))
    if supersample > 1:
        h, w = image.shape
        image = image.reshape(h // supersample, supersample, w // supersample, supersample).mean(axis=(1, 3))
    lo = 1 / (1 + np.exp(look['gain'] * look['mid']))  # Value of air, mapped to black.
    return np.clip((image - lo) / (1 - lo), 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------
# Public entry point: one phantom radiograph.


def make_phantom(
    seed: int = 0,  # Dataset seed.
    index: int = 0,  # Image index; (seed, index) fixes the image, whatever N is.
    resolution: int | tuple[int, int] = 256,  # Output size, square or (height, width).
    *,
    prevalence: float = 0.5,  # Probability that an image has at least one lesion.
    multi_lesion_rate: float = 0.2,  # Probability that an abnormal image has 2-3 lesion types.
    lesions: list[str] | None = None,  # Force these lesion types ([] = normal); overrides the two rates.
    supersample: int = 2,  # Render at this factor and downsample by area.
) -> PhantomImage:
    """Render one lateral lumbar-spine phantom radiograph with its findings.

    Returns:
        PhantomImage with a float32 [H, W] image in [0, 1] (bone bright) and one (lesion_type, box) per
        lesion instance, boxes as (xmin, ymin, xmax, ymax) pixels; [("No finding", None)] when normal.

    Example:
        >>> p = make_phantom(seed=1, index=0, resolution=64, lesions=['Surgical implant'])
        >>> p.image.shape, p.lesion_types[0]
        ((64, 64), 'Surgical implant')
    """
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    # Separate streams, so the same patient can be rendered with and without a lesion.
    rng, lesion_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(3))
    aspect = height / width
    anat, look = _sample_anatomy(rng, aspect), _sample_look(rng)
    visible = {i for i, v in enumerate(_layout(anat)) if 1.6 * v.b < v.cy < aspect - 1.6 * v.b}
    types = _sample_lesions(lesion_rng, prevalence, multi_lesion_rate, lesions)
    chosen = [(t, _choose_levels(lesion_rng, t, visible)) for t in types]
    for lesion_type, levels in chosen:
        _apply_geometry(anat, lesion_type, levels, lesion_rng)
    verts = _layout(anat)

    canvas = _Canvas(height * supersample, width * supersample)
    texture, *fields = _noise_fields(noise_rng, canvas.density.shape, canvas.px)
    _draw_background(canvas, rng, look, fields, aspect, verts)
    findings = []
    for lesion_type, levels in chosen:
        if lesion_type == 'Surgical implant':
            findings.append((lesion_type, _draw_implant(canvas, verts, levels, lesion_rng)))
            continue
        for i in levels:
            findings.append((lesion_type, _draw_lesion(canvas, verts, lesion_type, i, lesion_rng, look)))
    for v in verts:
        _draw_vertebra(canvas, v, texture, look)
    image = _expose(canvas.density, noise_rng, look, canvas.px, supersample)
    rows = [(t, _box_pixels(parts, width, (height, width))) for t, parts in findings]
    return PhantomImage(image=image, findings=rows or [(NO_FINDING, None)])


# ----------------------------------------------------------------------------
# The `phantom:N` source: N images for one seed.


def phantom_images(
    count: int, seed: int = 0, resolution: int | tuple[int, int] = 256, **kwargs
) -> Iterator[PhantomImage]:
    """Yield `make_phantom(seed, index, resolution, **kwargs)` for index 0..count-1."""
    for index in range(count):
        yield make_phantom(seed, index, resolution, **kwargs)
