"""Adaptive discriminator augmentation (ADA, Karras et al. 2020): a differentiable, per-sample random pipeline.

Every op is differentiable with respect to the images (twice, for R1 through augmentation). Deliberate
differences from upstream:
- the blit ops (xflip, rotate90, xint) are exact pixel gathers with reflection, applied before the geometric
  ops. Upstream folds them into the geometric resampling, which blurs the highest frequencies slightly (the
  sym6 filter is not symmetric); the transforms and their probabilities are the same.
- with p == 0, and for samples that drew no transform, the expensive resampling / filtering is skipped
  (their output is the input, which the resampling reproduces only up to float rounding anyway).
Grayscale (1 channel): hue and saturation are skipped (they are identities on gray); lumaflip, a reflection of
the colour about the luma axis, becomes x -> -x, i.e. an intensity inversion about mid-gray 0 of the [-1, 1] range.
"""

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import misc, persistence
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix, upfirdn2d

# ----------------------------------------------------------------------------
# Orthogonal wavelet low-pass (decomposition) filters, from the published Daubechies symlet tables.

wavelets = {
    'sym2': [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025],
    'sym6': [
        0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
    ],
}  # fmt: skip

# ----------------------------------------------------------------------------
# Presets for train.py --augpipe (upstream names): b = blit, g = geom, c = color, f = filter, n = noise,
# final c = cutout.

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
augpipe_specs = {
    'blit': _BLIT,
    'geom': _GEOM,
    'color': _COLOR,
    'filter': dict(imgfilter=1),
    'noise': dict(noise=1),
    'cutout': dict(cutout=1),
    'bg': {**_BLIT, **_GEOM},
    'bgc': {**_BLIT, **_GEOM, **_COLOR},
    'bgcf': {**_BLIT, **_GEOM, **_COLOR, 'imgfilter': 1},
    'bgcfn': {**_BLIT, **_GEOM, **_COLOR, 'imgfilter': 1, 'noise': 1},
    'bgcfnc': {**_BLIT, **_GEOM, **_COLOR, 'imgfilter': 1, 'noise': 1, 'cutout': 1},
}

# ----------------------------------------------------------------------------
# Batched homogeneous matrices [N, R, C] whose entries are Python floats or per-sample [N] tensors.


def _matrix(rows, batch_size, device):
    entries = [torch.as_tensor(e, dtype=torch.float32, device=device).expand(batch_size) for row in rows for e in row]
    return torch.stack(entries, dim=1).reshape(batch_size, len(rows), len(rows[0]))


def _translate2d(tx, ty, n, device):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], n, device)


def _scale2d(sx, sy, n, device):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], n, device)


def _rotate2d(theta, n, device):
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], n, device)


def _translate3d(t, n, device):
    return _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], n, device)


def _scale3d(s, n, device):
    return _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], n, device)


def _rotate3d(axis, theta, n, device):
    # Rodrigues' formula about a unit axis (x, y, z).
    x, y, z = axis
    c, s = torch.cos(theta), torch.sin(theta)
    d = 1 - c
    rows = [
        [x * x * d + c, x * y * d - z * s, x * z * d + y * s, 0],
        [y * x * d + z * s, y * y * d + c, y * z * d - x * s, 0],
        [z * x * d - y * s, z * y * d + x * s, z * z * d + c, 0],
        [0, 0, 0, 1],
    ]
    return _matrix(rows, n, device)


# ----------------------------------------------------------------------------
# Band-split filter bank from a half-band wavelet: rows are zero-phase band-passes [0, pi/8], [pi/8, pi/4],
# [pi/4, pi/2], [pi/2, pi] (for 4 bands) that sum to a unit impulse.


