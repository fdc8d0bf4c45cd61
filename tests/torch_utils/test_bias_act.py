"""bias_act: the reference against explicit formulas, gradcheck/gradgradcheck, and the CUDA path's autograd wiring
driven by a Python transcription of the kernel (the kernel itself is emulated in test_nvcc_compile.py)."""

import warnings

import numpy as np
import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act as bias_act_module
from torch_utils.ops.bias_act import _bias_act_cuda, _bias_act_ref, activation_funcs, bias_act

ACTS = list(activation_funcs)
SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717

# ----------------------------------------------------------------------------
# Independent formulas (numpy): each activation and its derivative w.r.t. the pre-activation.


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def naive_act(act, x, alpha):
    return {
        'linear': lambda: x,
        'relu': lambda: np.maximum(x, 0),
        'lrelu': lambda: np.where(x > 0, x, alpha * x),
        'tanh': lambda: np.tanh(x),
        'sigmoid': lambda: _sigmoid(x),
        'elu': lambda: np.where(x > 0, x, np.expm1(x)),
        'selu': lambda: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
        'softplus': lambda: np.log1p(np.exp(x)),
        'swish': lambda: x * _sigmoid(x),
    }[act]()


def naive_act_derivative(act, x, alpha):
    s = _sigmoid(x)
    return {
        'linear': lambda: np.ones_like(x),
        'relu': lambda: (x > 0).astype(x.dtype),
        'lrelu': lambda: np.where(x > 0, 1, alpha),
        'tanh': lambda: 1 / np.cosh(x) ** 2,
        'sigmoid': lambda: s * (1 - s),
        'elu': lambda: np.where(x > 0, 1, np.exp(x)),
        'selu': lambda: SELU_SCALE * np.where(x > 0, 1, SELU_ALPHA * np.exp(x)),
        'softplus': lambda: s,
        'swish': lambda: s + x * s * (1 - s),
    }[act]()


def _inputs(shape, dim, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=dtype) * 2
    b = torch.randn([shape[dim]], generator=gen, dtype=dtype)
    pre = x + b.reshape([-1 if i == dim else 1 for i in range(len(shape))])
    x = torch.where(pre.abs() < 1e-2, x + 0.05, x)  # Keep away from the kinks at 0 for the finite differences.
    return x, b


SETTINGS = [  # (alpha, gain, clamp), None = the activation's default.
    (None, None, None),
    (0.3, 1.7, None),
    (None, 0.5, 0.6),
]
SHAPES_DIMS = [([3, 5], 1), ([2, 4, 3, 3], 1), ([4, 3, 2], 0), ([2, 3, 5], 2)]

# ----------------------------------------------------------------------------
# Reference forward and gradients against the explicit formulas, for every activation and setting.


@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('alpha,gain,clamp', SETTINGS)
@pytest.mark.parametrize('shape,dim', SHAPES_DIMS)
def test_ref_matches_formulas(act, alpha, gain, clamp, shape, dim):
    spec = activation_funcs[act]
    x, b = _inputs(shape, dim)
    x.requires_grad_(True)
    b.requires_grad_(True)
    y = _bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    dy = torch.randn_like(y)
    dx, db = torch.autograd.grad(y, [x, b], dy)

    a = spec.def_alpha if alpha is None else alpha
    g = spec.def_gain if gain is None else gain
    pre = (x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])).detach().numpy()
    unclamped = naive_act(act, pre, a) * g
    inside = np.ones_like(pre, dtype=bool) if clamp is None else np.abs(unclamped) < clamp
    expected_y = unclamped if clamp is None else np.clip(unclamped, -clamp, clamp)
    expected_dx = dy.numpy() * g * naive_act_derivative(act, pre, a) * inside
    expected_db = expected_dx.sum(axis=tuple(i for i in range(x.ndim) if i != dim))
    np.testing.assert_allclose(y.detach().numpy(), expected_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx.numpy(), expected_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db.numpy(), expected_db, rtol=1e-10, atol=1e-12)


