"""CUDA sources without a GPU: nvcc compiles every .cu, g++ parses the bindings, and the kernels' per-element code,
compiled by nvcc into a host library, runs behind the ops' CUDA-path autograd Functions against the reference."""

import ctypes
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.utils.cpp_extension

import torch_utils.ops
from torch_utils.ops import bias_act as bias_act_module
from torch_utils.ops import upfirdn2d as upfirdn2d_module
from torch_utils.ops.bias_act import _bias_act_ref
from torch_utils.ops.upfirdn2d import _upfirdn2d_ref

OPS_DIR = Path(torch_utils.ops.__file__).parent
NVCC = shutil.which('nvcc')
pytestmark = pytest.mark.skipif(NVCC is None, reason='nvcc not on PATH')
DTYPE_CODES = {torch.float16: 16, torch.float32: 32, torch.float64: 64}

# ----------------------------------------------------------------------------
# Compiler flags as torch.utils.cpp_extension uses them.


def _cxx_std() -> str:
    source = Path(torch.utils.cpp_extension.__file__).read_text()
    return '-std=c++20' if "'-std=c++20'" in source else '-std=c++17'


def _cuda_include_dir() -> str:
    candidates = [os.environ.get('CUDA_HOME', ''), '/usr/local/cuda', str(Path(NVCC or '.').resolve().parents[1])]
    for home in candidates:
        if home and (Path(home) / 'include' / 'cuda_runtime_api.h').is_file():
            return str(Path(home) / 'include')
    return '/usr/local/cuda/include'


def _include_flags() -> list[str]:
    paths = torch.utils.cpp_extension.include_paths() + [sysconfig.get_paths()['include'], str(OPS_DIR)]
    return [f'-I{path}' for path in paths]


def _nvcc_flags() -> list[str]:
    common = getattr(torch.utils.cpp_extension, 'COMMON_NVCC_FLAGS', None) or [
        '-D__CUDA_NO_HALF_OPERATORS__',
        '-D__CUDA_NO_HALF_CONVERSIONS__',
        '-D__CUDA_NO_BFLOAT16_CONVERSIONS__',
        '-D__CUDA_NO_HALF2_OPERATORS__',
        '--expt-relaxed-constexpr',
    ]
    return [_cxx_std(), *common, *_include_flags(), '-Xcompiler', '-fPIC', '-DTORCH_EXTENSION_NAME=check']


# ----------------------------------------------------------------------------
# Host harnesses: loop the kernels' per-thread functions over all threads on the CPU, behind a C entry point.
# bias_act's returns the elements per loop item of the path the launcher picks (1: scalar, >1: vector), or < 0.

