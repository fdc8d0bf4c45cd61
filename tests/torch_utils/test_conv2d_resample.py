"""torch_utils.ops.conv2d_resample: every fast path against a naive zero-insert / filter / conv / decimate."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_resample

# ----------------------------------------------------------------------------
# Naive reference, written out step by step with F.pad / F.conv2d only:
#   zero-insert by `up` -> pad (padding + filter centring) -> convolve with f * up**2 (if up > 1)
#   -> conv2d with w (no padding) -> convolve with f and keep every `down`-th sample (if down > 1).


def _filter_2d(f, dtype):
    f = f.to(dtype)
    return torch.outer(f, f) if f.ndim == 1 else f  # A 1D filter is separable: applied along both axes.


def _fir(x, f2d, gain=1.0, flip_filter=False):
    kernel = f2d if flip_filter else f2d.flip([0, 1])  # F.conv2d correlates; unflipped f means convolution.
    channels = x.shape[1]
    return F.conv2d(x, (kernel * gain)[None, None].repeat(channels, 1, 1, 1), groups=channels)


def _naive(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    f2d = _filter_2d(f, x.dtype) if f is not None else torch.ones([1, 1], dtype=x.dtype)
    fh, fw = f2d.shape
    px0, px1, py0, py1 = [padding] * 4 if isinstance(padding, int) else padding
    if up > 1:
        px0, px1, py0, py1 = (
            px0 + (fw + up - 1) // 2,
            px1 + (fw - up) // 2,
            py0 + (fh + up - 1) // 2,
            py1 + (fh - up) // 2,
        )
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2

    n, c, h, width = x.shape
    y = x.new_zeros([n, c, h * up, width * up])
    y[:, :, ::up, ::up] = x
    y = F.pad(y, [px0, px1, py0, py1])  # Negative amounts crop.
    if up > 1:
        y = _fir(y, f2d, gain=up**2, flip_filter=flip_filter)
    y = F.conv2d(y, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        y = _fir(y, f2d, flip_filter=flip_filter)[:, :, ::down, ::down]
    return y


# ----------------------------------------------------------------------------
# Cases cover each branch of conv2d_resample: (up, down, kernel, padding, groups).

CASES = [
    (1, 1, 3, 1, 1),  # Plain conv2d with symmetric padding.
    (1, 1, 3, [2, 0, 1, -1], 1),  # Asymmetric / negative padding: generic path.
    (2, 1, 3, 1, 1),  # Transposed conv, as in the synthesis network.
    (2, 1, 3, 1, 2),  # ... grouped.
    (2, 1, 3, [0, 2, 1, -1], 1),  # ... with padding left for the filter step.
    (2, 1, 3, -2, 1),  # ... with a crop handed to the transposed conv.
    (4, 1, 3, 0, 1),
    (1, 2, 3, 1, 1),  # Strided conv, as in the discriminator.
    (1, 2, 3, 1, 2),
    (2, 1, 1, 0, 1),  # 1x1 kernels: convolve, then upsample ...
    (1, 2, 1, 0, 2),  # ... or downsample, then convolve.
    (2, 2, 3, 1, 2),  # Up and down together.
]


def _inputs(groups, kernel, dtype=torch.float64, size=(7, 6), seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([2, 4, *size], dtype=dtype, generator=gen)
    w = torch.randn([6, 4 // groups, kernel, kernel], dtype=dtype, generator=gen)
    return x, w


ASYMMETRIC_FILTERS = {
    '2d_even': torch.tensor([[1.0, 2.0, 3.0, 0.5], [0.5, 1.0, 2.0, 1.0], [2.0, 1.0, 0.5, 0.2], [0.1, 0.4, 1.0, 2.0]]),
    '1d_odd': torch.tensor([0.2, 0.5, 0.3]),
}


@pytest.mark.parametrize('up, down, kernel, padding, groups', CASES)
@pytest.mark.parametrize('flip_weight', [True, False])
@pytest.mark.parametrize('filter_name', list(ASYMMETRIC_FILTERS))
def test_matches_naive_reference(up, down, kernel, padding, groups, flip_weight, filter_name):
    x, w = _inputs(groups, kernel)
    f = ASYMMETRIC_FILTERS[filter_name]
    for flip_filter in (False, True):
        args = dict(up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight, flip_filter=flip_filter)
        out = conv2d_resample.conv2d_resample(x, w, f=f, **args)
        ref = _naive(x, w, f, **args)
        assert out.shape == ref.shape
        assert torch.allclose(out, ref, rtol=0, atol=1e-10), (out - ref).abs().max()


def test_stylegan_shapes_and_default_filter():
    x, w = _inputs(1, 3, dtype=torch.float32, size=(8, 8))
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(f, f) / 64
    assert conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1).shape == (2, 6, 16, 16)
    assert conv2d_resample.conv2d_resample(x, w, f, down=2, padding=1).shape == (2, 6, 4, 4)
    out = conv2d_resample.conv2d_resample(x, w, None, padding=1)
    assert torch.allclose(out, F.conv2d(x, w, padding=1), atol=1e-5)


def test_float32_matches_float64():
    x, w = _inputs(2, 3)
    f = ASYMMETRIC_FILTERS['2d_even']
    out64 = conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1, groups=2)
    out32 = conv2d_resample.conv2d_resample(x.float(), w.float(), f, up=2, padding=1, groups=2)
    assert torch.allclose(out32.double(), out64, atol=1e-4)


@pytest.mark.parametrize('up, down', [(2, 1), (1, 2)])
def test_gradcheck_and_gradgradcheck(up, down):
    x, w = _inputs(2, 3, size=(3, 3))
    x, w = x[:1].requires_grad_(), w[:2].requires_grad_()
    f = ASYMMETRIC_FILTERS['1d_odd']
    op = lambda x, w: conv2d_resample.conv2d_resample(x, w, f, up=up, down=down, padding=1, groups=2)
    assert torch.autograd.gradcheck(op, (x, w), fast_mode=True)
    assert torch.autograd.gradgradcheck(op, (x, w), fast_mode=True)


def test_rejects_bad_arguments():
    x, w = _inputs(1, 3)
    with pytest.raises(AssertionError):
        conv2d_resample.conv2d_resample(x, w.float())  # dtype mismatch
    with pytest.raises(AssertionError):
        conv2d_resample.conv2d_resample(x, w, up=0)
    with pytest.raises(AssertionError):
        conv2d_resample.conv2d_resample(x, w, f=torch.ones(3, dtype=torch.float64))  # Filters are float32.
