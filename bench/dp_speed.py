"""DP-SGD cost: the private D step (clinical.dp.DPDiscriminatorStep: per-sample gradients, clipping, noise, Poisson
sampling, R1 folded in every 16 steps) against the standard D step (Dmain every step, Dreg every 16) at the same
config, both built by train.py's config function and the training loop's own setup on the phantom. Both D's have
minibatch-stddev off (DP needs it off), so the ratio is the price of DP-SGD alone. Times whole iterations of D's
phases (G's phases are the same in both and not timed), after warm-up; on CUDA also peak memory.

Example:
    python bench/dp_speed.py --res 32 --batch 16 --threads 2
"""

import inspect
import os
import subprocess
import sys
import tempfile
import time

import click
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import dnnlib  # noqa: E402
from training import training_loop as tl  # noqa: E402
from training.config import setup_training_config  # noqa: E402
from training.data_policy import make_data_policy  # noqa: E402
from training.phases import setup_phases  # noqa: E402


def build(c, device):
    defaults = {key: p.default for key, p in inspect.signature(tl.training_loop).parameters.items()}
    opts = dnnlib.EasyDict(defaults, **c)
    opts.D_kwargs.epilogue_kwargs.mbstd_num_channels = 0
    training_set = dnnlib.util.construct_class_by_name(**opts.training_set_kwargs)
    nets = tl.setup_networks(dnnlib.EasyDict(opts, rank=1), training_set, device)  # rank 1: no summary table.
    _loss, phases = setup_phases(opts, nets, device)
    policy = make_data_policy(opts.is_private, opts.cond_sampling)
    data_iter = None if policy.is_private else tl.setup_data_iterator(opts, training_set, device, 0)
    return opts, training_set, policy, phases, data_iter


def time_d_steps(c, device, warmup, iters):
    opts, training_set, policy, phases, data_iter = build(c, device)
    d_phases = [phase for phase in phases if phase.name.startswith('D')]
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    for batch_idx in range(warmup + iters):
        if batch_idx == warmup:
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        batch = tl.fetch_batch(data_iter, training_set, policy, opts, device, len(phases), 512)
        for phase in d_phases:
            index = phases.index(phase)
            if batch_idx % phase.interval == 0:
                phase.step(batch.real_img, batch.real_c, batch.gen_z[index], batch.gen_c[index])
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / iters
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else None
    return seconds, peak


@click.command()
@click.option('--cfg', default='cpu', show_default=True, help='train.py preset')
@click.option('--res', type=int, default=32, show_default=True, help='Resolution')
@click.option('--batch', type=int, default=16, show_default=True, help='Batch (expected batch under DP)')
@click.option('--iters', type=int, default=32, show_default=True, help='Timed iterations (a multiple of 16 is fair)')
@click.option('--warmup', type=int, default=4, show_default=True, help='Untimed iterations first')
@click.option('--threads', type=int, default=2, show_default=True, help='torch threads')
@click.option('--device', default='cpu', show_default=True, help='cpu or cuda')
def main(cfg, res, batch, iters, warmup, threads, device):
    torch.set_num_threads(threads)
    device = torch.device(device)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, 'phantom.zip')
        args = ['--source', 'phantom:1000', '--resolution', str(res), '--dest', data]
        subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'dataset_tool.py'), *args], check=True,
                       capture_output=True)  # fmt: skip
        common = dict(data=data, cond=True, batch=batch, cond_sampling='balanced', aug='noaug', workers=0,
                      device=device.type)  # fmt: skip
        arms = {
            'standard D step': setup_training_config(cfg, **common),
            'DP-SGD D step': setup_training_config(cfg, **common, dp=True, dp_noise=1.0),
        }
        results = {}
        for name, c in arms.items():
            torch.manual_seed(0)
            results[name] = time_d_steps(c, device, warmup, iters)
    print(f'{cfg} {res}px, batch {batch}, {threads} threads, {device}, {iters} iterations after {warmup} warm-up')
    for name, (seconds, peak) in results.items():
        memory = f', peak {peak:.0f} MiB' if peak is not None else ''
        print(f'{name:16s} {seconds * 1000:8.1f} ms/iteration{memory}')
    (base, base_peak), (private, private_peak) = results.values()
    memory = f', peak memory {private_peak / base_peak:.2f}x' if base_peak else ''
    print(f'DP / standard: {private / base:.2f}x time{memory}')


if __name__ == '__main__':
    main()
