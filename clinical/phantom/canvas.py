"""Drawing primitives of the spine phantom: local vertebra frames, the supersampled density canvas, signed
distance functions and filled blobs. Shared by the anatomy (clinical.phantom.render) and the lesions
(clinical.phantom.lesions); units as there (image width 1.0).
"""

import dataclasses

import numpy as np

# ----------------------------------------------------------------------------
# One vertebra as drawn: pose, size, shape changes and local findings. Its (cx, cy, phi) also serves as a
# plain local frame for rods, bowel gas and the iliac crest.


@dataclasses.dataclass
class Vertebra:
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


class Canvas:
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

    def local(self, v: Vertebra, radius: float):
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


def box_sdf(x, y, a, b, r):
    qx, qy = np.abs(x) - (a - r), np.abs(y) - (b - r)
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def ellipse_sdf(x, y, a, b, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    x, y = x * c - y * s, x * s + y * c
    k0 = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    k1 = np.sqrt((x / a**2) ** 2 + (y / b**2) ** 2) + 1e-9
    return k0 * (k0 - 1) / k1


# ----------------------------------------------------------------------------
# A filled, rimmed blob (spur, focus, stenosis) or a metal part in a vertebra's local frame.


def draw_blob(canvas, v, center, radii, angle, amount, rim=0.0, radius=None, box=False):
    win = canvas.local(v, radius or 3.4 * v.a)
    if win is None:
        return
    sl, xl, yl = win
    x, y = xl - center[0], yl - center[1]
    if box:
        c, s = np.cos(angle), np.sin(angle)
        sdf = box_sdf(x * c - y * s, x * s + y * c, radii[0], radii[1], 0.3 * min(radii))
    else:
        sdf = ellipse_sdf(x, y, radii[0], radii[1], angle)
    inside = canvas.inside(sdf)
    canvas.density[sl] += inside * amount + (inside - canvas.inside(sdf + 1.5 / canvas.px)) * rim
