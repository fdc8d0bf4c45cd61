"""torch_utils.ops.grid_sample_gradfix: F.grid_sample results and grads, plus working double backward."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import grid_sample_gradfix


def _make(dtype, n=2, c=3, h=5, w=6, ho=4, wo=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([n, c, h, w], dtype=dtype, generator=gen, requires_grad=True)
    # Range slightly past [-1, 1] so that some taps fall outside the image (zero padding).
    grid = (torch.rand([n, ho, wo, 2], dtype=dtype, generator=gen) * 2.4 - 1.2).requires_grad_()
    return x, grid


def _native(x, grid):
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)


@pytest.mark.parametrize('dtype, tol', [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_forward_and_grads_match_torch(dtype, tol):
    x, grid = _make(dtype)
    out = grid_sample_gradfix.grid_sample(x, grid)
    out_ref = _native(x, grid)
    assert torch.allclose(out, out_ref, rtol=0, atol=tol)
    assert torch.allclose(grid_sample_gradfix.grid_sample_ref(x, grid), out_ref, rtol=0, atol=tol)

    grad_out = torch.randn_like(out)
    grads_ref = torch.autograd.grad(out_ref, [x, grid], grad_out)
    for create_graph in (False, True):  # Native backward, then the differentiable formulation.
        grads = torch.autograd.grad(
            grid_sample_gradfix.grid_sample(x, grid), [x, grid], grad_out, create_graph=create_graph
        )
        for grad, grad_ref in zip(grads, grads_ref):
            assert torch.allclose(grad, grad_ref, rtol=tol, atol=tol)


def test_gradcheck_and_gradgradcheck():
    x, grid = _make(torch.float64, n=1, c=2, h=4, w=4, ho=3, wo=3, seed=1)
    assert torch.autograd.gradcheck(grid_sample_gradfix.grid_sample, (x, grid))
    assert torch.autograd.gradgradcheck(grid_sample_gradfix.grid_sample, (x, grid))
    assert torch.autograd.gradgradcheck(lambda x: grid_sample_gradfix.grid_sample(x, grid.detach()), (x,))


def test_r1_through_augmentation_matches_torch():
    # R1 penalty of a toy "discriminator" applied to augmented images, differentiated w.r.t. its weight.
    x, grid = _make(torch.float64)
    grid = grid.detach()
    weight = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def penalty_grad(sample):
        logits = (sample(x, grid) * weight.view(1, 3, 1, 1)).square().sum()
        (grad_x,) = torch.autograd.grad(logits, [x], create_graph=True)
        return torch.autograd.grad(grad_x.square().sum(), [weight])[0]

    assert torch.allclose(penalty_grad(grid_sample_gradfix.grid_sample), penalty_grad(_native), atol=1e-10)


def test_only_needed_grads_and_plain_path():
    x, grid = _make(torch.float32)
    grid = grid.detach()
    grid_sample_gradfix.grid_sample(x, grid).sum().backward()
    assert x.grad is not None and grid.grad is None
    with torch.no_grad():
        assert grid_sample_gradfix.grid_sample(x, grid).grad_fn is None