ACT_CASES = ' '.join(f'case {a}: run_threads<T, I, {a}>(p, step, vector); break;' for a in range(1, 10))
BIAS_ACT_HARNESS = f"""
#include "bias_act.cu"
template <typename T, typename I, int A> static void run_threads(const bias_act_kernel_params& p, int64_t step,
        bool vector) {{
    for (int64_t first = 0; first < step; first++) {{
        if (vector) bias_act_vector_thread<T, I, A>(p, I(first), I(step));
        else bias_act_thread<T, I, A>(p, I(first), I(step));
    }}
}}
template <typename T, typename I> static int run(const bias_act_kernel_params& p, int64_t step) {{
    const bool vector = bias_act_can_vectorize<T>(p); // The launcher's choice.
    switch (p.act) {{ {ACT_CASES} default: return -1; }}
    return vector ? bias_act_vec<T>::size : 1;
}}
extern "C" int emulate_bias_act(int dtype, int index64, int64_t step, const void* x, const void* b, const void* xref,
        const void* yref, const void* dy, void* y, int64_t n, int64_t stride_dim, int64_t size_dim, int mode, int act,
        double alpha, double gain, double clamp) {{
    bias_act_kernel_params p;
    p.x = x; p.b = b; p.xref = xref; p.yref = yref; p.dy = dy; p.y = y; p.n = n;
    p.stride_dim = stride_dim; p.size_dim = size_dim; p.mode = mode; p.act = act;
    p.alpha = alpha; p.gain = gain; p.clamp = clamp;
    if (dtype == 16) return index64 ? run<c10::Half, int64_t>(p, step) : run<c10::Half, int32_t>(p, step);
    if (dtype == 32) return index64 ? run<float, int64_t>(p, step) : run<float, int32_t>(p, step);
    if (dtype == 64) return index64 ? run<double, int64_t>(p, step) : run<double, int32_t>(p, step);
    return -2;
}}
"""
UPFIRDN2D_HARNESS = """
#include "upfirdn2d.cu"
template <typename T, typename I> static int run(const upfirdn2d_kernel_params& p, const int64_t* grid) {
    const int64_t threads_x = grid[0] * grid[2], threads_y = grid[1] * grid[3], blocks_z = grid[4];
    for (int64_t z = 0; z < blocks_z; z++)
        for (int64_t ty = 0; ty < threads_y; ty++)
            for (int64_t tx = 0; tx < threads_x; tx++)
                upfirdn2d_thread<T, I>(p, I(tx), I(threads_x), I(ty), I(threads_y), I(z), I(blocks_z));
    return 0;
}
extern "C" int emulate_upfirdn2d(int dtype, int index64, const int64_t* grid, const void* x, const void* f, void* y,
        const int64_t* s, const int64_t* xs, const int64_t* ys, const int* k, double gain) {
    upfirdn2d_kernel_params p;
    p.x = x; p.f = f; p.y = y;
    p.n = s[0]; p.c = s[1]; p.in_h = s[2]; p.in_w = s[3]; p.out_h = s[4]; p.out_w = s[5]; p.f_h = s[6]; p.f_w = s[7];
    p.x_stride_n = xs[0]; p.x_stride_c = xs[1]; p.x_stride_h = xs[2]; p.x_stride_w = xs[3];
    p.y_stride_n = ys[0]; p.y_stride_c = ys[1]; p.y_stride_h = ys[2]; p.y_stride_w = ys[3];
    p.up_x = k[0]; p.up_y = k[1]; p.down_x = k[2]; p.down_y = k[3]; p.pad_x0 = k[4]; p.pad_y0 = k[5];
    p.flip_filter = k[6]; p.channels_last = k[7]; p.gain = gain;
    if (dtype == 16) return index64 ? run<c10::Half, int64_t>(p, grid) : run<c10::Half, int32_t>(p, grid);
    if (dtype == 32) return index64 ? run<float, int64_t>(p, grid) : run<float, int32_t>(p, grid);
    if (dtype == 64) return index64 ? run<double, int64_t>(p, grid) : run<double, int32_t>(p, grid);
    return 2;
}
"""

# ----------------------------------------------------------------------------
# All compiler runs start at once (they dominate this file's run time); each test waits for the ones it needs.


def _run(command: list[str]) -> tuple[int, str, float]:
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr, time.time() - start


@pytest.fixture(scope='module')
def builds(tmp_path_factory):
    out = tmp_path_factory.mktemp('nvcc')
    jobs = {}
    for cu in sorted(OPS_DIR.glob('*.cu')):  # Real SASS for the H100 arch, as a run-time build would do.
        jobs[cu.name] = [NVCC, '-c', str(cu), '-o', str(out / (cu.stem + '.o')), '-arch=sm_90', *_nvcc_flags()]
    for cpp in sorted(OPS_DIR.glob('*.cpp')):  # The generated CUDA cmake header is absent from CPU wheels.
        jobs[cpp.name] = ['g++', '-fsyntax-only', _cxx_std(), '-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE', '-Wall']
        jobs[cpp.name] += [*_include_flags(), f'-I{_cuda_include_dir()}', '-DTORCH_EXTENSION_NAME=check', str(cpp)]
    for name, harness in [('bias_act', BIAS_ACT_HARNESS), ('upfirdn2d', UPFIRDN2D_HARNESS)]:
        (out / f'host_{name}.cu').write_text(harness)  # PTX only: the host code is what runs here.
        jobs[f'host_{name}'] = [NVCC, '--shared', '-o', str(out / f'libhost_{name}.so'), str(out / f'host_{name}.cu')]
        jobs[f'host_{name}'] += ['-gencode', 'arch=compute_90,code=compute_90', *_nvcc_flags()]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        futures = {name: pool.submit(_run, command) for name, command in jobs.items()}
        results = {name: future.result() for name, future in futures.items()}
    for name, (_, _, seconds) in results.items():
        print(f'{name}: {seconds:.1f} s', file=sys.stderr)
    return out, results


