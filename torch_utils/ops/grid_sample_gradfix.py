"""Bilinear grid_sample (zeros padding, align_corners=False) that supports double backward.

R1 regularisation through ADA's geometric augmentations differentiates the gradient of grid_sample. The
forward and plain first-order backward use torch's own kernel; a create_graph backward instead goes
through an equivalent formulation built from gather ops, which autograd can differentiate to any order.
Only public torch APIs are used, on every torch version we support.
"""

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------
# Module flag: when False, calls go straight to torch.nn.functional.grid_sample.

enabled = True

# ----------------------------------------------------------------------------
# Public entry point (upstream signature).


def grid_sample(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False).

    Args:
        input: [N, C, H, W] images.
        grid: [N, H_out, W_out, 2] sampling positions (x, y) in [-1, 1] (outside = zeros).

    Returns:
        [N, C, H_out, W_out] samples.
    """
    if enabled and torch.is_grad_enabled() and (input.requires_grad or grid.requires_grad):
        return _GridSample2d.apply(input, grid)
    return _grid_sample_native(input, grid)


# ----------------------------------------------------------------------------
# torch's own kernel with the fixed settings.


def _grid_sample_native(input, grid):
    return F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False)


# ----------------------------------------------------------------------------
# Forward with torch's kernel; backward picks the native or the differentiable formulation.


class _GridSample2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, grid):
        assert input.ndim == 4 and grid.ndim == 4 and grid.shape[-1] == 2 and input.shape[0] == grid.shape[0]
        ctx.save_for_backward(input, grid)
        return _grid_sample_native(input, grid)

    @staticmethod
    def backward(ctx, grad_out):
        input, grid = ctx.saved_tensors
        wanted = [i for i in range(2) if ctx.needs_input_grad[i]]
        create_graph = torch.is_grad_enabled()  # Grad mode is on in backward exactly when create_graph=True.
        with torch.enable_grad():
            if create_graph:  # Saved tensors keep their history, so the grads connect to the graph.
                inputs = [input, grid]
                out = grid_sample_ref(*inputs)
            else:
                inputs = [t.detach().requires_grad_(i in wanted) for i, t in enumerate((input, grid))]
                out = _grid_sample_native(*inputs)
            grads = torch.autograd.grad(out, [inputs[i] for i in wanted], grad_out, create_graph=create_graph)
        result = [None, None]
        for i, grad in zip(wanted, grads):
            result[i] = grad
        return tuple(result)


# ----------------------------------------------------------------------------
# Reference bilinear sampling from gather and arithmetic only (differentiable to any order).
# Pixel centres sit at (i + 0.5) / size * 2 - 1 (align_corners=False); taps outside the image are zero.


def grid_sample_ref(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Same maths as grid_sample(), written with gathers; slower, but every order of gradient exists."""
    N, C, H, W = input.shape
    Ho, Wo = grid.shape[1:3]
    ix = ((grid[..., 0] + 1) * W - 1) / 2  # [N, Ho, Wo] in pixel units.
    iy = ((grid[..., 1] + 1) * H - 1) / 2
    x0 = ix.detach().floor()
    y0 = iy.detach().floor()
    wx1, wy1 = ix - x0, iy - y0
    wx0, wy0 = 1 - wx1, 1 - wy1

    flat = input.reshape(N, C, H * W)
    out = 0
    for dy, wy in ((0, wy0), (1, wy1)):
        for dx, wx in ((0, wx0), (1, wx1)):
            xs, ys = x0 + dx, y0 + dy
            inside = (xs >= 0) & (xs <= W - 1) & (ys >= 0) & (ys <= H - 1)
            index = ys.clamp(0, H - 1).long() * W + xs.clamp(0, W - 1).long()
            index = index.reshape(N, 1, Ho * Wo)
            taps = flat.gather(2, index.expand(N, C, Ho * Wo)).reshape(N, C, Ho, Wo)
            weight = torch.where(inside, wx * wy, torch.zeros_like(wx))  # [N, Ho, Wo]
            out = out + taps * weight.unsqueeze(1)
    return out


# ----------------------------------------------------------------------------