def bandpass_filter_bank(lowpass, num_bands=4):
    """Builds the image-filter bank of ADA's `imgfilter` augmentation.

    Args:
        lowpass: Orthogonal wavelet low-pass taps, e.g. `wavelets['sym2']`.
        num_bands: Number of octave bands.

    Returns:
        float64 array [num_bands, taps], each row a symmetric filter; the rows sum to a unit impulse.
    """
    lo = np.asarray(lowpass, dtype=np.float64)
    hi = lo * (-1.0) ** np.arange(lo.size)  # H(-z): the mirror high-pass.
    lo2 = np.convolve(lo, lo[::-1]) / 2  # |H|^2 / 2, and hi2 likewise; orthogonality makes lo2 + hi2 = impulse.
    hi2 = np.convolve(hi, hi[::-1]) / 2
    bank = np.ones([1, 1])
    for _ in range(1, num_bands):
        dilated = np.zeros([bank.shape[0], bank.shape[1] * 2 - 1])
        dilated[:, ::2] = bank  # H(z) -> H(z^2) halves every band's frequencies ...
        bank = np.stack([np.convolve(row, lo2) for row in dilated])  # ... and lo2 removes the mirrored copy.
        top = np.zeros([1, bank.shape[1]])
        start = (bank.shape[1] - hi2.size) // 2
        top[0, start : start + hi2.size] = hi2
        bank = np.concatenate([bank, top])
    return bank


# ----------------------------------------------------------------------------
# Reflection padding of any width (F.pad's reflect mode needs pad < size; small images need several passes).


def _reflect_pad(x, pads):
    pads = list(pads)  # [left, right, top, bottom]
    while any(pads):
        limits = [x.shape[3] - 1] * 2 + [x.shape[2] - 1] * 2
        step = [min(p, lim) for p, lim in zip(pads, limits)]
        assert any(step), 'cannot reflect-pad a 1-pixel image'
        x = F.pad(x, step, mode='reflect')
        pads = [p - s for p, s in zip(pads, step)]
    return x


def _reflect_index(index, size):
    # Index into [0, size) mirrored at the border pixels (same convention as F.pad's 'reflect').
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


# ----------------------------------------------------------------------------
# Runs fn on the samples selected by mask [N] only; the others pass through unchanged.


def _apply_to_subset(images, mask, fn):
    if bool(mask.all()):
        return fn(images, torch.arange(images.shape[0], device=images.device))
    idx = mask.nonzero()[:, 0]
    if idx.numel() == 0:
        return images
    return images.index_copy(0, idx, fn(images[idx], idx))


# ----------------------------------------------------------------------------
# The augmentation pipeline; `p` (a buffer, adjusted by the training loop) scales every op's probability.