def _check(results, name):
    returncode, output, _ = results[name]
    assert returncode == 0, f'{name} failed to compile:\n{output[-6000:]}'


@pytest.mark.parametrize('name', sorted(path.name for path in OPS_DIR.glob('*.cu')))
def test_cuda_source_compiles(builds, name):
    _check(builds[1], name)


@pytest.mark.parametrize('name', sorted(path.name for path in OPS_DIR.glob('*.cpp')))
def test_binding_parses(builds, name):
    _check(builds[1], name)


# ----------------------------------------------------------------------------
# Stand-ins for the compiled plugins: the .cpp wrappers' work in Python, the element loops from the host library.


def _pointer(t: torch.Tensor):
    return ctypes.c_void_p(t.data_ptr()) if t.numel() else None


class HostBiasAct:
    def __init__(self, library: ctypes.CDLL, index64: bool, step: int):
        self.library, self.index64, self.step = library, index64, step  # step: threads in the emulated grid.
        self.widths = []  # Elements per loop item of each call: 1 = scalar loop, VEC = vector loop.

    def bias_act(self, x, b, xref, yref, dy, mode, dim, act, alpha, gain, clamp):
        for ref in (xref, yref, dy):
            assert ref.numel() == 0 or (ref.shape == x.shape and ref.stride() == x.stride() and ref.dtype == x.dtype)
        y = torch.full_like(x, float('nan'))  # An element never written stays NaN.
        size = x.shape[dim]
        stride = x.stride(dim) if size > 1 else 1
        pointers = [_pointer(t) for t in (x, b, xref, yref, dy, y)]
        code = self.library.emulate_bias_act(
            DTYPE_CODES[x.dtype],
            int(self.index64),
            self.step,
            *pointers,
            x.numel(),
            stride,
            size,
            mode,
            act,
            alpha,
            gain,
            clamp,
        )
        assert code > 0
        self.widths.append(code)
        return y


class HostUpfirdn2d:
    def __init__(self, library: ctypes.CDLL, index64: bool, grid: tuple):
        self.library, self.index64 = library, index64
        self.grid = (ctypes.c_int64 * 5)(*grid)  # Emulated launch: block_x, block_y, grid_x, grid_y, grid_z.

    def upfirdn2d(self, x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain):
        assert (
            f.ndim == 2
            and f.is_contiguous()
            and f.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
        )
        n, c, h, w = x.shape
        out_h = (h * upy + pady0 + pady1 - f.shape[0]) // downy + 1
        out_w = (w * upx + padx0 + padx1 - f.shape[1]) // downx + 1
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        y = torch.full([n, c, out_h, out_w], float('nan'), dtype=x.dtype)  # An output never written stays NaN.
        y = y.to(memory_format=torch.channels_last) if channels_last else y
        as_array = lambda values, kind: (kind * len(values))(*values)
        sizes = as_array([n, c, h, w, out_h, out_w, f.shape[0], f.shape[1]], ctypes.c_int64)
        ints = as_array([upx, upy, downx, downy, padx0, pady0, int(flip_filter), int(channels_last)], ctypes.c_int)
        x_strides, y_strides = as_array(x.stride(), ctypes.c_int64), as_array(y.stride(), ctypes.c_int64)
        code = self.library.emulate_upfirdn2d(
            DTYPE_CODES[x.dtype], int(self.index64), self.grid, _pointer(x), _pointer(f), _pointer(y), sizes, x_strides,
            y_strides, ints, ctypes.c_double(gain),
        )  # fmt: skip
        assert code == 0
        return y


