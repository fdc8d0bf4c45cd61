"""Fused bias + activation + gain + clamp (StyleGAN2-ADA's bias_act), with an exact reference path.

y = clamp(act(x + b) * gain, -clamp, clamp), with b broadcast along `dim`. The CUDA path computes this in one
kernel, and its gradients (first and second order) with the same kernel in gradient modes.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib

from .. import custom_ops

# ----------------------------------------------------------------------------
# Activations: function, default alpha and gain, kernel index, which forward tensor the derivative is read from
# ('x' input, 'y' output, '' none) and whether the second derivative is non-zero.


def _activation(func, def_alpha, def_gain, cuda_idx, ref, has_2nd_grad):
    return dnnlib.EasyDict(
        func=func, def_alpha=def_alpha, def_gain=def_gain, cuda_idx=cuda_idx, ref=ref, has_2nd_grad=has_2nd_grad
    )


# fmt: off
activation_funcs = {
    #                       func                                            alpha  gain        idx  ref  2nd grad
    'linear':   _activation(lambda x, **_: x,                               0,     1,          1,   '',  False),
    'relu':     _activation(lambda x, **_: F.relu(x),                       0,     np.sqrt(2), 2,   'y', False),
    'lrelu':    _activation(lambda x, alpha, **_: F.leaky_relu(x, alpha),   0.2,   np.sqrt(2), 3,   'y', False),
    'tanh':     _activation(lambda x, **_: torch.tanh(x),                   0,     1,          4,   'y', True),
    'sigmoid':  _activation(lambda x, **_: torch.sigmoid(x),                0,     1,          5,   'y', True),
    'elu':      _activation(lambda x, **_: F.elu(x),                        0,     1,          6,   'y', True),
    'selu':     _activation(lambda x, **_: F.selu(x),                       0,     1,          7,   'y', True),
    'softplus': _activation(lambda x, **_: F.softplus(x),                   0,     1,          8,   'y', True),
    'swish':    _activation(lambda x, **_: torch.sigmoid(x) * x,            0,     np.sqrt(2), 9,   'x', True),
}
# fmt: on

# ----------------------------------------------------------------------------
# The compiled plugin, built on the first CUDA call; None until then or after a failed build.

_plugin = None
_null_tensor = torch.empty([0])


def _init() -> bool:
    global _plugin
    if _plugin is None:
        _plugin = custom_ops.get_plugin_or_none(
            'bias_act',
            module_name='bias_act_plugin',
            sources=['bias_act.cpp', 'bias_act.cu'],
            headers=['bias_act.h'],
            source_dir=os.path.dirname(__file__),
        )
    return _plugin is not None


# ----------------------------------------------------------------------------
# Public op (same signature as stylegan2-ada-pytorch).


def bias_act(
    x: torch.Tensor,  # Input of any rank.
    b: torch.Tensor = None,  # [x.shape[dim]] bias, or None.
    dim: int = 1,  # Dimension of x that b runs along.
    act: str = 'linear',  # Key of activation_funcs.
    alpha: float = None,  # Activation shape parameter (lrelu slope); None = the activation's default.
    gain: float = None,  # Output scale; None = the activation's default.
    clamp: float = None,  # Clamp the output to [-clamp, clamp]; None = no clamping.
    impl: str = 'cuda',  # 'cuda' (CUDA kernel for CUDA tensors when it builds), 'auto' (same) or 'ref'.
) -> torch.Tensor:  # Same shape and dtype as x.
    """Adds a bias, applies an activation, scales and clamps, all in one fused op.

    Gradients of first and second order are supported by both implementations.

    Example:
        >>> x = torch.tensor([[-1.0, 2.0]])
        >>> bias_act(x, torch.tensor([0.5, 0.0]), act='lrelu', gain=1)
        tensor([[-0.1000,  2.0000]])
    """
    assert isinstance(x, torch.Tensor)
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    # Relu-like derivatives are read from the sign of y, which needs a non-negative slope.
    if custom_ops.use_cuda_kernel(x, impl, _init) and not (act == 'lrelu' and alpha < 0):
        # Layout fixed outside the Function, so that autograd sees the copy (if any) and second order still flows.
        x = x.contiguous(memory_format=_memory_format(x))
        b = b.contiguous() if b is not None else None
        return _bias_act_cuda(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp).apply(x, b)
    return _bias_act_ref(x=x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


# ----------------------------------------------------------------------------
# Exact reference in plain PyTorch ops; autograd provides all gradients.


def _bias_act_ref(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    if b is not None:
        assert b.ndim == 1 and b.shape[0] == x.shape[dim], 'b must be [x.shape[dim]]'
        assert 0 <= dim < x.ndim
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha=alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        # clamp() whose backward is one op (not three); zero gradient at exactly +-clamp, as in the CUDA kernel.
        x = torch.nn.functional.hardtanh(x, -clamp, clamp)
    return x


# ----------------------------------------------------------------------------
# Memory format that the kernel sees: channels-last inputs stay channels-last, anything else becomes contiguous.


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


# ----------------------------------------------------------------------------
# CUDA path: an autograd.Function per configuration, cached. Kernel modes (see bias_act.cu):
# 0: y = clamp(act(x + b) * gain); 1: dx = g * gain * act'(x + b) * mask; 2: g * dy * gain * act''(x + b) * mask,
# with mask = |y| < clamp. act' and act'' are read from x (swish) or from y (all others).

_bias_act_cuda_cache = {}


def _bias_act_cuda(dim=1, act='linear', alpha=None, gain=None, clamp=None):
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    key = (dim, act, alpha, gain, clamp)
    if key in _bias_act_cuda_cache:
        return _bias_act_cuda_cache[key]
    kernel_needs_x = spec.ref == 'x'
    kernel_needs_y = spec.ref == 'y' or clamp >= 0
    # x and b are inputs of the gradient op whenever its own gradient w.r.t. them is non-zero.
    save_x = kernel_needs_x or spec.has_2nd_grad

    def run_kernel(mode, g, b=None, x=None, y=None, dy=None):
        empty = _null_tensor.to(device=g.device, dtype=g.dtype)
        b = b if b is not None and (mode == 0 or kernel_needs_x) else empty
        x = x if x is not None and kernel_needs_x else empty
        y = y if y is not None and kernel_needs_y else empty
        dy = dy if dy is not None and mode == 2 else empty
        return _plugin.bias_act(g, b, x, y, dy, mode, dim, spec.cuda_idx, alpha, gain, clamp)

    def sum_to_bias(dx):
        return dx.sum([i for i in range(dx.ndim) if i != dim])

    # Forward: y from x and b.
    class BiasActCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):
            assert 0 <= dim < x.ndim
            assert b is None or (b.ndim == 1 and b.shape[0] == x.shape[dim]), 'b must be [x.shape[dim]]'
            ctx.memory_format = _memory_format(x)
            assert x.is_contiguous(memory_format=ctx.memory_format), 'x must be dense; see bias_act()'
            y = run_kernel(0, x, b=b)
            ctx.save_for_backward(x if save_x else None, b if save_x else None, y if kernel_needs_y else None)
            ctx.has_bias = b is not None
            return y

        @staticmethod
        def backward(ctx, dy):
            x, b, y = ctx.saved_tensors
            dy = dy.contiguous(memory_format=ctx.memory_format)
            dx = BiasActCudaGrad.apply(dy, x, b, y)
            db = sum_to_bias(dx) if ctx.has_bias and ctx.needs_input_grad[1] else None
            return dx, db

    # Gradient: dx from dy and the saved x, b, y; differentiable once more w.r.t. dy, x and b.
    class BiasActCudaGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, dy, x, b, y):
            ctx.memory_format = _memory_format(dy)
            dx = run_kernel(1, dy, b=b, x=x, y=y)
            ctx.save_for_backward(dy if spec.has_2nd_grad else None, x, b, y)
            return dx

        @staticmethod
        def backward(ctx, d_dx):
            dy, x, b, y = ctx.saved_tensors
            d_dx = d_dx.contiguous(memory_format=ctx.memory_format)
            d_dy = BiasActCudaGrad.apply(d_dx, x, b, y) if ctx.needs_input_grad[0] else None
            d_x = d_b = None
            if spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
                d_x = run_kernel(2, d_dx, b=b, x=x, y=y, dy=dy)  # The total derivative: y needs no gradient.
                d_b = sum_to_bias(d_x) if b is not None and ctx.needs_input_grad[2] else None
            return d_dy, d_x, d_b, None

    _bias_act_cuda_cache[key] = BiasActCuda
    return BiasActCuda


# ----------------------------------------------------------------------------