def test_ref_clamp_is_torch_clamp_with_the_kernels_gradient_at_the_bound():
    """Forward bit-equal to clamp() in every dtype; at exactly +-clamp the gradient is 0, as in the CUDA kernel."""
    for dtype in [torch.float64, torch.float32, torch.bfloat16]:
        x = (torch.randn([4, 8, 5, 5], dtype=torch.float64) * 2).to(dtype)
        assert torch.equal(_bias_act_ref(x, clamp=1.5), x.clamp(-1.5, 1.5))
    x = torch.tensor([-2.0, -1.5, -1.0, 0.0, 1.0, 1.5, 2.0], dtype=torch.float64, requires_grad=True)
    (dx,) = torch.autograd.grad(_bias_act_ref(x, clamp=1.5).sum(), [x])
    assert dx.tolist() == [0, 0, 1, 1, 1, 0, 0]


def test_defaults_match_official_table():
    gains = {k: v.def_gain for k, v in activation_funcs.items()}
    assert gains['lrelu'] == pytest.approx(np.sqrt(2)) and gains['swish'] == pytest.approx(np.sqrt(2))
    assert gains['relu'] == pytest.approx(np.sqrt(2)) and gains['linear'] == 1 and gains['tanh'] == 1
    assert activation_funcs['lrelu'].def_alpha == 0.2
    assert sorted(v.cuda_idx for v in activation_funcs.values()) == list(range(1, 10))


def test_without_bias_and_public_defaults():
    x, _ = _inputs([2, 3, 4], 1)
    expected = np.clip(np.where(x.numpy() > 0, x.numpy(), 0.2 * x.numpy()) * np.sqrt(2), -0.5, 0.5)
    np.testing.assert_allclose(bias_act(x, act='lrelu', clamp=0.5).numpy(), expected, rtol=1e-12)
    assert torch.equal(bias_act(x), x)


# ----------------------------------------------------------------------------
# Finite-difference checks of the reference in float64, first and second order.


@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('clamp', [None, 0.7])
def test_ref_gradcheck(act, clamp):
    x, b = _inputs([2, 3, 2, 2], 1, seed=1)
    x.requires_grad_(True)
    b.requires_grad_(True)
    func = lambda x, b: _bias_act_ref(x, b, act=act, alpha=0.3, gain=1.3, clamp=clamp)
    assert torch.autograd.gradcheck(func, (x, b))
    assert torch.autograd.gradgradcheck(func, (x, b))


# ----------------------------------------------------------------------------
# A Python transcription of the kernel's modes (bias_act.cu): lets the CUDA path's autograd Functions run on CPU.


def _np(t):
    return t.detach().numpy()


class KernelTranscription:
    def bias_act(self, g, b, xref, yref, dy, mode, dim, act_idx, alpha, gain, clamp):
        act = next(name for name, spec in activation_funcs.items() if spec.cuda_idx == act_idx)
        bias = _np(b).reshape([-1 if i == dim else 1 for i in range(g.ndim)]) if b.numel() else 0
        if mode == 0:
            y = naive_act(act, _np(g) + bias, alpha) * gain
            return torch.from_numpy(y if clamp < 0 else np.clip(y, -clamp, clamp)).to(g.dtype)
        a = _np(yref) / gain if yref.numel() else None
        x = _np(xref) + bias if xref.numel() else None
        derivative = self._derivative(act, mode == 1, x, a, alpha, g.shape) * gain
        if clamp >= 0:
            derivative = derivative * (np.abs(_np(yref)) < clamp)
        out = _np(g) * derivative * (_np(dy) if mode == 2 else 1)
        return torch.from_numpy(np.ascontiguousarray(out)).to(g.dtype)

    @staticmethod
    def _derivative(act, first, x, a, alpha, shape):
        if act == 'linear':
            return np.full(shape, 1.0 if first else 0.0)
        if act in ('relu', 'lrelu'):
            return np.where(a > 0, 1.0, 0.0 if act == 'relu' else alpha) * first
        if act == 'tanh':
            return (1 - a * a) * (1 if first else -2 * a)
        if act == 'sigmoid':
            return a * (1 - a) * (1 if first else 1 - 2 * a)
        if act in ('elu', 'selu'):
            scale, shift = (1, 1) if act == 'elu' else (SELU_SCALE, SELU_SCALE * SELU_ALPHA)
            return np.where(a > 0, scale * first, a + shift)
        if act == 'softplus':
            s = -np.expm1(-a)
            return s if first else s * (1 - s)
        s = _sigmoid(x)
        return s * (1 + x * (1 - s)) if first else s * (1 - s) * (2 + x * (1 - 2 * s))


