"""GPU check of the fused ops: build both CUDA plugins, compare them with the reference, time fused vs reference.

Accuracy: max abs error relative to the output scale (max |reference|), against a float64 reference computed from
the same rounded inputs; fp32 <= 1e-5, fp16 <= 1e-2; forward, backward and (bias_act) double backward.
Timing: median over repeats with CUDA events, warm-up excluded. Target: bias_act fused >= 2x the reference on
[32, 512, 64, 64] fp16 lrelu + bias. Exit codes: 0 pass, 1 build or accuracy failure, 2 no CUDA device.

    python bench/gpu_ops_check.py
"""

import os
import statistics
import sys
import time
from functools import partial

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torch_utils import custom_ops  # noqa: E402
from torch_utils.ops import bias_act, upfirdn2d  # noqa: E402

TOLERANCES = {torch.float32: 1e-5, torch.float16: 1e-2}
BIAS_ACT_SPEEDUP_TARGET = 2.0

# ----------------------------------------------------------------------------
# Accuracy bookkeeping: one row per compared tensor.


class Report:
    def __init__(self):
        self.rows = []

    def compare(self, name, dtype, got, expected):
        if got is None or expected is None:  # Zero second derivatives may come back as None on either side.
            tensors = [t for t in (got, expected) if t is not None]
            error, scale = (float(tensors[0].abs().max()) if tensors else 0.0), 1.0
        else:
            scale = max(float(expected.detach().abs().max()), 1e-6)
            error = float((got.detach().double() - expected.detach().double()).abs().max())
        relative = error / scale
        self.rows.append((name, str(dtype).replace('torch.', ''), relative, relative <= TOLERANCES[dtype]))

    @property
    def passed(self):
        return bool(self.rows) and all(ok for *_, ok in self.rows)


# ----------------------------------------------------------------------------
# bias_act inputs nudged away from the gradient's jumps (x + b = 0, |y| = clamp), where rounding picks a side.


def _bias_act_inputs(shape, dtype, dim, act, alpha, gain, clamp, channels_last=False, seed=0, device='cuda'):
    gen = torch.Generator(device=device).manual_seed(seed)
    x = (torch.randn(shape, generator=gen, device=device, dtype=torch.float64) * 2).to(dtype)
    b = torch.randn([shape[dim]], generator=gen, device=device, dtype=torch.float64).to(dtype)
    for _ in range(10):
        pre = x.double() + b.double().reshape([-1 if i == dim else 1 for i in range(x.ndim)])
        y = bias_act._bias_act_ref(pre, act=act, alpha=alpha, gain=gain)
        near = pre.abs() < 0.02
        if clamp is not None:
            near |= (y.abs() - clamp).abs() < 0.02
        if not near.any():
            break
        x = torch.where(near, x + 0.1, x)
    return (x.to(memory_format=torch.channels_last) if channels_last else x), b


def check_bias_act(report, dtype, device='cuda'):
    cases = [([8, 64, 16, 16], 1, False, None), ([8, 64, 16, 16], 1, True, 0.8), ([64, 512], 1, False, 1.1)]
    for act in bias_act.activation_funcs:
        for shape, dim, channels_last, clamp in cases:
            kwargs = dict(dim=dim, act=act, alpha=0.25, gain=1.4, clamp=clamp)
            x, b = _bias_act_inputs(shape, dtype, channels_last=channels_last, device=device, **kwargs)
            gen = torch.Generator(device=device).manual_seed(2)
            dy = torch.randn(shape, generator=gen, device=device, dtype=torch.float64).to(dtype)  # Upstream grads.
            w = torch.randn(shape, generator=gen, device=device, dtype=torch.float64).to(dtype)  # Second-order weights.
            results = []
            for impl, dt in [('cuda', dtype), ('ref', torch.float64)]:
                xx, bb = x.to(dt).detach().requires_grad_(True), b.to(dt).detach().requires_grad_(True)
                y = bias_act.bias_act(xx, bb, impl=impl, **kwargs)
                if impl == 'cuda' and 'BiasActCuda' not in type(y.grad_fn).__name__:
                    raise RuntimeError(f'bias_act did not dispatch to CUDA (grad_fn {type(y.grad_fn).__name__})')
                dx, db = torch.autograd.grad(y, [xx, bb], dy.to(dt), create_graph=True)
                loss = (dx * w.to(dt)).sum() + db.square().sum() if dx.requires_grad else None
                second = torch.autograd.grad(loss, [xx, bb], allow_unused=True) if loss is not None else (None, None)
                results.append([y, dx, db, *second])
            tag = f'bias_act {act} {shape} clamp={clamp}' + (' NHWC' if channels_last else '')
            for what, got, expected in zip(['y', 'dx', 'db', 'ddx', 'ddb'], *results):
                report.compare(f'{tag} {what}', dtype, got, expected)