def _load_library(builds, name):
    _check(builds[1], f'host_{name}')
    library = ctypes.CDLL(str(builds[0] / f'libhost_{name}.so'))
    if name == 'bias_act':
        library.emulate_bias_act.argtypes = [ctypes.c_int] * 2 + [ctypes.c_int64] + [ctypes.c_void_p] * 6
        library.emulate_bias_act.argtypes += [ctypes.c_int64] * 3
        library.emulate_bias_act.argtypes += [ctypes.c_int] * 2 + [ctypes.c_double] * 3
    return library


# ----------------------------------------------------------------------------
# Tolerances relative to the output scale, as in bench/gpu_ops_check.py.

TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2}


def _assert_close(got, expected, dtype):
    scale = max(float(expected.detach().abs().max()), 1e-3)
    error = float((got.detach().double() - expected.detach().double()).abs().max())
    assert error <= TOLERANCES[dtype] * scale, f'max abs error {error:.3g} at output scale {scale:.3g}'


# ----------------------------------------------------------------------------
# bias_act: every activation, dtype and layout through the CUDA path, against the float64 reference.


def _away_from_kinks(x, b, dim, act, alpha, gain, clamp):
    # The gradient jumps at x + b = 0 and at |y| = clamp; rounding to fp16 makes either side a fair answer there.
    for _ in range(10):
        pre = x.double() + b.double().reshape([-1 if i == dim else 1 for i in range(x.ndim)])
        y = _bias_act_ref(pre, act=act, alpha=alpha, gain=gain)
        near = pre.abs() < 0.02
        if clamp is not None:
            near |= (y.abs() - clamp).abs() < 0.02
        if not near.any():
            break
        x = torch.where(near, x + 0.1, x)
    return x


def _misaligned_copy(x):
    # Same values and strides, but a data pointer 1 element past a 16-byte boundary.
    storage = torch.empty(x.numel() + 1, dtype=x.dtype)
    return storage[1:].view(x.shape).copy_(x)


WIDE = (torch.float32, torch.float64)  # Dtypes whose 16-byte vectors fit a bias stride of 4.
ALL = (torch.float16, *WIDE)
BIAS_ACT_CASES = [  # (shape, dim, channels_last, clamp, misaligned, dtypes whose forward takes the vector loop)
    ([2, 6, 3, 4], 1, False, None, False, WIDE),
    ([2, 6, 3, 4], 1, True, 0.8, False, ()),  # Bias stride 1.
    ([3, 2, 5], 2, False, 1.1, False, ()),
    ([5, 4], 0, False, None, False, WIDE),
    ([2, 8, 2, 4], 1, False, None, False, ALL),
    ([2, 1, 3, 8], 1, False, 0.9, False, ALL),  # A single bias element: any stride qualifies.
    ([2, 8, 2, 4], 1, False, 1.2, True, ()),
]
EMULATED_STEPS = [1, 5, 37, 1000, 3, 7, 64]  # Threads in each case's emulated grid.


@pytest.mark.parametrize('act', list(bias_act_module.activation_funcs))
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16])
def test_bias_act_kernel_on_host(builds, monkeypatch, act, dtype):
    library = _load_library(builds, 'bias_act')
    gen = torch.Generator().manual_seed(0)
    for case, (shape, dim, channels_last, clamp, misaligned, vector_dtypes) in enumerate(BIAS_ACT_CASES):
        plugin = HostBiasAct(library, index64=case % 2 == 1, step=EMULATED_STEPS[case])
        monkeypatch.setattr(bias_act_module, '_plugin', plugin)
        x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2).to(dtype)
        x = x.to(memory_format=torch.channels_last) if channels_last else x
        b = torch.randn([shape[dim]], generator=gen, dtype=torch.float64).to(dtype)
        kwargs = dict(dim=dim, act=act, alpha=0.25, gain=1.4, clamp=clamp)
        x = _away_from_kinks(x, b, **kwargs)
        x = _misaligned_copy(x) if misaligned else x
        results = []
        for fn, dt in [
            (bias_act_module._bias_act_cuda(**kwargs).apply, dtype),
            (partial(_bias_act_ref, **kwargs), torch.float64),
        ]:
            xx, bb = x.to(dt).requires_grad_(True), b.to(dt).requires_grad_(True)
            y = fn(xx, bb)
            dx, db = torch.autograd.grad(y, [xx, bb], torch.ones_like(y) * 0.5, create_graph=dtype == torch.float64)
            results.append([y, dx, db])
            if dtype == torch.float64 and dx.requires_grad:
                results[-1] += torch.autograd.grad((dx * dx.detach()).sum(), [xx, bb], allow_unused=True)
        vector_width = 16 // x.element_size() if dtype in vector_dtypes else 1
        assert plugin.widths[0] == vector_width, f'case {case}: forward loop over {plugin.widths[0]} elements'
        for got, expected in zip(*results):
            if got is None or expected is None:
                assert not any(t is not None and t.abs().max() > 0 for t in (got, expected))
                continue
            _assert_close(got, expected, dtype)


