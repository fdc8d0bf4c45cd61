"""Test-wide settings: one CPU thread (tiny tensors run fastest that way, and runs stay bit-reproducible)."""

import os
import sys

import pytest
import torch


@pytest.fixture(autouse=True, scope='session')
def _single_thread():
    os.environ['OMP_NUM_THREADS'] = '1'  # Inherited by the CLIs that tests start as subprocesses.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def spawn_workers(tmp_path):
    """Run `run(rank, tmp_dir)` from the given module source in `nprocs` spawned processes.

    The worker is written to a file because spawned processes re-import it by name, which test modules
    loaded in importlib mode cannot be.
    """

    def spawn(module_source, nprocs=2):
        (tmp_path / '_spawned_worker.py').write_text(module_source)
        sys.path.insert(0, str(tmp_path))
        try:
            import _spawned_worker

            torch.multiprocessing.spawn(_spawned_worker.run, args=(str(tmp_path),), nprocs=nprocs)
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop('_spawned_worker', None)

    return spawn