# ----------------------------------------------------------------------------
# upfirdn2d: filters (2D/separable, odd/even, asymmetric), factors, paddings, flips, layouts.


def check_upfirdn2d(report, dtype, device='cuda'):
    f4 = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    f8 = upfirdn2d.setup_filter(np.arange(1, 9.0), device=device)  # Separable (>= 8 taps).
    f_asym = torch.tensor([[1.0, -2.0], [0.5, 3.0], [2.0, 0.25]], device=device)
    cases = [
        ('upsample2d [1,3,3,1]', lambda x, impl: upfirdn2d.upsample2d(x, f4, impl=impl)),
        ('downsample2d [1,3,3,1]', lambda x, impl: upfirdn2d.downsample2d(x, f4, impl=impl)),
        ('filter2d 8-tap separable', lambda x, impl: upfirdn2d.filter2d(x, f8, padding=[1, 0, -1, 2], impl=impl)),
        ('upsample2d 8-tap up=4', lambda x, impl: upfirdn2d.upsample2d(x, f8, up=4, impl=impl)),
        (
            'upfirdn2d asym up=[2,1] down=[1,2]',
            lambda x, impl: upfirdn2d.upfirdn2d(x, f_asym, [2, 1], [1, 2], [1, -1, 2, 0], True, 1.5, impl=impl),
        ),
        ('downsample2d down=[4,2]', lambda x, impl: upfirdn2d.downsample2d(x, f8, down=[4, 2], impl=impl)),
    ]
    gen = torch.Generator(device=device).manual_seed(1)
    base = torch.randn([4, 32, 24, 20], generator=gen, device=device, dtype=torch.float64).to(dtype)
    for name, fn in cases:
        for layout, x in [('NCHW', base), ('NHWC', base.to(memory_format=torch.channels_last))]:
            out_shape = fn(x[:1, :1].double(), 'ref').shape[2:]
            dy = torch.randn([*x.shape[:2], *out_shape], generator=gen, device=device, dtype=torch.float64).to(dtype)
            w = torch.randn(x.shape, generator=gen, device=device, dtype=torch.float64).to(dtype)
            results = []
            for impl, dt in [('cuda', dtype), ('ref', torch.float64)]:
                xx = x.to(dt).detach().requires_grad_(True)
                y = fn(xx, impl)
                (dx,) = torch.autograd.grad(y, [xx], dy.to(dt), create_graph=True)
                (ddx,) = torch.autograd.grad((dx * w.to(dt)).sum() + y.sum(), [xx])
                results.append([y, dx, ddx])
            for what, got, expected in zip(['y', 'dx', 'ddx'], *results):
                report.compare(f'{name} {layout} {what}', dtype, got, expected)


# ----------------------------------------------------------------------------
# Timing: median of repeated CUDA-event measurements after warm-up.


def median_ms(fn, repeats):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def forward_backward(op, x):
    xx = x.detach().requires_grad_(True)
    y = op(xx)
    torch.autograd.grad(y, [xx], torch.ones_like(y))


def time_ref_vs_fused(name, make_op, x, repeats):
    rows = []
    for mode in ('fwd', 'fwd+bwd'):
        times = {}
        for impl in ('ref', 'cuda'):
            op = make_op(impl)
            times[impl] = median_ms(partial(op, x) if mode == 'fwd' else partial(forward_backward, op, x), repeats)
        rows.append((f'{name} {mode}', list(x.shape), times['ref'], times['cuda']))
    return rows


