"""Procedural lateral lumbar-spine radiographs with boxed lesions: the project's default, shippable data.

Each image is a projected density map (soft tissue, bowel gas, iliac crest, T11-S3 with cortex, trabecular
texture and posterior elements) passed through a film-like tone curve with exposure, pose and noise
variation. Lesions of the seven VinDr-SpineXR types change the anatomy locally and come with boxes.
Units: the image width is 1.0; boxes are returned in output pixels. Deterministic per (seed, index).
"""

import dataclasses
from collections.abc import Iterator

import numpy as np

from clinical.labels import NO_FINDING
from clinical.phantom.canvas import Canvas, Vertebra, box_sdf, draw_blob
from clinical.phantom.lesions import (
    Box,
    apply_geometry,
    box_pixels,
    choose_levels,
    draw_implant,
    draw_lesion,
    sample_lesions,
)

LEVELS = ('T11', 'T12', 'L1', 'L2', 'L3', 'L4', 'L5', 'S1', 'S2', 'S3')
FIRST_SACRAL = 7
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
# Vertebral body (cortex, trabecular texture, endplate sclerosis) and posterior elements.


def _draw_vertebra(canvas: Canvas, v: Vertebra, texture: np.ndarray, look: dict) -> None:
    win = canvas.local(v, 1.3 * max(v.a, v.b))
    if win is not None:
        sl, xl, yl = win
        t = np.clip((v.a - xl) / (2 * v.a), 0, 1)  # 0 posterior wall .. 1 anterior wall.
        height = v.posterior + (v.anterior - v.posterior) * t
        height = height * (1 - 0.08 * (1 - np.clip(xl / v.a, -1, 1) ** 2))  # Concave endplates.
        ys = yl / height
        xl = xl / np.where(xl < 0, 1 - 0.07 * (1 - np.clip(ys / v.b, -1, 1) ** 2), 1)  # Concave anterior wall.
        sdf = box_sdf(xl, ys, v.a, v.b, 0.15 * v.b)
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
            box_sdf(xl - 1.2 * a, yl + 0.5 * b, 0.3 * a, 0.4 * b, 0.12 * b),  # Pedicle.
            box_sdf(xl - 1.72 * a, yl - 0.05 * b, 0.26 * a, 1.32 * b, 0.22 * a),  # Articular pillar and facets.
            box_sdf(sx * c + sy * s, -sx * s + sy * c, 0.75 * a, 0.42 * b, 0.2 * b),  # Spinous process.
        ]
        sdf = np.minimum.reduce(parts)
        inside = canvas.inside(sdf)
        cortex = inside - canvas.inside(sdf + look['cortex'])
        canvas.density[sl] += inside * look['posterior'] + cortex * look['cortical'] * 0.6


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


def _layout(anat: dict) -> list[Vertebra]:
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
        Vertebra(cx[i], cy[i], cphi[i], anat['half_width'][i], anat['half_height'][i], *anat['height_factor'][i],
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
    crest = Vertebra(l5.cx + rng.uniform(0.05, 0.2), l5.cy + rng.uniform(0.15, 0.25), rng.uniform(-0.4, 0.0), 1, 1)
    radii = (rng.uniform(0.28, 0.36), rng.uniform(0.2, 0.26))
    draw_blob(canvas, crest, (0, 0), radii, 0, look['trabecular'] * 0.1, rim=look['cortical'] * 0.35, radius=0.4)


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
    types = sample_lesions(lesion_rng, prevalence, multi_lesion_rate, lesions)
    chosen = [(t, choose_levels(lesion_rng, t, visible)) for t in types]
    for lesion_type, levels in chosen:
        apply_geometry(anat, lesion_type, levels, lesion_rng)
    verts = _layout(anat)

    canvas = Canvas(height * supersample, width * supersample)
    texture, *fields = _noise_fields(noise_rng, canvas.density.shape, canvas.px)
    _draw_background(canvas, rng, look, fields, aspect, verts)
    findings = []
    for lesion_type, levels in chosen:
        if lesion_type == 'Surgical implant':
            findings.append((lesion_type, draw_implant(canvas, verts, levels, lesion_rng)))
            continue
        for i in levels:
            findings.append((lesion_type, draw_lesion(canvas, verts, lesion_type, i, lesion_rng, look)))
    for v in verts:
        _draw_vertebra(canvas, v, texture, look)
    image = _expose(canvas.density, noise_rng, look, canvas.px, supersample)
    rows = [(t, box_pixels(parts, width, (height, width))) for t, parts in findings]
    return PhantomImage(image=image, findings=rows or [(NO_FINDING, None)])


# ----------------------------------------------------------------------------
# N phantoms for one seed, indices 0..N-1 (what phantom:N renders).


def phantom_images(
    count: int, seed: int = 0, resolution: int | tuple[int, int] = 256, **kwargs
) -> Iterator[PhantomImage]:
    """Yield `make_phantom(seed, index, resolution, **kwargs)` for index 0..count-1."""
    for index in range(count):
        yield make_phantom(seed, index, resolution, **kwargs)
