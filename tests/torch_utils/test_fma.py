"""torch_utils.ops.fma: a * b + c with gradients reduced back over broadcast dimensions."""

import pytest
import torch

from torch_utils.ops import fma

SHAPES = [
    ([2, 3, 4], [2, 3, 4], [2, 3, 4]),  # No broadcasting.
    ([2, 3, 4], [1, 3, 1], [4]),  # b and c broadcast.
    ([3, 1], [1, 4], []),  # a and b broadcast against each other, c is a scalar.
    ([4], [2, 1, 4], [2, 3, 1]),  # Extra leading dims everywhere.
]


def _operands(shapes, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(shape, dtype=dtype, generator=gen, requires_grad=True) for shape in shapes]


@pytest.mark.parametrize('shapes', SHAPES)
def test_matches_naive_formula_and_autograd(shapes):
    a, b, c = _operands(shapes)
    out = fma.fma(a, b, c)
    ref = a * b + c
    assert out.shape == ref.shape and torch.allclose(out, ref, rtol=0, atol=1e-12)
    grad_out = torch.randn(ref.shape, dtype=ref.dtype)
    grads = torch.autograd.grad(out, [a, b, c], grad_out)
    grads_ref = torch.autograd.grad(ref, [a, b, c], grad_out)
    for grad, grad_ref, operand in zip(grads, grads_ref, (a, b, c)):
        assert grad.shape == operand.shape and torch.allclose(grad, grad_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize('shapes', SHAPES)
def test_gradcheck_and_gradgradcheck(shapes):
    operands = _operands(shapes)
    assert torch.autograd.gradcheck(fma.fma, operands)
    assert torch.autograd.gradgradcheck(fma.fma, operands)


def test_only_requested_grads_are_computed():
    a, b, c = _operands(SHAPES[1])
    c = c.detach()
    fma.fma(a, b.detach(), c).sum().backward()
    assert a.grad is not None and b.grad is None
