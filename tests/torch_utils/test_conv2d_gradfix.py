"""torch_utils.ops.conv2d_gradfix: torch-identical results to second order, and skippable weight grads."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_gradfix

# (transpose, in_channels, out_channels, kernel, kwargs)
CASES = [
    (False, 3, 4, 3, dict(padding=1)),
    (False, 4, 6, 3, dict(stride=2, padding=1, groups=2)),
    (False, 2, 3, 2, dict(stride=(2, 1), padding=(0, 1), dilation=(1, 2))),  # Odd sizes: output_padding.
    (True, 3, 4, 3, dict(stride=2, padding=1, output_padding=1)),
    (True, 4, 2, 3, dict(stride=2, groups=2)),
    (True, 2, 3, 3, dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1))),
]


@pytest.fixture(autouse=True)
def custom_op_enabled(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)  # The training loop turns it off on CPUs.


def _make(case, dtype=torch.float64, size=(7, 6), batch=2):
    transpose, cin, cout, k, kwargs = case
    gen = torch.Generator().manual_seed(1)
    groups = kwargs.get('groups', 1)
    wshape = [cin, cout // groups, k, k] if transpose else [cout, cin // groups, k, k]
    x = torch.randn([batch, cin, *size], dtype=dtype, generator=gen, requires_grad=True)
    w = torch.randn(wshape, dtype=dtype, generator=gen, requires_grad=True)
    b = torch.randn([cout], dtype=dtype, generator=gen, requires_grad=True)
    ours = conv2d_gradfix.conv_transpose2d if transpose else conv2d_gradfix.conv2d
    ref = F.conv_transpose2d if transpose else F.conv2d
    return x, w, b, (lambda *t: ours(*t, **kwargs)), (lambda *t: ref(*t, **kwargs))


@pytest.mark.parametrize('case', CASES)
def test_forward_and_grads_match_torch(case):
    x, w, b, ours, ref = _make(case, dtype=torch.float32)
    out, out_ref = ours(x, w, b), ref(x, w, b)
    assert type(out.grad_fn).__name__ == '_Conv2dBackward'  # Custom path taken.
    assert torch.allclose(out, out_ref, atol=1e-5)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, w, b], grad_out)
    grads_ref = torch.autograd.grad(out_ref, [x, w, b], grad_out)
    for grad, grad_ref in zip(grads, grads_ref):
        assert torch.allclose(grad, grad_ref, atol=1e-4)


@pytest.mark.parametrize('case', CASES)
def test_gradcheck_and_gradgradcheck(case):
    x, w, b, ours, _ = _make(case, size=(4, 3), batch=1)
    assert torch.autograd.gradcheck(ours, (x, w, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(ours, (x, w, b), fast_mode=True)


@pytest.mark.parametrize('case', [CASES[1], CASES[3]])
def test_r1_style_double_backward_matches_torch(case):
    def r1_weight_grad(conv, x, w, b):
        out = conv(x, w, b).square().sum()
        with conv2d_gradfix.no_weight_gradients():  # As in the R1 step: only the first backward skips them.
            (grad_x,) = torch.autograd.grad(out, [x], create_graph=True)
        return torch.autograd.grad(grad_x.square().sum(), [w])[0]

    x, w, b, ours, ref = _make(case)
    assert torch.allclose(r1_weight_grad(ours, x, w, b), r1_weight_grad(ref, x, w, b), atol=1e-10)


def test_no_weight_gradients_skips_weight_grad_only():
    x, w, b, ours, ref = _make(CASES[0])
    out = ours(x, w, b)
    with conv2d_gradfix.no_weight_gradients():
        grad_x, grad_w, grad_b = torch.autograd.grad(out.sum(), [x, w, b], allow_unused=True, materialize_grads=True)
    assert torch.count_nonzero(grad_w) == 0
    grad_x_ref, _, grad_b_ref = torch.autograd.grad(ref(x, w, b).sum(), [x, w, b])
    assert torch.allclose(grad_x, grad_x_ref) and torch.allclose(grad_b, grad_b_ref)

    with conv2d_gradfix.no_weight_gradients():
        ours(x, w, b).sum().backward()
    assert w.grad is None and x.grad is not None
    assert not conv2d_gradfix.weight_gradients_disabled  # Restored on exit.
    with conv2d_gradfix.no_weight_gradients(disable=False):
        ours(x, w, b).sum().backward()
    assert w.grad is not None


def test_disabled_or_no_grad_uses_plain_torch():
    x, w, b, ours, _ = _make(CASES[0])
    with torch.no_grad():
        assert ours(x, w, b).grad_fn is None
    old = conv2d_gradfix.enabled
    conv2d_gradfix.enabled = False
    try:
        assert type(ours(x, w, b).grad_fn).__name__ == 'ConvolutionBackward0'
    finally:
        conv2d_gradfix.enabled = old
