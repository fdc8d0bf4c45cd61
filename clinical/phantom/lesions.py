"""Lesions of the spine phantom: which of the seven VinDr-SpineXR types, at which levels, the anatomy changes they
make before layout, their local drawing after it, and their boxes in output pixels.
"""

import numpy as np

from clinical.labels import LESION_TYPES
from clinical.phantom.canvas import Vertebra, draw_blob

Box = tuple[float, float, float, float]  # (xmin, ymin, xmax, ymax) in output pixels.


# ----------------------------------------------------------------------------
# Lesion sampling: which types, at which levels; type-specific anatomy changes and boxes follow.


def sample_lesions(rng, prevalence, multi_lesion_rate, lesions):
    if lesions is not None:
        return list(lesions)
    if rng.random() >= prevalence:
        return []
    count = 2 + int(rng.random() < 0.3) if rng.random() < multi_lesion_rate else 1
    return list(rng.choice(LESION_TYPES, size=count, replace=False))


def choose_levels(rng, lesion_type: str, visible: set[int]) -> list[int]:
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


def apply_geometry(anat, lesion_type, levels, rng):
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


def draw_lesion(canvas, verts, lesion_type, i, rng, look):
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
            draw_blob(canvas, u, tip, (0.5 * length, 0.24 * u.b), ang, look['cortical'] * 2.2, radius=2 * u.a)
        upper = (v, [(-a - length, 0.3 * b), (-0.6 * a, 1.2 * b)])
        return [upper, (w, [(-w.a - length, -1.2 * w.b), (-0.6 * w.a, -0.3 * w.b)])]
    if lesion_type == 'Foraminal stenosis':  # Facet hypertrophy and a posterior spur fill the foramen.
        draw_blob(canvas, w, (1.42 * w.a, -1.25 * w.b), (0.3 * w.a, 0.6 * w.b), -0.2, look['posterior'] * 1.8)
        draw_blob(canvas, v, (1.08 * a, 0.9 * b), (0.2 * a, 0.16 * b), 0.4, look['cortical'] * 1.5)
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
        draw_blob(canvas, v, center, (r, r * rng.uniform(0.7, 1.0)), rng.uniform(0, 3), amount, radius=1.5 * a)
        return [(v, [(center[0] - 1.2 * r, center[1] - 1.2 * r), (center[0] + 1.2 * r, center[1] + 1.2 * r)])]
    raise ValueError(f'unknown lesion type {lesion_type!r}')


# ----------------------------------------------------------------------------
# Pedicle screws, posterior rods and sometimes an interbody cage, over consecutive levels.


def draw_implant(canvas, verts, levels, rng):
    metal, corners = rng.uniform(3.0, 4.0), []
    heads = []
    for i in levels:
        v = verts[i]
        y = -0.35 * v.b
        draw_blob(canvas, v, (0.55 * v.a, y), (1.0 * v.a, 0.1 * v.b), 0.08, metal, box=True)
        draw_blob(canvas, v, (1.6 * v.a, y - 0.1 * v.a), (0.17 * v.a, 0.2 * v.b), 0.08, metal, box=True)
        heads.append(v.to_global(1.6 * v.a, y - 0.1 * v.a))
        corners.append((v, [(-0.5 * v.a, -0.7 * v.b), (1.9 * v.a, 0.3 * v.b)]))
    for (x0, y0), (x1, y1) in zip(heads[:-1], heads[1:]):  # Rod segments between screw heads.
        rod = Vertebra((x0 + x1) / 2, (y0 + y1) / 2, np.arctan2(x1 - x0, y1 - y0), 1, 1)
        half = 0.5 * np.hypot(x1 - x0, y1 - y0)
        draw_blob(canvas, rod, (0, 0), (0.006, half + 0.01), 0, metal, box=True, radius=half + 0.02)
    if rng.random() < 0.5:  # Interbody cage in the disc of the first fused pair.
        v = verts[levels[0]]
        cage = (0, v.b + 0.5 * _disc_gap(v, verts[levels[0] + 1]))
        draw_blob(canvas, v, cage, (0.6 * v.a, 0.25 * v.b), 0, metal * 0.4, rim=metal * 0.6, box=True)
    return corners


def _disc_gap(v: Vertebra, w: Vertebra) -> float:
    return max(np.hypot(w.cx - v.cx, w.cy - v.cy) - v.b - w.b, 0.0)


# ----------------------------------------------------------------------------
# Boxes: local corner points of each involved vertebra -> global units -> padded output pixels.


def box_pixels(parts, px_out: int, shape: tuple[int, int]) -> Box:
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
