"""Fused multiply-add `a * b + c` with broadcasting, whose gradients sum back to each operand's shape."""

import torch

from torch_utils import misc

# ----------------------------------------------------------------------------
# Public entry point (upstream signature).


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Returns `a * b + c` (torch.addcmul), broadcasting all three operands.

    Example:
        >>> fma(torch.ones(2, 1), torch.full([3], 2.0), torch.zeros([])).shape
        torch.Size([2, 3])
    """
    if misc.functorch_transform_active():
        return torch.addcmul(c, a, b)
    return _FusedMultiplyAdd.apply(a, b, c)


# ----------------------------------------------------------------------------
# Autograd function; its backward is made of differentiable ops, so higher-order grads work too.


class _FusedMultiplyAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, c):
        out = torch.addcmul(c, a, b)
        ctx.save_for_backward(a, b)
        ctx.c_shape = c.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        a, b = ctx.saved_tensors
        grad_a = grad_b = grad_c = None
        if ctx.needs_input_grad[0]:
            grad_a = _sum_to_shape(grad_out * b, a.shape)
        if ctx.needs_input_grad[1]:
            grad_b = _sum_to_shape(grad_out * a, b.shape)
        if ctx.needs_input_grad[2]:
            grad_c = _sum_to_shape(grad_out, ctx.c_shape)
        return grad_a, grad_b, grad_c


# ----------------------------------------------------------------------------
# Undoes broadcasting: sums the leading extra dims and the dims that were 1 in `shape`.


def _sum_to_shape(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    extra_dims = x.ndim - len(shape)
    assert extra_dims >= 0
    if extra_dims > 0:
        x = x.sum(dim=tuple(range(extra_dims)))
    broadcast_dims = tuple(i for i, size in enumerate(shape) if size == 1 and x.shape[i] != 1)
    if broadcast_dims:
        x = x.sum(dim=broadcast_dims, keepdim=True)
    assert x.shape == shape
    return x


# ----------------------------------------------------------------------------
