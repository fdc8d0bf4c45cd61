"""The training guard: non-finite losses stop the run naming tick and phase; the last good snapshot stays."""

import os

import pytest
import torch

from torch_utils import training_stats
from training import reporting
from training import training_loop as tl


class NanAfter:
    """Extra generator term: 0 for the first `calls` calls, then NaN."""

    name = 'nan_after'

    def __init__(self, calls):
        self.calls = calls

    def __call__(self, gen_img, gen_c):
        self.calls -= 1
        value = float('nan') if self.calls < 0 else 0.0
        return torch.full([gen_img.shape[0]], value)


@pytest.fixture(autouse=True)
def _forget_nan_statistics():
    """training_stats sums are process-wide: drop the NaN ones these runs report, or later collectors read NaN."""
    yield
    for name in [name for name, total in training_stats._cumulative.items() if not torch.isfinite(total).all()]:
        training_stats._cumulative.pop(name)
        training_stats._counters.pop(name, None)


def _run(tiny_dataset, tiny_training_kwargs, tmp_path, **overrides):
    data = tiny_dataset(path=tmp_path / 'd.zip')
    loss_kwargs = dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1, extra_G_terms=[NanAfter(6)])
    kwargs = tiny_training_kwargs(tmp_path / 'run', data, loss_kwargs=loss_kwargs, **overrides)
    tl.training_loop(**kwargs)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_snapshot(tiny_dataset, tiny_training_kwargs, tmp_path):
    with pytest.raises(
        reporting.NonFiniteError,
        match=r'non-finite values in tick 2 \(kimg 0.02\): Gmain \(Loss/G/nan_after, Loss/G/total\)',
    ):
        _run(tiny_dataset, tiny_training_kwargs, tmp_path)
    snapshots = sorted(f for f in os.listdir(tmp_path / 'run') if f.startswith('network-snapshot'))
    assert snapshots == ['network-snapshot-000000.004.pkl', 'network-snapshot-000000.012.pkl']  # NaN from image 12.


def test_guard_can_be_switched_off(tiny_dataset, tiny_training_kwargs, tmp_path):
    _run(tiny_dataset, tiny_training_kwargs, tmp_path, guard_nonfinite=False, total_kimg=0.016)
    assert 'network-snapshot-000000.016.pkl' in os.listdir(tmp_path / 'run')
