"""upfirdn2d: the reference and the CPU matrix-product path against explicit loops, gradcheck/gradgradcheck of the
op and its wrappers, and the CUDA path's autograd Function (adjoint padding, double backward) driven by a
reference-backed stand-in kernel."""

import itertools
import warnings

import numpy as np
import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import upfirdn2d as upfirdn2d_module
from torch_utils.ops.upfirdn2d import (
    _axis_matrices,
    _upfirdn2d_cuda,
    _upfirdn2d_ref,
    downsample2d,
    filter2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)

# ----------------------------------------------------------------------------
# Independent implementation: zero insertion, pad/crop, explicit correlation loops with the flipped filter, slicing.


def naive_upfirdn2d(x, f, up, down, padding, flip_filter, gain):
    x, f = np.asarray(x, dtype=np.float64), np.asarray(f, dtype=np.float64)
    f2d = (np.outer(f, f) if f.ndim == 1 else f) * gain
    if not flip_filter:
        f2d = f2d[::-1, ::-1]
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, padding
    n, c, h, w = x.shape
    stuffed = np.zeros([n, c, h * upy, w * upx])
    stuffed[:, :, ::upy, ::upx] = x
    padded = np.zeros([n, c, h * upy + py0 + py1, w * upx + px0 + px1])
    for row in range(padded.shape[2]):
        for col in range(padded.shape[3]):
            src_row, src_col = row - py0, col - px0
            if 0 <= src_row < stuffed.shape[2] and 0 <= src_col < stuffed.shape[3]:
                padded[:, :, row, col] = stuffed[:, :, src_row, src_col]
    fh, fw = f2d.shape
    full = np.zeros([n, c, padded.shape[2] - fh + 1, padded.shape[3] - fw + 1])
    for row in range(full.shape[2]):
        for col in range(full.shape[3]):
            full[:, :, row, col] = (padded[:, :, row : row + fh, col : col + fw] * f2d).sum(axis=(2, 3))
    return full[:, :, ::downy, ::downx]


FILTERS = {
    'none': None,
    'sep3': setup_filter([1, 2, 1], separable=True),
    'sep4': setup_filter([1, 3, 3, 1], separable=True),
    '2d4x4': setup_filter([1, 3, 3, 1]),
    '2d3x2': torch.tensor([[1.0, -2.0], [0.5, 3.0], [2.0, 0.25]]),  # Non-separable, non-symmetric, fh != fw.
}
SCALINGS = [  # ((upx, upy), (downx, downy))
    ((1, 1), (1, 1)),
    ((2, 2), (1, 1)),
    ((1, 1), (2, 2)),
    ((4, 4), (1, 1)),
    ((1, 1), (4, 4)),
    ((2, 1), (1, 2)),
    ((1, 4), (2, 1)),
]
PADDINGS = [(0, 0, 0, 0), (1, 2, 0, 3), (-1, 2, 2, -2)]


