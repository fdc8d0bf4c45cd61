"""Upsample, FIR filter, downsample (StyleGAN2-ADA's upfirdn2d), with an exact reference path.

For each image: insert up-1 zeros after every sample, pad (negative padding crops), convolve with the FIR filter
(correlate if flip_filter), then keep every down-th sample. The CUDA path runs the whole chain in one kernel; its
gradient is the same op with the filter flipped and up/down swapped, so it is differentiable to any order. On the CPU
a filter that factors into a column times a row runs as two small matrix products (see _upfirdn2d_matmul).
"""

import functools
import os

import numpy as np
import torch

from .. import custom_ops

# ----------------------------------------------------------------------------
# The compiled plugin, built on the first CUDA call; None until then or after a failed build.

_plugin = None


def _init() -> bool:
    global _plugin
    if _plugin is None:
        _plugin = custom_ops.get_plugin_or_none(
            'upfirdn2d',
            module_name='upfirdn2d_plugin',
            sources=['upfirdn2d.cpp', 'upfirdn2d.cu'],
            headers=['upfirdn2d.h'],
            source_dir=os.path.dirname(__file__),
        )
    return _plugin is not None


# ----------------------------------------------------------------------------
# Argument parsing: scaling int or [x, y]; padding int, [x, y] or [x0, x1, y0, y1]; filter size as (fw, fh).


def _parse_scaling(scaling):
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    assert isinstance(scaling, (list, tuple)) and len(scaling) == 2
    assert all(isinstance(s, int) for s in scaling)
    sx, sy = scaling
    assert sx >= 1 and sy >= 1
    return sx, sy


def _parse_padding(padding):
    if isinstance(padding, int):
        padding = [padding, padding]
    assert isinstance(padding, (list, tuple))
    assert all(isinstance(p, int) for p in padding)
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    assert len(padding) == 4
    padx0, padx1, pady0, pady1 = padding
    return padx0, padx1, pady0, pady1


def _get_filter_size(f):
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2)
    fw = f.shape[-1]
    fh = f.shape[0]
    assert fw >= 1 and fh >= 1
    return fw, fh


# ----------------------------------------------------------------------------
# Filter setup: a 2D [fh, fw] filter, or a 1D [f] filter applied separably along both axes.


