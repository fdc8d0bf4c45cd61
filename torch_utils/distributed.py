"""Process launching: one process, N spawned ranks (gloo on CPU, nccl on CUDA), or ranks started by torchrun.

`launch(worker, kwargs, ...)` calls `worker(**kwargs)` with `rank` and `device` set for every rank; rank 0 tees its
stdout/stderr into a log file. Knows nothing about training: the caller passes the worker function.
"""

import contextlib
import os
import sys
import tempfile

import torch

from torch_utils import training_stats

# ----------------------------------------------------------------------------
# Writes to a console stream and to an append-mode log file.


class _Tee:
    def __init__(self, stream, file):
        self.stream, self.file = stream, file

    def write(self, text):
        self.stream.write(text)
        self.file.write(text)
        self.file.flush()

    def flush(self):
        self.stream.flush()
        self.file.flush()

    def isatty(self):
        return False


# ----------------------------------------------------------------------------
# torchrun: WORLD_SIZE when this process was started by it (env:// rendezvous), else None.


def torchrun_world_size() -> int | None:
    if os.environ.get('WORLD_SIZE') is None or os.environ.get('LOCAL_RANK') is None:
        return None
    return int(os.environ['WORLD_SIZE'])


def init_torchrun(device_type: str) -> tuple[int, int]:
    """Join torchrun's process group; returns (rank, local_rank)."""
    rank, local_rank = int(os.environ['RANK']), int(os.environ['LOCAL_RANK'])
    if device_type == 'cuda':
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group(backend=_backend(device_type), init_method='env://')
    return rank, local_rank


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s `obj` on every rank of an initialised process group."""
    holder = [obj]
    torch.distributed.broadcast_object_list(holder, src=src)
    return holder[0]


def _backend(device_type):
    return 'nccl' if device_type == 'cuda' else 'gloo'


# ----------------------------------------------------------------------------
# Launch `worker` in num_ranks processes (direct call for one rank; torch.multiprocessing.spawn otherwise).


def launch(worker, kwargs: dict, num_ranks: int, device_type: str, log_path: str | None) -> None:
    if num_ranks == 1:
        run_rank(0, worker, kwargs, num_ranks, device_type, log_path)
        return
    print('Launching processes...')
    with tempfile.TemporaryDirectory() as temp_dir:
        init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
        args = (worker, kwargs, num_ranks, device_type, log_path, None, init_file)
        torch.multiprocessing.spawn(fn=run_rank, args=args, nprocs=num_ranks)


def run_rank(rank, worker, kwargs, num_ranks, device_type, log_path, local_rank=None, init_file=None):
    """One rank: join the group (unless torchrun already did), tee rank 0's output, run, tear down."""
    local_rank = rank if local_rank is None else local_rank
    if num_ranks > 1 and init_file is not None:
        torch.distributed.init_process_group(
            backend=_backend(device_type), init_method=f'file://{init_file}', rank=rank, world_size=num_ranks
        )
    if num_ranks > 1 and device_type != 'cuda':
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_ranks))
    device = torch.device('cuda', local_rank) if device_type == 'cuda' else torch.device('cpu')
    if num_ranks > 1:
        training_stats.init_multiprocessing(rank=rank, sync_device=device)
    with _tee_output(log_path if rank == 0 else None):
        worker(**dict(kwargs, rank=rank, device=device))
    if num_ranks > 1:
        torch.distributed.barrier()  # A rank that tears down while a peer still talks to it aborts (gloo).
        torch.distributed.destroy_process_group()


@contextlib.contextmanager
def _tee_output(log_path):
    """stdout and stderr also go to `log_path` (None = unchanged)."""
    if log_path is None:
        yield
        return
    saved = sys.stdout, sys.stderr
    with open(log_path, 'a') as log:
        sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
        try:
            yield
        except Exception as err:
            log.write(f'Error: {type(err).__name__}: {err}\n')  # The console gets it from the caller.
            raise
        finally:
            sys.stdout, sys.stderr = saved


# ----------------------------------------------------------------------------