def _random(shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _filter_size(f):
    return (1, 1) if f is None else (f.shape[-1], f.shape[0])


# ----------------------------------------------------------------------------
# Reference and CPU matmul forward against the loops, over filters, factors, paddings, flips and gains.


@pytest.mark.parametrize('op', [_upfirdn2d_ref, upfirdn2d], ids=['ref', 'cpu_matmul'])
@pytest.mark.parametrize('fname', FILTERS)
@pytest.mark.parametrize('up,down', SCALINGS)
@pytest.mark.parametrize('padding', PADDINGS)
def test_forward_matches_loops(op, fname, up, down, padding):
    f = FILTERS[fname]
    x = _random([2, 3, 5, 4])
    fw, fh = _filter_size(f)
    if x.shape[2] * up[1] + padding[2] + padding[3] < fh or x.shape[3] * up[0] + padding[0] + padding[1] < fw:
        pytest.skip('padded input smaller than the filter')
    for flip_filter, gain in [(False, 1), (True, 0.5)]:
        y = op(x, f, up=list(up), down=list(down), padding=list(padding), flip_filter=flip_filter, gain=gain)
        f_np = np.ones([1, 1]) if f is None else f.numpy()
        expected = naive_upfirdn2d(x.numpy(), f_np, up, down, padding, flip_filter, gain)
        assert y.shape == expected.shape
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_cpu_matmul_takes_factorable_filters_only():
    args = (5, 4, 2, 2, 1, 1, 1, 2, 1, 2, False, 1.0, torch.float32)
    for fname in ('sep4', '2d4x4'):
        f = FILTERS[fname]
        taps = tuple(f.tolist()) if f.ndim == 1 else tuple(map(tuple, f.tolist()))
        ay_t, ax = _axis_matrices(taps, *args)
        assert ay_t.shape == (10, 5) and ax.shape == (4, 8) and ax.dtype == torch.float32
    assert _axis_matrices(tuple(map(tuple, FILTERS['2d3x2'].tolist())), *args) is None  # Falls back to the reference.


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_cpu_matmul_close_to_ref_in_low_precision(dtype):
    """The resampling of StyleGAN2's networks in float32 and bfloat16: values and gradients near the reference."""
    f = setup_filter([1, 3, 3, 1])
    x = _random([4, 8, 16, 16], dtype=torch.float32).to(dtype)
    dy = _random([4, 8, 32, 32], seed=1, dtype=torch.float32).to(dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for op in (lambda x, impl: upsample2d(x, f, impl=impl), lambda x, impl: downsample2d(x, f, impl=impl)):
        outputs = []
        for impl in ('cuda', 'ref'):
            xi = x.clone().requires_grad_(True)
            y = op(xi, impl)
            (y * dy[:, :, : y.shape[2], : y.shape[3]]).sum().backward()
            outputs.append((y.float(), xi.grad.float()))
        (y, dx), (y_ref, dx_ref) = outputs
        assert y.dtype == torch.float32 and y.shape == y_ref.shape
        torch.testing.assert_close(y, y_ref, **tol)
        torch.testing.assert_close(dx, dx_ref, **tol)


def test_public_op_int_arguments_and_channels_last():
    x = _random([1, 2, 6, 5]).to(memory_format=torch.channels_last)
    f = FILTERS['2d3x2']
    y = upfirdn2d(x, f, up=2, down=3, padding=1, flip_filter=True, gain=2)
    expected = naive_upfirdn2d(x.numpy(), f.numpy(), (2, 2), (3, 3), (1, 1, 1, 1), True, 2)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------
# Wrappers: output sizes, and a constant image stays constant away from the borders.


@pytest.mark.parametrize('taps', [[1, 3, 3, 1], [1, 2, 1], [1, 3, 5, 7, 7, 5, 3, 1]])
def test_wrappers_keep_constant_images(taps):
    f = setup_filter(taps)
    x = torch.ones([1, 2, 16, 16], dtype=torch.float64)
    up, down, same = upsample2d(x, f), downsample2d(x, f), filter2d(x, f)
    assert up.shape == (1, 2, 32, 32) and down.shape == (1, 2, 8, 8) and same.shape == x.shape
    border = len(taps)
    for y in (up, down, same):
        torch.testing.assert_close(
            y[:, :, border:-border, border:-border], torch.ones_like(y)[:, :, border:-border, border:-border]
        )


def test_wrappers_with_identity_filter():
    x = _random([1, 1, 4, 6])
    torch.testing.assert_close(filter2d(x, None), x)
    torch.testing.assert_close(downsample2d(x, None), x[:, :, ::2, ::2])
    up = upsample2d(x, None, up=[2, 1])
    assert up.shape == (1, 1, 4, 12) and torch.count_nonzero(up) == x.numel()
    torch.testing.assert_close(up.sum(), 2 * x.sum())


def test_setup_filter():
    assert setup_filter([1, 2, 3, 4, 4, 3, 2, 1]).ndim == 1  # >= 8 taps: separable by default.
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f.sum(), torch.tensor(1.0))
    torch.testing.assert_close(
        setup_filter([[1, 2], [3, 4]], normalize=False, flip_filter=True), torch.tensor([[4.0, 3], [2, 1]])
    )
    torch.testing.assert_close(setup_filter([1, 1], separable=True, gain=4), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(setup_filter(None), torch.ones([1, 1]))


# ----------------------------------------------------------------------------
# Finite-difference checks in float64, first and second order, for the op and its wrappers (on CPU tensors the
# wrappers take the matrix-product path).

GRAD_CASES = [
    lambda x: _upfirdn2d_ref(x, FILTERS['2d3x2'], up=[2, 1], down=[1, 2], padding=[1, -1, 2, 0]),
    lambda x: _upfirdn2d_ref(x, FILTERS['sep3'], up=2, down=2, padding=1, flip_filter=True, gain=3),
    lambda x: filter2d(x, FILTERS['2d4x4'], padding=[1, 0, -1, 2]),
    lambda x: upsample2d(x, FILTERS['2d4x4'], up=2),
    lambda x: upsample2d(x, FILTERS['sep3'], up=[1, 2]),
    lambda x: downsample2d(x, FILTERS['2d4x4']),
    lambda x: downsample2d(x, FILTERS['sep4'], down=[2, 1], flip_filter=True),
]


@pytest.mark.parametrize('case', range(len(GRAD_CASES)))
def test_ref_gradcheck(case):
    x = _random([1, 2, 4, 5]).requires_grad_(True)
    assert torch.autograd.gradcheck(GRAD_CASES[case], (x,))
    assert torch.autograd.gradgradcheck(GRAD_CASES[case], (x,))


# ----------------------------------------------------------------------------
# The CUDA path's Function with the reference standing in for the kernel (same calling convention as the plugin).


class ReferenceKernel:
    def upfirdn2d(self, x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain):
        assert f.ndim == 2 and f.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
        with torch.no_grad():
            return _upfirdn2d_ref(x, f, [upx, upy], [downx, downy], [padx0, padx1, pady0, pady1], flip_filter, gain)


CUDA_CASES = list(
    itertools.product(
        ['sep4', '2d3x2'], [((2, 1), (1, 2)), ((1, 1), (2, 2)), ((4, 2), (1, 1))], [(1, 2, -1, 0), (0, 0, 0, 0)]
    )
)


@pytest.mark.parametrize('fname,scaling,padding', CUDA_CASES)
def test_cuda_function_matches_ref(monkeypatch, fname, scaling, padding):
    monkeypatch.setattr(upfirdn2d_module, '_plugin', ReferenceKernel())
    f, (up, down) = FILTERS[fname], scaling
    kwargs = dict(up=list(up), down=list(down), padding=list(padding), flip_filter=fname == 'sep4', gain=1.5)
    cuda_fn = lambda x: _upfirdn2d_cuda(**kwargs).apply(x, f)
    ref_fn = lambda x: _upfirdn2d_ref(x, f, **kwargs)
    x = _random([2, 2, 6, 5]).requires_grad_(True)
    results = []
    for fn in (cuda_fn, ref_fn):
        y = fn(x)
        (dx,) = torch.autograd.grad((y * y.detach()).sum(), [x], create_graph=True)
        (ddx,) = torch.autograd.grad((dx * dx.detach().exp()).sum() + y.square().sum(), [x])
        results.append([y, dx, ddx])
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradgradcheck(cuda_fn, (x[:1, :1],))


# ----------------------------------------------------------------------------
# On a GPU: the compiled kernel itself against the reference, finite-difference checked in float64 to second order.


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('fname,scaling,padding', CUDA_CASES)
def test_cuda_kernel_on_gpu(fname, scaling, padding):
    assert upfirdn2d_module._init(), 'the upfirdn2d plugin failed to build'
    f, (up, down) = FILTERS[fname].cuda(), scaling
    kwargs = dict(up=list(up), down=list(down), padding=list(padding), flip_filter=fname == 'sep4', gain=1.5)
    x = _random([2, 2, 6, 5]).cuda().requires_grad_(True)
    cuda_fn = lambda x: upfirdn2d(x, f, impl='cuda', **kwargs)
    torch.testing.assert_close(cuda_fn(x), _upfirdn2d_ref(x, f, **kwargs), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cuda_fn(x.float()), _upfirdn2d_ref(x.float(), f, **kwargs), rtol=1e-5, atol=1e-5)
    assert torch.autograd.gradcheck(cuda_fn, (x[:1, :1],))
    assert torch.autograd.gradgradcheck(cuda_fn, (x[:1, :1],))


# ----------------------------------------------------------------------------
# impl selection: CPU tensors never build the plugin, whatever impl says.


def test_cuda_impl_on_cpu_runs_without_building(monkeypatch):
    def refuse_build(*args, **kwargs):
        raise AssertionError('get_plugin must not be called for CPU tensors')

    monkeypatch.setattr(custom_ops, 'get_plugin', refuse_build)
    monkeypatch.setattr(upfirdn2d_module, '_plugin', None)
    x, f = _random([1, 2, 6, 6]), FILTERS['2d4x4']
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for impl in ('cuda', 'auto'):
            for op in (upsample2d, downsample2d):
                torch.testing.assert_close(op(x, f, impl=impl), op(x, f, impl='ref'), rtol=1e-12, atol=0)
        monkeypatch.setattr(upfirdn2d_module, 'cpu_matmul', False)  # The switch: the reference, bit for bit.
        torch.testing.assert_close(upsample2d(x, f), upsample2d(x, f, impl='ref'), rtol=0, atol=0)
    assert upfirdn2d_module._plugin is None
    with pytest.raises(ValueError, match='impl'):
        filter2d(x, f, impl='triton')


# ----------------------------------------------------------------------------