def setup_filter(
    f,  # Taps: tensor, array or nested list; None = [1].
    device: torch.device = torch.device('cpu'),  # Device of the result.
    normalize: bool = True,  # Scale the taps to sum to 1 (the 2D sum when separable).
    flip_filter: bool = False,  # Flip the taps.
    gain: float = 1,  # Overall gain; a separable filter gets sqrt(gain) per axis.
    separable: bool = None,  # Keep a 1D filter 1D; None = only when it has at least 8 taps.
) -> torch.Tensor:  # float32 [fh, fw] filter, or [f] when separable.
    """Turns filter taps into the float32 filter tensor that upfirdn2d() expects.

    Example:
        >>> setup_filter([1, 3, 3, 1]).shape
        torch.Size([4, 4])
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    assert f.ndim in (0, 1, 2) and f.numel() > 0
    if f.ndim == 0:
        f = f[np.newaxis]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    assert f.ndim == (1 if separable else 2)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


# ----------------------------------------------------------------------------
# Public op (same signature as stylegan2-ada-pytorch).


def upfirdn2d(
    x: torch.Tensor,  # [N, C, H, W] input.
    f: torch.Tensor,  # float32 [fh, fw] or separable [f] filter from setup_filter(); None = identity.
    up=1,  # Upsampling factor: int or [x, y].
    down=1,  # Downsampling factor: int or [x, y].
    padding=0,  # Padding after upsampling: int, [x, y] or [x0, x1, y0, y1]; negative crops.
    flip_filter: bool = False,  # False = convolution, True = correlation.
    gain: float = 1,  # Overall scale of the output.
    impl: str = 'cuda',  # 'cuda' (CUDA kernel, or CPU matrix products; else the reference), 'auto' (same) or 'ref'.
) -> torch.Tensor:  # [N, C, (H * up_y + pad_y0 + pad_y1 - fh) // down_y + 1, (same along x)].
    """Upsamples by zero insertion, pads, applies a FIR filter and downsamples, as one op.

    Example:
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> upfirdn2d(x, torch.ones([1, 1]), up=2).squeeze()
        tensor([[0., 0., 1., 0.],
                [0., 0., 0., 0.],
                [2., 0., 3., 0.],
                [0., 0., 0., 0.]])
    """
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if custom_ops.use_cuda_kernel(x, impl, _init):
        return _upfirdn2d_cuda(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain).apply(x, f)
    if cpu_matmul and impl != 'ref' and x.device.type == 'cpu':
        return _upfirdn2d_matmul(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


# ----------------------------------------------------------------------------
# Exact reference in plain PyTorch ops: zero insertion by reshape + pad, grouped F.conv2d (two 1D passes for a
# separable filter) with the stride doing the downsampling.


def _upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.dtype.is_floating_point
    assert not f.requires_grad
    n, c, h, w = x.shape
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)

    x = x.reshape([n, c, h, 1, w, 1])  # Zero insertion: up-1 zeros after every sample.
    x = torch.nn.functional.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape([n, c, h * upy, w * upx])
    x = torch.nn.functional.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0) : x.shape[2] - max(-pady1, 0), max(-padx0, 0) : x.shape[3] - max(-padx1, 0)]

    f = f.to(torch.promote_types(f.dtype, x.dtype)) * (gain ** (f.ndim / 2))
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))  # F.conv2d correlates; flipping makes it a convolution.
    if f.ndim == 2:
        weight = f[np.newaxis, np.newaxis].repeat([c, 1, 1, 1])  # [C, 1, fh, fw]
        return torch.nn.functional.conv2d(x, weight, stride=[downy, downx], groups=c)
    weight = f[np.newaxis, np.newaxis].repeat([c, 1, 1])  # [C, 1, f]
    x = torch.nn.functional.conv2d(x, weight.unsqueeze(2), stride=[1, downx], groups=c)
    return torch.nn.functional.conv2d(x, weight.unsqueeze(3), stride=[downy, 1], groups=c)


# ----------------------------------------------------------------------------
# CPU path: along each axis the op is linear, so a filter that is a column times a row (every filter StyleGAN2 uses)
# makes it y = A_y^T x A_x with small banded matrices, found by running the reference on the identity. The grouped
# convolution of the reference runs at a few GFLOP/s on CPUs and a matrix product at hundreds: a training step at
# cfg=cpu is 7-30% faster. Equal to the reference up to rounding (tests/torch_utils/test_upfirdn2d.py).

cpu_matmul = True  # False: CPU tensors take the reference path.


def _upfirdn2d_matmul(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    taps = tuple(f.tolist()) if f.ndim == 1 else tuple(map(tuple, f.tolist()))  # Hashable, for the cache.
    scaling = (upx, upy, downx, downy, padx0, padx1, pady0, pady1)
    matrices = _axis_matrices(taps, x.shape[2], x.shape[3], *scaling, flip_filter, gain, x.dtype)
    if matrices is None:
        return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    ay_t, ax = matrices
    return torch.matmul(ay_t, torch.matmul(x, ax))


@functools.lru_cache(maxsize=512)
def _axis_matrices(taps, h, w, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain, dtype):
    """(A_y^T [out_h, h], A_x [w, out_w]) in `dtype`, or None when the 2D filter is not a column times a row."""
    # Built outside any torch.func transform (DP-SGD asks inside one): cached tensors must not carry its level.
    with torch._C._DisableFuncTorch():
        f = torch.tensor(taps, dtype=torch.float64)
        fy, fx = (f, f) if f.ndim == 1 else (f.sum(1), f.sum(0) / f.sum())
        if f.ndim == 2 and not torch.allclose(torch.outer(fy, fx), f, rtol=1e-12, atol=0):
            return None
        ax = _axis_matrix(fx, w, upx, downx, padx0, padx1, flip_filter, gain**0.5)
        ay = _axis_matrix(fy, h, upy, downy, pady0, pady1, flip_filter, gain**0.5)
        return ay.t().contiguous().to(dtype), ax.to(dtype)


def _axis_matrix(f, length, up, down, pad0, pad1, flip_filter, gain):
    eye = torch.eye(length, dtype=torch.float64).reshape(length, 1, 1, length)
    y = _upfirdn2d_ref(eye, f[None], up=[up, 1], down=[down, 1], padding=[pad0, pad1, 0, 0], flip_filter=flip_filter,
                       gain=gain)  # fmt: skip
    return y.reshape(length, -1)


# ----------------------------------------------------------------------------
# CUDA path: an autograd.Function per configuration, cached. A separable filter runs as two 1D passes. The
# gradient is upfirdn2d of dy with up/down swapped, the filter flipped and the padding of the adjoint.

_upfirdn2d_cuda_cache = {}


def _upfirdn2d_cuda(up=1, down=1, padding=0, flip_filter=False, gain=1):
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    key = (upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, float(gain))
    if key in _upfirdn2d_cuda_cache:
        return _upfirdn2d_cuda_cache[key]

    def run_kernel(x, f):
        f = f.to(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32).contiguous()
        if f.ndim == 2:
            return _plugin.upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain)
        y = _plugin.upfirdn2d(x, f.unsqueeze(0), upx, 1, downx, 1, padx0, padx1, 0, 0, flip_filter, gain)
        return _plugin.upfirdn2d(y, f.unsqueeze(1), 1, upy, 1, downy, 0, 0, pady0, pady1, flip_filter, 1.0)

    class Upfirdn2dCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, f):
            assert isinstance(x, torch.Tensor) and x.ndim == 4
            assert isinstance(f, torch.Tensor) and f.ndim in (1, 2) and not f.requires_grad
            ctx.save_for_backward(f)
            ctx.x_shape = x.shape
            return run_kernel(x, f)

        @staticmethod
        def backward(ctx, dy):
            (f,) = ctx.saved_tensors
            _, _, ih, iw = ctx.x_shape
            _, _, oh, ow = dy.shape
            fw, fh = _get_filter_size(f)
            adjoint_padding = [
                fw - padx0 - 1,
                iw * upx - ow * downx + padx0 - upx + 1,
                fh - pady0 - 1,
                ih * upy - oh * downy + pady0 - upy + 1,
            ]
            dx = None
            if ctx.needs_input_grad[0]:
                adjoint = _upfirdn2d_cuda(
                    up=[downx, downy], down=[upx, upy], padding=adjoint_padding, flip_filter=not flip_filter, gain=gain
                )
                dx = adjoint.apply(dy, f)
                assert dx.shape == ctx.x_shape
            return dx, None

    _upfirdn2d_cuda_cache[key] = Upfirdn2dCuda
    return Upfirdn2dCuda


# ----------------------------------------------------------------------------
# Convenience wrappers with the padding that keeps the image centred (same formulas as stylegan2-ada-pytorch).


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Filters a batch of 2D images with a FIR filter; padding 0 keeps the size.

    Args:
        x: [N, C, H, W] images.
        f: Filter from setup_filter(); None = identity.
        padding: Extra padding, int, [x, y] or [x0, x1, y0, y1].
        flip_filter: False = convolution, True = correlation.
        gain: Overall scale of the output.
        impl: 'cuda', 'auto' or 'ref'.
    """
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Upsamples a batch of 2D images by zero insertion and filtering; the output is up times larger.

    Args:
        x: [N, C, H, W] images.
        f: Filter from setup_filter(); None = identity.
        up: Factor, int or [x, y].
        padding: Extra padding, int, [x, y] or [x0, x1, y0, y1].
        flip_filter: False = convolution, True = correlation.
        gain: Overall scale; the filter is also scaled by up_x * up_y to keep the mean.
        impl: 'cuda', 'auto' or 'ref'.
    """
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw + upx - 1) // 2,
        padx1 + (fw - upx) // 2,
        pady0 + (fh + upy - 1) // 2,
        pady1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Filters and downsamples a batch of 2D images; the output is down times smaller.

    Args:
        x: [N, C, H, W] images.
        f: Filter from setup_filter(); None = identity.
        down: Factor, int or [x, y].
        padding: Extra padding, int, [x, y] or [x0, x1, y0, y1].
        flip_filter: False = convolution, True = correlation.
        gain: Overall scale of the output.
        impl: 'cuda', 'auto' or 'ref'.
    """
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw - downx + 1) // 2,
        padx1 + (fw - downx) // 2,
        pady0 + (fh - downy + 1) // 2,
        pady1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


# ----------------------------------------------------------------------------
