"""ADA pipeline on CPU: wavelet/filter-bank maths, exact blit ops, colour invariants, grayscale handling, presets,
and R1 through augmentation (double backward)."""

import pickle

import numpy as np
import pytest
import torch

from training import augment, networks


def make_pipe(p=1.0, **kwargs):
    pipe = augment.AugmentPipe(**kwargs)
    pipe.p.copy_(torch.as_tensor(p))
    return pipe


def images(n=8, c=3, res=16, seed=0):
    return torch.randn([n, c, res, res], generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------


@pytest.mark.parametrize('name, moments', [('sym2', 2), ('sym6', 6)])
def test_wavelet_taps_are_orthonormal_with_vanishing_moments(name, moments):
    h = np.asarray(augment.wavelets[name])
    assert h.sum() == pytest.approx(np.sqrt(2), abs=1e-12)
    auto = np.correlate(h, h, mode='full')[h.size - 1 :: 2]  # sum_k h[k] h[k + 2n], n >= 0
    np.testing.assert_allclose(auto, np.eye(1, auto.size)[0], atol=1e-12)
    g = h[::-1] * (-1.0) ** np.arange(h.size)  # Quadrature-mirror high-pass.
    k = np.arange(h.size, dtype=np.float64)
    for m in range(moments):
        assert abs((g * k**m).sum()) < 1e-7 * max(1, (k**m).sum())


def test_filter_bank_partitions_the_spectrum():
    bank = augment.bandpass_filter_bank(augment.wavelets['sym2'])
    assert bank.shape == (4, 43)
    impulse = np.zeros(43)
    impulse[21] = 1
    np.testing.assert_allclose(bank.sum(axis=0), impulse, atol=1e-12)
    np.testing.assert_allclose(bank, bank[:, ::-1], atol=1e-12)
    response = np.abs(np.fft.rfft(bank, n=1024, axis=1))
    omega = np.linspace(0, np.pi, response.shape[1])
    peaks = omega[response.argmax(axis=1)]
    edges = [0, np.pi / 8, np.pi / 4, np.pi / 2, np.pi]
    for band, peak in enumerate(peaks):
        assert edges[band] <= peak <= edges[band + 1]


def test_reflect_pad_matches_numpy_even_past_the_image_size():
    x = torch.arange(2 * 5 * 4, dtype=torch.float32).reshape(1, 2, 5, 4)
    out = augment._reflect_pad(x, [7, 2, 9, 1])
    ref = np.pad(x.numpy(), [(0, 0), (0, 0), (9, 1), (7, 2)], mode='reflect')
    np.testing.assert_array_equal(out.numpy(), ref)


def test_p_is_a_buffer_and_p_zero_is_identity():
    pipe = make_pipe(p=0.0, **augment.augpipe_specs['bgcfnc'])
    assert 'p' in dict(pipe.named_buffers())
    x = images()
    assert torch.equal(pipe(x), x)


def test_pickle_round_trip_keeps_p_and_settings():
    pipe = make_pipe(p=0.3, **augment.augpipe_specs['bgc'])
    clone = pickle.loads(pickle.dumps(pipe))
    assert float(clone.p) == pytest.approx(0.3) and clone.hue == 1 and clone.init_kwargs['xflip'] == 1
    torch.manual_seed(0)
    a = pipe(images())
    torch.manual_seed(0)
    assert torch.equal(clone(images()), a)


def test_samples_that_draw_nothing_are_unchanged():
    torch.manual_seed(0)
    x = images()
    assert torch.equal(make_pipe(p=1e-9, **augment.augpipe_specs['bgcfnc'])(x), x)


def test_xflip_only_flips():
    torch.manual_seed(0)
    x = images(n=16)
    out = make_pipe(xflip=1)(x)
    flipped = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)]
    same = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert any(flipped) and any(same)


def test_rotate90_only_rotates():
    torch.manual_seed(0)
    x = images(n=16)
    out = make_pipe(rotate90=1)(x)
    turns = [[k for k in range(4) if torch.equal(o, xi.rot90(k, dims=(1, 2)))] for o, xi in zip(out, x)]
    assert all(len(t) == 1 for t in turns)
    assert len({t[0] for t in turns}) > 1