def time_ops(repeats):
    rows = []
    x = torch.randn([32, 512, 64, 64], device='cuda', dtype=torch.float16)
    b = torch.randn([512], device='cuda', dtype=torch.float16)
    for label, kwargs in [('lrelu+bias', dict(act='lrelu')), ('lrelu+bias clamp=256', dict(act='lrelu', clamp=256))]:
        make_op = lambda impl, kwargs=kwargs: partial(bias_act.bias_act, b=b, impl=impl, **kwargs)
        rows += time_ref_vs_fused(f'bias_act {label}', make_op, x, repeats)
    x = torch.randn([32, 256, 64, 64], device='cuda', dtype=torch.float16)
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device='cuda')
    for name, resample in [('upsample2d', upfirdn2d.upsample2d), ('downsample2d', upfirdn2d.downsample2d)]:
        make_op = lambda impl, resample=resample: partial(resample, f=f, impl=impl)
        rows += time_ref_vs_fused(f'{name} [1,3,3,1]', make_op, x, repeats)
    return rows


# ----------------------------------------------------------------------------
# Output: worst accuracy row per check family, then the timing table, then PASS/FAIL.


def print_tables(report, timings):
    print('\nAccuracy (max abs error / output scale; worst 12 rows, all rows checked):')
    print(f'  {"check":<60} {"dtype":<8} {"rel.err":>9}  status')
    for name, dtype, relative, ok in sorted(report.rows, key=lambda row: -row[2] / TOLERANCES[getattr(torch, row[1])])[
        :12
    ]:
        print(f'  {name[:60]:<60} {dtype:<8} {relative:9.2e}  {"ok" if ok else "FAIL"}')
    failed = [row for row in report.rows if not row[3]]
    print(f'  {len(report.rows)} comparisons, {len(failed)} failed')
    print('\nTiming (fp16, median ms, CUDA events):')
    print(f'  {"op":<36} {"shape":<20} {"ref":>8} {"fused":>8} {"speedup":>8}')
    for name, shape, ref_ms, cuda_ms in timings:
        print(f'  {name:<36} {str(shape):<20} {ref_ms:8.3f} {cuda_ms:8.3f} {ref_ms / cuda_ms:7.2f}x')


@click.command()
@click.option(
    '--repeats', type=click.IntRange(min=1), default=20, show_default=True, metavar='INT', help='Timed repeats per op.'
)
@click.option('--skip-timing', is_flag=True, help='Only build and check accuracy.')
def main(repeats, skip_timing):
    """Build the CUDA plugins, check them against the reference, time them."""
    if not torch.cuda.is_available():
        print('gpu_ops_check: no CUDA device; nothing to check (run this on a GPU machine).')
        sys.exit(2)
    if os.environ.pop('SPINEGAN_OPS_IMPL', None):
        print('gpu_ops_check: ignoring SPINEGAN_OPS_IMPL for this check.')
    print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}')
    custom_ops.verbosity = 'full'
    start = time.time()
    built = {'bias_act': bias_act._init(), 'upfirdn2d': upfirdn2d._init()}
    print(f'Build/load: {time.time() - start:.1f} s, {built}')
    if not all(built.values()):
        print('FAIL: a CUDA plugin did not build (see the warning above).')
        sys.exit(1)

    report = Report()
    start = time.time()
    for dtype in (torch.float32, torch.float16):
        check_bias_act(report, dtype)
        check_upfirdn2d(report, dtype)
    print(f'Accuracy checks: {time.time() - start:.1f} s')
    timings = [] if skip_timing else time_ops(repeats)
    print_tables(report, timings)

    speedup = next((ref / fused for name, _, ref, fused in timings if name == 'bias_act lrelu+bias fwd'), None)
    if speedup is not None:
        verdict = 'met' if speedup >= BIAS_ACT_SPEEDUP_TARGET else 'NOT met'
        print(f'\nbias_act fp16 lrelu+bias forward speedup {speedup:.2f}x: target {BIAS_ACT_SPEEDUP_TARGET}x {verdict}')
    print('PASS' if report.passed else 'FAIL')
    sys.exit(0 if report.passed else 1)


# ----------------------------------------------------------------------------

if __name__ == '__main__':
    main()

# ----------------------------------------------------------------------------
