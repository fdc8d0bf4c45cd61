"""2D convolution fused with FIR-filtered up/downsampling (upstream module path and signature).

Reference semantics of conv2d_resample(x, w, f, up, down, padding):
    1. upfirdn2d(x, f, up=up, padding=p, gain=up**2)   (filter only if up > 1; padding p includes the
       filter-centring adjustment below)
    2. conv2d(., w) without padding                     (correlation if flip_weight, else convolution)
    3. upfirdn2d(., f, down=down)                       (only if down > 1)
The function reorders these linear, shift-invariant steps into cheaper equivalents (strided and
transposed convolutions, 1x1 shortcuts) that give the same result.
"""

import torch

from .. import misc
from . import conv2d_gradfix, upfirdn2d
from .upfirdn2d import _get_filter_size, _parse_padding

# ----------------------------------------------------------------------------
# Static weight shape (plain ints, also while tracing).


def _get_weight_shape(w: torch.Tensor) -> list[int]:
    with misc.suppress_tracer_warnings():
        shape = [int(size) for size in w.shape]
    misc.assert_shape(w, shape)
    return shape


# ----------------------------------------------------------------------------
# One convolution through conv2d_gradfix. `flip_weight=False` turns correlation into true convolution.


def _conv2d_wrapper(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    if not flip_weight:
        w = w.flip([2, 3])
    if transpose:
        return conv2d_gradfix.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return conv2d_gradfix.conv2d(x, w, stride=stride, padding=padding, groups=groups)


# ----------------------------------------------------------------------------
# Weight of conv2d(., w) rearranged for conv_transpose2d: [out, in/g, kh, kw] -> [in, out/g, kh, kw].


def _transpose_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    out_channels, in_per_group, kh, kw = _get_weight_shape(w)
    w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw)
    return w.transpose(1, 2).reshape(groups * in_per_group, out_channels // groups, kh, kw)


# ----------------------------------------------------------------------------
# Public entry point.


@misc.profiled_function
def conv2d_resample(
    x: torch.Tensor,  # [N, in_channels, H, W].
    w: torch.Tensor,  # [out_channels, in_channels // groups, kh, kw].
    f: torch.Tensor = None,  # FIR filter from upfirdn2d.setup_filter(); None = box.
    up: int = 1,  # Integer upsampling factor.
    down: int = 1,  # Integer downsampling factor.
    padding=0,  # int, [x, y] or [x0, x1, y0, y1], in input pixels after `up`.
    groups: int = 1,  # Grouped convolution.
    flip_weight: bool = True,  # True = correlation (like F.conv2d), False = convolution.
    flip_filter: bool = False,  # True = correlate with f, False = convolve with f.
) -> torch.Tensor:  # [N, out_channels, H', W'].
    """Convolves `x` with `w`, upsampling by `up` before and downsampling by `down` after, with `f`."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    assert isinstance(w, torch.Tensor) and w.ndim == 4 and w.dtype == x.dtype
    assert f is None or (isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.dtype == torch.float32)
    assert isinstance(up, int) and up >= 1
    assert isinstance(down, int) and down >= 1
    assert isinstance(groups, int) and groups >= 1
    out_channels, in_per_group, kh, kw = _get_weight_shape(w)
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Extra padding that keeps the filtered signal centred on the input pixels.
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    pad = [px0, px1, py0, py1]
    common = dict(groups=groups, flip_weight=flip_weight)

    # 1x1 kernel, downsampling only: a pointwise conv commutes with resampling, so resample first.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter)
        return _conv2d_wrapper(x, w, **common)

    # 1x1 kernel, upsampling only: convolve at the low resolution, then upsample.
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv2d_wrapper(x, w, **common)
        return upfirdn2d.upfirdn2d(x, f, up=up, padding=pad, gain=up**2, flip_filter=flip_filter)

    # Downsampling only: filter first, then a strided conv replaces conv + decimation.
    if down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return _conv2d_wrapper(x, w, stride=down, **common)

    if up > 1:
        return _upsampling_conv(x, w, f, up, down, pad, groups, flip_weight, flip_filter)

    # No resampling and symmetric, non-negative padding: plain conv2d does it all.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv2d_wrapper(x, w, padding=[py0, px0], **common)

    # Generic path (asymmetric or negative padding, no resampling): pad/crop, then a valid conv.
    x = upfirdn2d.upfirdn2d(x, None, padding=pad, flip_filter=flip_filter)
    return _conv2d_wrapper(x, w, **common)


# ----------------------------------------------------------------------------
# Upsampling (optionally followed by downsampling): a stride-`up` transposed conv does zero insertion and
# the convolution at once; the FIR filter follows, which is equivalent because both are linear and
# shift-invariant. The transposed conv behaves as if the upsampled signal were already padded by
# (k - 1, k - up) on the (left, right); what the requested padding exceeds or lacks is applied by
# the filter step, and a shared crop is handed to the transposed conv so it is never computed.


def _upsampling_conv(x, w, f, up, down, pad, groups, flip_weight, flip_filter):
    _, _, kh, kw = _get_weight_shape(w)
    px0, px1, py0, py1 = pad
    px0, px1 = px0 - (kw - 1), px1 - (kw - up)
    py0, py1 = py0 - (kh - 1), py1 - (kh - up)
    crop_x = max(min(-px0, -px1), 0)
    crop_y = max(min(-py0, -py1), 0)

    # conv_transpose2d convolves (flipped kernel), so flip once more to keep the requested orientation.
    w = _transpose_weight(w, groups)
    x = _conv2d_wrapper(
        x, w, stride=up, padding=[crop_y, crop_x], groups=groups, transpose=True, flip_weight=not flip_weight
    )
    pad = [px0 + crop_x, px1 + crop_x, py0 + crop_y, py1 + crop_y]
    x = upfirdn2d.upfirdn2d(x, f, padding=pad, gain=up**2, flip_filter=flip_filter)
    if down > 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


# ----------------------------------------------------------------------------
