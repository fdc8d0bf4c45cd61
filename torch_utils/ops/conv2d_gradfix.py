"""conv2d / conv_transpose2d with a hand-written autograd that can skip weight gradients.

Same results and same higher-order gradients as torch.nn.functional. The point is `no_weight_gradients()`:
inside it, backward passes skip the weight gradient, which R1 and path-length regularisation never need
in their first (create_graph) backward. Built from public ops only (F.conv2d, F.conv_transpose2d,
torch.nn.grad.conv2d_weight); each backward is itself made of these autograd functions, so double
backward works and keeps honouring the flag.
"""

import contextlib
from typing import NamedTuple

import torch
import torch.nn.functional as F

from torch_utils import misc

# ----------------------------------------------------------------------------
# Module flags. `enabled` routes grad-requiring calls through the custom autograd; when False, calls go
# straight to torch.nn.functional (and no_weight_gradients() has no effect).

enabled = True
weight_gradients_disabled = False

# ----------------------------------------------------------------------------
# Context manager for regularisation passes that need input gradients only.


@contextlib.contextmanager
def no_weight_gradients(disable: bool = True):
    """Within the block (if `disable`), backward passes through conv2d() / conv_transpose2d() return no
    weight gradient. The flag is read when backward runs, so wrap the autograd.grad() call."""
    global weight_gradients_disabled
    old = weight_gradients_disabled
    if disable:
        weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = old


# ----------------------------------------------------------------------------
# Drop-in replacements for F.conv2d and F.conv_transpose2d.


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> torch.Tensor:
    """Same as torch.nn.functional.conv2d."""
    if _use_custom_op(input, weight, bias):
        cfg = _ConvCfg.make(False, weight, stride, padding, 0, dilation, groups)
        return _Conv2d.apply(input, weight, bias, cfg)
    return F.conv2d(input, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv_transpose2d(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
) -> torch.Tensor:
    """Same as torch.nn.functional.conv_transpose2d."""
    if _use_custom_op(input, weight, bias):
        cfg = _ConvCfg.make(True, weight, stride, padding, output_padding, dilation, groups)
        return _Conv2d.apply(input, weight, bias, cfg)
    return F.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)


# ----------------------------------------------------------------------------
# The custom path only matters when a gradient will be taken.


def _use_custom_op(*tensors) -> bool:
    if not enabled or not torch.is_grad_enabled() or misc.functorch_transform_active():
        return False
    return any(t is not None and t.requires_grad for t in tensors)


# ----------------------------------------------------------------------------
# int or pair -> pair of ints.


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        assert len(value) == 2
        return int(value[0]), int(value[1])
    return int(value), int(value)


# ----------------------------------------------------------------------------
# Hashable description of one convolution (everything except the tensors).


class _ConvCfg(NamedTuple):
    transpose: bool
    weight_shape: tuple[int, int, int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    output_padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    @staticmethod
    def make(transpose, weight, stride, padding, output_padding, dilation, groups) -> '_ConvCfg':
        assert isinstance(padding, (int, tuple, list)), 'string padding is not supported'
        assert weight.ndim == 4
        cfg = _ConvCfg(
            bool(transpose),
            tuple(int(s) for s in weight.shape),
            _pair(stride),
            _pair(padding),
            _pair(output_padding),
            _pair(dilation),
            int(groups),
        )
        assert all(s >= 1 for s in cfg.stride) and all(d >= 1 for d in cfg.dilation)
        assert all(0 <= op < max(s, d) for op, s, d in zip(cfg.output_padding, cfg.stride, cfg.dilation))
        return cfg

    def run(self, x, w, b=None) -> torch.Tensor:
        """The plain forward op."""
        if self.transpose:
            return F.conv_transpose2d(
                x, w, b, self.stride, self.padding, self.output_padding, self.groups, self.dilation
            )
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def adjoint(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> '_ConvCfg':
        """The op mapping output-gradients to input-gradients: conv2d <-> conv_transpose2d, same weight.

        `in_hw`/`out_hw` are the spatial sizes of this op's input/output; for conv2d the adjoint
        transposed conv needs the output_padding that restores `in_hw` exactly.
        """
        if self.transpose:
            return self._replace(transpose=False, output_padding=(0, 0))
        k = self.weight_shape[2:]
        output_padding = tuple(
            in_hw[i] - ((out_hw[i] - 1) * self.stride[i] - 2 * self.padding[i] + self.dilation[i] * (k[i] - 1) + 1)
            for i in range(2)
        )
        return self._replace(transpose=True, output_padding=output_padding)


# ----------------------------------------------------------------------------
# conv2d / conv_transpose2d: forward with torch, backward through the two functions below.


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, cfg):
        out = cfg.run(x, w, b)
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, w if ctx.needs_input_grad[0] else None)
        ctx.cfg = cfg
        ctx.in_hw = tuple(x.shape[2:])
        ctx.out_hw = tuple(out.shape[2:])
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        cfg = ctx.cfg
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _Conv2d.apply(grad_out, w, None, cfg.adjoint(ctx.in_hw, ctx.out_hw))
            assert grad_x.shape[2:] == ctx.in_hw
        if ctx.needs_input_grad[1] and not weight_gradients_disabled:
            grad_w = _Conv2dWeightGrad.apply(grad_out, x, cfg)
        if ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None


# ----------------------------------------------------------------------------
# Weight gradient of conv2d (or conv_transpose2d), bilinear in (grad_out, x) and differentiable in both.


class _Conv2dWeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_out, x, cfg):
        ctx.save_for_backward(grad_out if ctx.needs_input_grad[1] else None, x if ctx.needs_input_grad[0] else None)
        ctx.cfg = cfg
        ctx.in_hw = tuple(x.shape[2:])
        ctx.out_hw = tuple(grad_out.shape[2:])
        # conv_transpose2d(x, w) is the adjoint of conv2d(., w): its weight gradient swaps the roles.
        image, grad = (grad_out, x) if cfg.transpose else (x, grad_out)
        return torch.nn.grad.conv2d_weight(
            image, list(cfg.weight_shape), grad, cfg.stride, cfg.padding, cfg.dilation, cfg.groups
        )

    @staticmethod
    def backward(ctx, grad2_w):
        grad_out, x = ctx.saved_tensors
        cfg = ctx.cfg
        grad2_grad_out = grad2_x = None
        if ctx.needs_input_grad[0]:  # d<grad2_w, grad_w>/d grad_out = the forward op applied with grad2_w.
            grad2_grad_out = _Conv2d.apply(x, grad2_w, None, cfg)
            assert grad2_grad_out.shape[2:] == ctx.out_hw
        if ctx.needs_input_grad[1]:  # ... and d/dx = the adjoint op applied to grad_out with grad2_w.
            grad2_x = _Conv2d.apply(grad_out, grad2_w, None, cfg.adjoint(ctx.in_hw, ctx.out_hw))
            assert grad2_x.shape[2:] == ctx.in_hw
        return grad2_grad_out, grad2_x, None


# ----------------------------------------------------------------------------