@pytest.fixture
def transcribed_plugin(monkeypatch):
    monkeypatch.setattr(bias_act_module, '_plugin', KernelTranscription())


@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('clamp', [None, 0.7])
def test_cuda_path_wiring_matches_ref(transcribed_plugin, act, clamp):
    x, b = _inputs([2, 3, 2, 2], 1, seed=2)
    x.requires_grad_(True)
    b.requires_grad_(True)
    kwargs = dict(act=act, alpha=0.3, gain=1.3, clamp=clamp)
    cuda_fn = lambda x, b: _bias_act_cuda(dim=1, **kwargs).apply(x, b)
    ref_fn = lambda x, b: _bias_act_ref(x, b, dim=1, **kwargs)
    outputs = []
    for fn in (cuda_fn, ref_fn):
        y = fn(x, b)
        dx, db = torch.autograd.grad((y * y.detach().cos()).sum(), [x, b], create_graph=True)
        loss = (dx * dx.detach().sin()).sum() + db.square().sum()
        ddx, ddb = torch.autograd.grad(loss, [x, b], allow_unused=True) if loss.requires_grad else (None, None)
        outputs.append([y, dx, db, ddx, ddb])
    for got, expected in zip(*outputs):
        if expected is None or got is None:
            assert (got is None or not got.abs().max()) and (expected is None or not expected.abs().max())
        else:
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)
    assert torch.autograd.gradcheck(cuda_fn, (x, b))
    assert torch.autograd.gradgradcheck(cuda_fn, (x, b))


def test_cuda_path_wiring_without_bias_and_channels_last(transcribed_plugin):
    x, _ = _inputs([2, 3, 4, 4], 1, seed=3)
    x = x.to(memory_format=torch.channels_last).requires_grad_(True)
    fn = lambda x: _bias_act_cuda(dim=1, act='swish', clamp=1.0).apply(x, None)
    assert torch.autograd.gradgradcheck(fn, (x,))


# ----------------------------------------------------------------------------
# On a GPU: the compiled kernel itself, finite-difference checked in float64 to second order.


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('clamp', [None, 0.7])
def test_cuda_kernel_on_gpu(act, clamp):
    assert bias_act_module._init(), 'the bias_act plugin failed to build'
    x, b = (t.cuda().requires_grad_(True) for t in _inputs([2, 3, 2, 2], 1, seed=4))
    kwargs = dict(act=act, alpha=0.3, gain=1.3, clamp=clamp)
    y = bias_act(x, b, impl='cuda', **kwargs)
    assert 'BiasActCuda' in type(y.grad_fn).__name__
    torch.testing.assert_close(y, _bias_act_ref(x, b, **kwargs), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, b: bias_act(x, b, impl='cuda', **kwargs), (x, b))
    assert torch.autograd.gradgradcheck(lambda x, b: bias_act(x, b, impl='cuda', **kwargs), (x, b))


# ----------------------------------------------------------------------------
# impl selection: CPU tensors never build the plugin, whatever impl says.


def test_cuda_impl_on_cpu_uses_ref_without_building(monkeypatch):
    def refuse_build(*args, **kwargs):
        raise AssertionError('get_plugin must not be called for CPU tensors')

    monkeypatch.setattr(custom_ops, 'get_plugin', refuse_build)
    monkeypatch.setattr(bias_act_module, '_plugin', None)
    x, b = _inputs([2, 3, 4], 1)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for impl in ('cuda', 'auto'):
            got = bias_act(x, b, act='selu', clamp=0.9, impl=impl)
            torch.testing.assert_close(got, _bias_act_ref(x, b, act='selu', clamp=0.9), rtol=0, atol=0)
    assert bias_act_module._plugin is None


def test_unknown_impl_raises():
    with pytest.raises(ValueError, match='impl'):
        bias_act(torch.zeros(1, 1), impl='triton')


# ----------------------------------------------------------------------------