def test_xint_is_an_integer_shift_with_reflection():
    torch.manual_seed(0)
    x = images(n=8, res=16)
    out = make_pipe(xint=1, xint_max=0.125)(x)
    for o, xi in zip(out, x):
        padded = augment._reflect_pad(xi[None], [2, 2, 2, 2])[0]
        crops = [padded[:, 2 - dy : 18 - dy, 2 - dx : 18 - dx] for dy in range(-2, 3) for dx in range(-2, 3)]
        assert any(torch.equal(o, crop) for crop in crops)


def test_geometric_resampling_is_exact_for_identity_and_integer_shift():
    pipe = make_pipe(scale=1)
    x = images(n=2)
    eye = augment._matrix(np.eye(3).tolist(), 2, 'cpu')
    torch.testing.assert_close(pipe._resample(x, eye), x, atol=1e-4, rtol=0)
    shifted = pipe._resample(x, augment._translate2d(1.0, 0.0, 2, 'cpu'))
    torch.testing.assert_close(shifted[..., :-1], x[..., 1:], atol=1e-4, rtol=0)


def test_brightness_and_contrast_are_per_sample_affine():
    torch.manual_seed(0)
    x = images()
    shift = make_pipe(brightness=1)(x) - x
    assert torch.allclose(shift, shift.mean(dim=[1, 2, 3], keepdim=True), atol=1e-5)
    ratio = make_pipe(contrast=1)(x) / x
    assert torch.allclose(ratio, ratio.mean(dim=[1, 2, 3], keepdim=True), atol=1e-4)


def test_hue_and_saturation_keep_luma():
    torch.manual_seed(0)
    x = images()
    out = make_pipe(hue=1, saturation=1)(x)
    assert not torch.allclose(out, x)
    torch.testing.assert_close(out.sum(dim=1), x.sum(dim=1), atol=1e-4, rtol=0)


def test_grayscale_colour_ops_run_and_lumaflip_inverts():
    torch.manual_seed(0)
    x = images(n=16, c=1)
    out = make_pipe(**augment.augpipe_specs['color'])(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    flipped = make_pipe(lumaflip=1)(x)
    signs = [torch.allclose(o, xi, atol=1e-6) or torch.allclose(o, -xi, atol=1e-6) for o, xi in zip(flipped, x)]
    assert all(signs)
    assert make_pipe(hue=1, saturation=1)(x).equal(x)


def test_unsupported_channel_count_for_colour_raises():
    with pytest.raises(ValueError, match='1 or 3 channels'):
        make_pipe(brightness=1)(images(c=2))


def test_cutout_zeroes_one_rectangle_per_sample():
    torch.manual_seed(0)
    x = images(c=1).abs() + 1
    out = make_pipe(cutout=1, cutout_size=0.5)(x)
    for o in out[:, 0]:
        rows, cols = (o == 0).any(dim=1), (o == 0).any(dim=0)
        assert 0 < (o == 0).sum() == rows.sum() * cols.sum() <= 64


@pytest.mark.parametrize('spec', sorted(augment.augpipe_specs))
@pytest.mark.parametrize('channels', [1, 3])
def test_every_preset_runs(spec, channels):
    torch.manual_seed(0)
    x = images(n=4, c=channels)
    out = make_pipe(p=0.6, **augment.augpipe_specs[spec])(x)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()


@pytest.mark.parametrize('spec, channels', [('bgc', 3), ('bgc', 1), ('bgcfnc', 1)])
def test_r1_penalty_through_augmentation_double_backward(spec, channels):
    torch.manual_seed(0)
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=channels, channel_base=128, channel_max=8)
    pipe = make_pipe(p=1.0, **augment.augpipe_specs[spec])
    real = images(n=4, c=channels).requires_grad_(True)
    logits = D(pipe(real), None)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    grad.square().sum(dim=[1, 2, 3]).mean().backward()
    for name, param in D.named_parameters():
        if name == 'b4.out.bias':  # A constant offset of the logits does not change the R1 gradient.
            continue
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