@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    def __init__(
        self,
        xflip=0, rotate90=0, xint=0, xint_max=0.125,
        scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
        brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0, brightness_std=0.2, contrast_std=0.5,
        hue_max=1, saturation_std=1,
        imgfilter=0, imgfilter_bands=(1, 1, 1, 1), imgfilter_std=1,
        noise=0, cutout=0, noise_std=0.1, cutout_size=0.5,
    ):  # fmt: skip
        super().__init__()
        self.register_buffer('p', torch.ones([]))  # Overall multiplier for augmentation probability.
        # Strengths (probability multipliers) and magnitudes, upstream names and defaults.
        self.xflip, self.rotate90, self.xint = float(xflip), float(rotate90), float(xint)
        self.scale, self.rotate, self.aniso, self.xfrac = float(scale), float(rotate), float(aniso), float(xfrac)
        self.brightness, self.contrast, self.lumaflip = float(brightness), float(contrast), float(lumaflip)
        self.hue, self.saturation = float(hue), float(saturation)
        self.imgfilter, self.noise, self.cutout = float(imgfilter), float(noise), float(cutout)
        self.xint_max = float(xint_max)
        self.scale_std, self.rotate_max, self.aniso_std = float(scale_std), float(rotate_max), float(aniso_std)
        self.xfrac_std, self.brightness_std, self.contrast_std = (
            float(xfrac_std),
            float(brightness_std),
            float(contrast_std),
        )
        self.hue_max, self.saturation_std = float(hue_max), float(saturation_std)
        self.imgfilter_bands, self.imgfilter_std = list(imgfilter_bands), float(imgfilter_std)
        self.noise_std, self.cutout_size = float(noise_std), float(cutout_size)

        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(wavelets['sym6']))
        fbank = bandpass_filter_bank(wavelets['sym2'], num_bands=4)
        if len(self.imgfilter_bands) != fbank.shape[0]:
            raise ValueError(f'imgfilter_bands needs {fbank.shape[0]} entries, got {len(self.imgfilter_bands)}')
        self.register_buffer('Hz_fbank', torch.as_tensor(fbank, dtype=torch.float32))

    def forward(self, images):
        """Augments a batch [N, C, H, W] (values around [-1, 1]); identity when p == 0 or N == 0."""
        assert isinstance(images, torch.Tensor) and images.ndim == 4
        if float(self.p) == 0 or images.shape[0] == 0:
            return images
        if self.xflip > 0 or self.rotate90 > 0 or self.xint > 0:
            images = self._blit(images)
        if self.scale > 0 or self.rotate > 0 or self.aniso > 0 or self.xfrac > 0:
            images = self._geometric(images)
        if self.brightness > 0 or self.contrast > 0 or self.lumaflip > 0 or self.hue > 0 or self.saturation > 0:
            images = self._color(images)
        if self.imgfilter > 0:
            images = self._filter(images)
        if self.noise > 0:
            images = self._noise(images)
        if self.cutout > 0:
            images = self._cutout(images)
        return images

    def _gated(self, probability, value, identity):
        # Per sample (dim 0): `value` with the given probability, else `identity`. Returns (result, hit [N]).
        hit = torch.rand([value.shape[0]], device=value.device) < probability
        return torch.where(hit.reshape([-1] + [1] * (value.ndim - 1)), value, identity), hit

    # Exact integer transforms: the source pixel of every output pixel, mirrored at the border, then one gather.
    def _blit(self, images):
        N, C, H, W = images.shape
        dev = images.device
        flip, _ = self._gated(self.xflip * self.p, torch.randint(0, 2, [N], device=dev), 0)
        turns, _ = self._gated(self.rotate90 * self.p, torch.randint(0, 4, [N], device=dev), 0)
        t = (torch.rand([N, 2], device=dev) * 2 - 1) * self.xint_max
        shift, _ = self._gated(self.xint * self.p, torch.round(t * torch.tensor([W, H], device=dev)), 0)

        ys, xs = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing='ij')
        x = xs - (W - 1) / 2 - shift[:, 0, None, None]  # [NHW] output coords about the centre, translation undone.
        y = ys - (H - 1) / 2 - shift[:, 1, None, None]
        cos = torch.tensor([1, 0, -1, 0], device=dev)[turns][:, None, None]
        sin = torch.tensor([0, 1, 0, -1], device=dev)[turns][:, None, None]
        x, y = cos * x - sin * y, sin * x + cos * y
        x = x * (1 - 2 * flip[:, None, None])
        col = _reflect_index(torch.round(x + (W - 1) / 2).long(), W)
        row = _reflect_index(torch.round(y + (H - 1) / 2).long(), H)
        index = (row * W + col).reshape(N, 1, H * W).expand(N, C, H * W)
        return images.reshape(N, C, H * W).gather(2, index).reshape(N, C, H, W)

    # Inverse geometric transform G_inv [N, 3, 3], output pixel -> source pixel, in coordinates about the centre;
    # `active` [N] marks the samples that drew any transform.
    def _geometric_matrix(self, N, H, W, dev):
        G_inv = _matrix(np.eye(3).tolist(), N, dev)
        active = torch.zeros([N], dtype=torch.bool, device=dev)
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(0, 1))  # P(pre or post rotation) = rotate * p.
        steps = [
            ('scale', self.scale),
            ('rotate', self.rotate),
            ('aniso', self.aniso),
            ('rotate', self.rotate),  # A second rotation after the anisotropic scaling.
            ('xfrac', self.xfrac),
        ]
        for op, strength in steps:
            if strength == 0:
                continue
            if op == 'scale':
                s, hit = self._gated(strength * self.p, torch.exp2(torch.randn([N], device=dev) * self.scale_std), 1)
                M_inv = _scale2d(1 / s, 1 / s, N, dev)
            elif op == 'rotate':
                theta = (torch.rand([N], device=dev) * 2 - 1) * np.pi * self.rotate_max
                theta, hit = self._gated(p_rot, theta, 0)
                M_inv = _rotate2d(theta, N, dev)
            elif op == 'aniso':
                s, hit = self._gated(strength * self.p, torch.exp2(torch.randn([N], device=dev) * self.aniso_std), 1)
                M_inv = _scale2d(1 / s, s, N, dev)
            else:
                t, hit = self._gated(strength * self.p, torch.randn([N, 2], device=dev) * self.xfrac_std, 0)
                M_inv = _translate2d(-t[:, 0] * W, -t[:, 1] * H, N, dev)
            G_inv, active = G_inv @ M_inv, active | hit
        return G_inv, active

    def _geometric(self, images):
        N, _, H, W = images.shape
        G_inv, active = self._geometric_matrix(N, H, W, images.device)
        return _apply_to_subset(images, active, lambda x, idx: self._resample(x, G_inv[idx]))

    # Anti-aliased resampling: reflect-pad, 2x wavelet upsample, bilinear grid_sample, 2x wavelet downsample.
    def _resample(self, images, G_inv):
        N, C, H, W = images.shape
        dev = images.device
        pad = self.Hz_geom.shape[0] // 4
        cx, cy = (W - 1) / 2, (H - 1) / 2
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=dev)
        corners = G_inv @ corners.t()  # [N, xyz, 4] source positions of the output corners.
        extent = corners[:, :2, :].permute(1, 0, 2).flatten(1)  # [xy, N*4]
        extent = torch.cat([-extent, extent]).max(dim=1).values  # [4]: reach left, up, right, down.
        margin = extent + torch.tensor([pad * 2 - cx, pad * 2 - cy] * 2, device=dev)
        margin = margin.clamp(min=0).minimum(torch.tensor([W - 1, H - 1] * 2, device=dev, dtype=margin.dtype))
        mx0, my0, mx1, my1 = (int(m) for m in margin.ceil().tolist())

        images = _reflect_pad(images, [mx0, mx1, my0, my1])
        G_inv = _translate2d((mx0 - mx1) / 2, (my0 - my1) / 2, N, dev) @ G_inv
        images = upfirdn2d.upsample2d(x=images, f=self.Hz_geom, up=2)
        G_inv = _scale2d(2, 2, N, dev) @ G_inv @ _scale2d(0.5, 0.5, N, dev)
        G_inv = _translate2d(-0.5, -0.5, N, dev) @ G_inv @ _translate2d(0.5, 0.5, N, dev)  # sym6 delay, as upstream.

        shape = [N, C, (H + pad * 2) * 2, (W + pad * 2) * 2]
        to_unit = _scale2d(2 / images.shape[3], 2 / images.shape[2], N, dev)  # Pixels -> [-1, 1] grid units.
        G_inv = to_unit @ G_inv @ _scale2d(shape[3] / 2, shape[2] / 2, N, dev)
        grid = F.affine_grid(theta=G_inv[:, :2, :], size=shape, align_corners=False)
        images = grid_sample_gradfix.grid_sample(images, grid)
        return upfirdn2d.downsample2d(x=images, f=self.Hz_geom, down=2, padding=-pad * 2, flip_filter=True)

    # Colour transforms as one affine 4x4 matrix on (r, g, b, 1); gray images use its luma-axis restriction.
    def _color_matrix(self, N, C, dev):
        M = _matrix(np.eye(4).tolist(), N, dev)
        I_4 = torch.eye(4, device=dev)
        v = torch.tensor([1, 1, 1, 0], dtype=torch.float32, device=dev) / np.sqrt(3)  # Luma axis.
        vv = torch.outer(v, v)
        p = self.p
        if self.brightness > 0:
            b, _ = self._gated(self.brightness * p, torch.randn([N], device=dev) * self.brightness_std, 0)
            M = _translate3d(b, N, dev) @ M
        if self.contrast > 0:
            c, _ = self._gated(self.contrast * p, torch.exp2(torch.randn([N], device=dev) * self.contrast_std), 1)
            M = _scale3d(c, N, dev) @ M
        if self.lumaflip > 0:  # Householder reflection about the luma axis.
            i, _ = self._gated(self.lumaflip * p, torch.randint(0, 2, [N, 1, 1], device=dev), 0)
            M = (I_4 - 2 * vv * i) @ M
        if self.hue > 0 and C == 3:
            theta, _ = self._gated(self.hue * p, (torch.rand([N], device=dev) * 2 - 1) * np.pi * self.hue_max, 0)
            M = _rotate3d(v[:3].tolist(), theta, N, dev) @ M
        if self.saturation > 0 and C == 3:
            s, _ = self._gated(
                self.saturation * p, torch.exp2(torch.randn([N, 1, 1], device=dev) * self.saturation_std), 1
            )
            M = (vv + (I_4 - vv) * s) @ M
        return M

    def _color(self, images):
        N, C, H, W = images.shape
        if C not in (1, 3):
            raise ValueError(f'colour augmentations support 1 or 3 channels, got {C}')
        M = self._color_matrix(N, C, images.device)
        flat = images.reshape(N, C, H * W)
        if C == 3:
            flat = M[:, :3, :3] @ flat + M[:, :3, 3:]
        else:  # A gray pixel is (x, x, x): average the three output rows, sum the three input columns.
            gray = M[:, :3, :].mean(dim=1, keepdim=True)  # [N, 1, 4]
            flat = flat * gray[:, :, :3].sum(dim=2, keepdim=True) + gray[:, :, 3:]
        return flat.reshape(N, C, H, W)

    # Random per-band gains with the expected (1/f-like) image power kept constant, as one separable filter.
    def _filter(self, images):
        N = images.shape[0]
        dev = images.device
        num_bands = self.Hz_fbank.shape[0]
        expected_power = torch.tensor([10, 1, 1, 1], dtype=torch.float32, device=dev) / 13
        g = torch.ones([N, num_bands], device=dev)
        active = torch.zeros([N], dtype=torch.bool, device=dev)
        for i, band_strength in enumerate(self.imgfilter_bands):
            gain = torch.exp2(torch.randn([N], device=dev) * self.imgfilter_std)
            gain, hit = self._gated(self.imgfilter * band_strength * self.p, gain, 1)
            t = torch.ones([N, num_bands], device=dev)
            t[:, i] = gain
            g = g * t / (expected_power * t.square()).sum(dim=-1, keepdim=True).sqrt()
            active = active | hit
        taps = g @ self.Hz_fbank  # [N, taps]
        return _apply_to_subset(images, active, lambda x, idx: _separable_filter(x, taps[idx]))

    def _noise(self, images):
        N, dev = images.shape[0], images.device
        sigma, _ = self._gated(self.noise * self.p, torch.randn([N, 1, 1, 1], device=dev).abs() * self.noise_std, 0)
        return images + torch.randn_like(images) * sigma

    def _cutout(self, images):
        N, _, H, W = images.shape
        dev = images.device
        size, _ = self._gated(self.cutout * self.p, torch.full([N, 1, 1], self.cutout_size, device=dev), 0)
        centre = torch.rand([N, 2, 1, 1], device=dev)
        coord_x = (torch.arange(W, device=dev).reshape(1, 1, W) + 0.5) / W
        coord_y = (torch.arange(H, device=dev).reshape(1, H, 1) + 0.5) / H
        outside_x = (coord_x - centre[:, 0]).abs() >= size / 2  # [N1W]
        outside_y = (coord_y - centre[:, 1]).abs() >= size / 2  # [NH1]
        return images * torch.logical_or(outside_x, outside_y).unsqueeze(1).to(images.dtype)


# ----------------------------------------------------------------------------
# Per-sample 1-D filter [N, taps] applied along both axes, with reflection at the border.


def _separable_filter(images, taps):
    N, C, H, W = images.shape
    misc.assert_shape(taps, [N, None])
    weight = taps.unsqueeze(1).repeat([1, C, 1]).reshape(N * C, 1, -1).to(images.dtype)  # [N*C, 1, taps]
    pad = weight.shape[2] // 2
    x = _reflect_pad(images.reshape(1, N * C, H, W), [pad] * 4)
    x = conv2d_gradfix.conv2d(input=x, weight=weight.unsqueeze(2), groups=N * C)
    x = conv2d_gradfix.conv2d(input=x, weight=weight.unsqueeze(3), groups=N * C)
    return x.reshape(N, C, H, W)


# ----------------------------------------------------------------------------
