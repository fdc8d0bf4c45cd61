"""The base layers import on a machine with no GPU, no ninja and no nvcc."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_BLOCK_BUILD_TOOLS = """
import builtins, sys
real_import = builtins.__import__
def guarded_import(name, *args, **kwargs):
    if name.split('.')[0] == 'ninja':
        raise ImportError('ninja is blocked for this test')
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded_import
import torch_utils, dnnlib
import torch_utils.custom_ops, torch_utils.persistence, torch_utils.misc, torch_utils.training_stats
from torch_utils.ops import bias_act, upfirdn2d, conv2d_resample, conv2d_gradfix, grid_sample_gradfix, fma
import torch
x = torch.randn(2, 3, 8, 8)
y = bias_act.bias_act(x, torch.zeros(3), act='lrelu')
z = upfirdn2d.upsample2d(x, upfirdn2d.setup_filter([1, 3, 3, 1]))
print('ok', tuple(y.shape), tuple(z.shape))
"""


def test_import_without_gpu_ninja_or_nvcc(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path), CUDA_VISIBLE_DEVICES='', PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, '-c', _BLOCK_BUILD_TOOLS], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok (2, 3, 8, 8) (2, 3, 16, 16)'
