"""Test-wide settings: one CPU thread (tiny tensors run fastest that way, and runs stay bit-reproducible)."""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope='session')
def _single_thread():
    os.environ['OMP_NUM_THREADS'] = '1'  # Inherited by the CLIs that tests start as subprocesses.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