# ----------------------------------------------------------------------------
# upfirdn2d: filters, factors, paddings, flips and layouts through the CUDA path, against the float64 reference.

UPFIRDN_CASES = [  # (filter, up, down, padding, flip_filter, gain)
    ([1, 3, 3, 1], 2, 1, [2, 1, 2, 1], False, 4.0),
    ([1, 3, 3, 1], 1, 2, [1, 1, 1, 1], False, 1.0),
    ('2d', [2, 1], [1, 2], [1, -1, 2, 0], True, 1.5),
    ('sep8', 4, 1, [3, 4, 5, 2], False, 16.0),
    ('sep8', [1, 2], [4, 1], [-2, 6, 1, 2], True, 1.0),
    (None, 2, 2, 0, False, 1.0),
]


def _make_filter(taps, gen):
    if taps == '2d':
        return torch.randn([3, 2], generator=gen)  # Non-separable, non-symmetric, fh != fw.
    if taps == 'sep8':
        return upfirdn2d_module.setup_filter(np.arange(1, 9.0))  # 8 taps: separable, two 1D passes.
    return torch.ones([1, 1]) if taps is None else upfirdn2d_module.setup_filter(taps)  # None: what upfirdn2d() uses.


@pytest.mark.parametrize('case', range(len(UPFIRDN_CASES)))
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16])
def test_upfirdn2d_kernel_on_host(builds, monkeypatch, case, dtype):
    library = _load_library(builds, 'upfirdn2d')
    taps, up, down, padding, flip_filter, gain = UPFIRDN_CASES[case]
    gen = torch.Generator().manual_seed(case)
    f = _make_filter(taps, gen)
    kwargs = dict(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    base = torch.randn([2, 3, 7, 9], generator=gen, dtype=torch.float64)
    layouts = [base, base.to(memory_format=torch.channels_last), base[:, :, 1:, ::2]]  # Dense, NHWC, strided view.
    grids = [(1, 1, 1, 1, 1), (4, 2, 2, 3, 5), (32, 8, 3, 2, 7)]  # One thread; loops on every axis; idle threads.
    for layout, (x, grid) in enumerate(zip(layouts, grids)):
        monkeypatch.setattr(upfirdn2d_module, '_plugin', HostUpfirdn2d(library, index64=layout == 1, grid=grid))
        results = []
        for fn, dt in [
            (upfirdn2d_module._upfirdn2d_cuda(**kwargs).apply, dtype),
            (partial(_upfirdn2d_ref, **kwargs), torch.float64),
        ]:
            xx = x.to(dt).requires_grad_(True)
            y = fn(xx, f)
            (dx,) = torch.autograd.grad(y, [xx], y.detach() * 0.5, create_graph=dtype == torch.float64)
            results.append([y, dx])
            if dtype == torch.float64:
                results[-1] += torch.autograd.grad((dx * dx.detach()).sum() + y.sum(), [xx])
        for got, expected in zip(*results):
            _assert_close(got, expected, dtype)


# ----------------------------------------------------------------------------
