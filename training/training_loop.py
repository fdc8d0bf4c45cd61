"""Main training loop (StyleGAN2-ADA, Karras et al. 2020), device-agnostic and exactly resumable.

Reads like a table of contents: setup_networks() -> setup_phases() -> loop: phase.step() -> update_ema()
-> maybe_update_ada() -> maybe_report() -> maybe_snapshot(). Every step is seeded from
(random_seed, rank, cur_nimg) and snapshots carry a `resume_state` (training/checkpoint.py), so a resumed
run equals an uninterrupted one. Logs, grids and metrics live in training/reporting.py.
"""

# The official signature's {} / [] defaults are kept (never mutated).
# ruff: noqa: B006

import copy
import os
import random

import numpy as np
import torch

import dnnlib
from torch_utils import misc, training_stats
from torch_utils.ops import conv2d_gradfix
from training import checkpoint, networks, reporting
from training.data_policy import make_data_policy
from training.dataset import ResumableSampler
from training.phases import setup_phases

# ----------------------------------------------------------------------------
# Seed python, numpy and torch (CPU and CUDA) from a tuple of ints, e.g. (seed, rank, cur_nimg).


def set_random_seed(*seeds):
    state = np.random.SeedSequence([int(s) for s in seeds]).generate_state(4)
    random.seed(int(state[0]))
    np.random.seed(int(state[1]))
    torch.manual_seed((int(state[2]) << 31) ^ int(state[3]))


# ----------------------------------------------------------------------------
# The training loop. Keyword arguments as in stylegan2-ada-pytorch, plus `device`.


# fmt: off
def training_loop(
    run_dir                 = '.',      # Output directory.
    training_set_kwargs     = {},       # Options for training set.
    data_loader_kwargs      = {},       # Options for torch.utils.data.DataLoader.
    G_kwargs                = {},       # Options for generator network.
    D_kwargs                = {},       # Options for discriminator network.
    G_opt_kwargs            = {},       # Options for generator optimizer.
    D_opt_kwargs            = {},       # Options for discriminator optimizer.
    augment_kwargs          = None,     # Options for augmentation pipeline. None = disable.
    loss_kwargs             = {},       # Options for loss function.
    G_step_kwargs           = None,     # Options for the G phases' optimizer step. None = training.phases.PhaseStep.
    D_step_kwargs           = None,     # Options for the D phases' optimizer step (a DP-SGD step plugs in here).
    is_private              = False,    # Private mode: nothing outside D's step reads the training set.
    cond_sampling           = 'data',   # Fake labels: 'data' | 'balanced' | [P1..PK] (training/data_policy.py).
    metrics                 = [],       # Metric names or callables to evaluate at each network snapshot.
    random_seed             = 0,        # Global random seed.
    num_gpus                = 1,        # Number of processes (ranks) participating.
    rank                    = 0,        # Rank of the current process in [0, num_gpus[.
    batch_size              = 4,        # Total batch size for one training iteration.
    batch_gpu               = 4,        # Number of samples processed at a time by one process.
    ema_kimg                = 10,       # Half-life of the exponential moving average (EMA) of generator weights.
    ema_rampup              = None,     # EMA ramp-up coefficient.
    G_reg_interval          = 4,        # How often to perform regularization for G? None = disable lazy reg.
    D_reg_interval          = 16,       # How often to perform regularization for D? None = disable lazy reg.
    augment_p               = 0,        # Initial value of augmentation probability.
    ada_target              = None,     # ADA target value. None = fixed p.
    ada_interval            = 4,        # How often to perform ADA adjustment?
    ada_kimg                = 500,      # ADA adjustment speed: kimg for p to go from 0 to 1.
    total_kimg              = 25000,    # Total length of the training, in thousands of images (may be fractional).
    kimg_per_tick           = 4,        # Progress snapshot interval (may be fractional).
    image_snapshot_ticks    = 50,       # How often to save image snapshots? None = disable.
    network_snapshot_ticks  = 50,       # How often to save network snapshots? None = disable.
    resume_pkl              = None,     # Network pickle to resume from (exactly if it has `resume_state`).
    cudnn_benchmark         = True,     # Enable torch.backends.cudnn.benchmark?
    allow_tf32              = False,    # Enable torch.backends.cuda.matmul.allow_tf32 and cudnn.allow_tf32?
    cpu_bf16                = False,    # Run the mixed-precision blocks in bfloat16 on a CPU (networks.cpu_bfloat16)?
    guard_nonfinite         = True,     # Stop (keeping the last good snapshot) when losses or weights go non-finite.
    abort_fn                = None,     # Callback that determines whether to abort training.
    progress_fn             = None,     # Callback function for updating training progress.
    device                  = None,     # torch.device; None = cuda:rank if available, else cpu.
):
# fmt: on
    """Train G and D as configured by train.py (or a test); writes everything under `run_dir` on rank 0.

    Every rank of a torch.distributed group calls this with its own `rank` and `device`; the process
    group (gloo or nccl) must already be initialised when num_gpus > 1.
    """
    opts = dnnlib.EasyDict(locals())
    with networks.bfloat16_on_cpu(cpu_bf16):  # Process-wide while training; restored on return.
        device = setup_device(opts)
        training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
        policy = make_data_policy(is_private, cond_sampling)
        if rank == 0:
            reporting.print_dataset_summary(training_set, policy)
        nets = setup_networks(opts, training_set, device)
        state = checkpoint.load_networks(opts, nets) if resume_pkl is not None else None
        broadcast_networks(nets, num_gpus)
        loss, phases = setup_phases(opts, nets, device)
        progress = checkpoint.restore_training_state(state, opts, nets, loss, phases)
        start = progress.cur_nimg // num_gpus
        data_iter = None if policy.is_private else setup_data_iterator(opts, training_set, device, start)
        report = reporting.setup_reporting(opts, training_set, policy, nets, device, progress)
        num_phases, z_dim = len(phases), nets.G.z_dim

        while True:
            set_random_seed(random_seed, rank, progress.cur_nimg)
            batch = fetch_batch(data_iter, training_set, policy, opts, device, num_phases, z_dim)
            for phase, gen_z, gen_c in zip(phases, batch.gen_z, batch.gen_c):
                if progress.batch_idx % phase.interval == 0:
                    phase.step(batch.real_img, batch.real_c, gen_z, gen_c)
            update_ema(nets, opts, progress.cur_nimg)
            progress.cur_nimg += batch_size
            progress.batch_idx += 1
            if policy.reads_real_signs:
                maybe_update_ada(nets.augment_pipe, loss, opts, progress.batch_idx)

            stop_reason = next((p.step.stop_reason for p in phases if getattr(p.step, 'stop_reason', None)), None)
            done = progress.cur_nimg >= total_kimg * 1000 or stop_reason is not None
            tick_end_nimg = progress.tick_start_nimg + kimg_per_tick * 1000
            if not done and progress.cur_tick != 0 and progress.cur_nimg < tick_end_nimg:
                continue
            for phase in phases:  # Per-tick statistics of a phase step (e.g. DP-SGD's epsilon so far).
                getattr(phase.step, 'report_tick', lambda: None)()
            done = reporting.maybe_report(report, opts, nets, progress, device) or done
            if guard_nonfinite:
                reporting.check_finite(report, nets, progress)
            snapshot = maybe_snapshot(report, opts, nets, loss, phases, progress, training_set, done)
            reporting.maybe_evaluate_metrics(report, opts, snapshot, device)
            reporting.finish_tick(report, progress.cur_nimg)
            progress.update(cur_tick=progress.cur_tick + 1, tick_start_nimg=progress.cur_nimg)
            if done:
                break

        if num_gpus > 1:
            reporting.report_rank_hashes(nets, rank)
        if rank == 0:
            stopped_early = stop_reason is not None and progress.cur_nimg < total_kimg * 1000
            print(f'\nStopped early: {stop_reason}.' if stopped_early else '\nExiting...')
        reporting.close_reporting(report)


# ----------------------------------------------------------------------------
# Device, backend flags and the initial seed.


def setup_device(opts):
    device = opts.device
    if device is None:
        device = torch.device('cuda', opts.rank) if torch.cuda.is_available() else torch.device('cpu')
    device = torch.device(device)
    if device.type == 'cuda':
        device = device if device.index is not None else torch.device('cuda', torch.cuda.current_device())
        torch.cuda.set_device(device)
    set_random_seed(opts.random_seed, opts.rank)
    torch.backends.cudnn.benchmark = opts.cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = opts.allow_tf32
    torch.backends.cudnn.allow_tf32 = opts.allow_tf32
    conv2d_gradfix.enabled = device.type == 'cuda'  # On CPUs torch's own convolution backward is 10-15% faster.
    if opts.batch_size % (opts.batch_gpu * opts.num_gpus) != 0:
        raise ValueError(f'batch_size {opts.batch_size} must be a multiple of batch_gpu * num_gpus')
    return device


# ----------------------------------------------------------------------------
# Networks: G, D, G_ema and the augmentation pipe (with requires_grad off; phases switch it on).


def setup_networks(opts, training_set, device):
    common_kwargs = dict(
        c_dim=training_set.label_dim, img_resolution=training_set.resolution, img_channels=training_set.num_channels
    )
    G = dnnlib.util.construct_class_by_name(**opts.G_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    D = dnnlib.util.construct_class_by_name(**opts.D_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = None
    if opts.augment_kwargs is not None and (opts.augment_p > 0 or opts.ada_target is not None):
        augment_pipe = dnnlib.util.construct_class_by_name(**opts.augment_kwargs)
        augment_pipe = augment_pipe.train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(opts.augment_p))
    if opts.rank == 0:
        z = torch.zeros([opts.batch_gpu, G.z_dim], device=device)
        c = torch.zeros([opts.batch_gpu, G.c_dim], device=device)
        img = misc.print_module_summary(G, [z, c])
        misc.print_module_summary(D, [img, c])
        G.mapping.w_avg.copy_(G_ema.mapping.w_avg)  # Undo the summary pass's w_avg update.
    return dnnlib.EasyDict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe)


# ----------------------------------------------------------------------------
# Multi-process: rank 0's networks (fresh or resumed) are copied to every other rank.


def broadcast_networks(nets, num_gpus):
    if num_gpus == 1:
        return
    for module in (nets.G, nets.D, nets.G_ema, nets.augment_pipe):
        if module is not None:
            for tensor in misc.params_and_buffers(module):
                torch.distributed.broadcast(tensor, src=0)


# ----------------------------------------------------------------------------
# Data: an infinite, resumable stream of real batches, plus random latents and labels per phase.


def setup_data_iterator(opts, training_set, device, start):
    sampler = ResumableSampler(
        training_set, rank=opts.rank, num_replicas=opts.num_gpus, seed=opts.random_seed, start=start
    )
    loader_kwargs = dict(opts.data_loader_kwargs)
    if loader_kwargs.get('num_workers', 0) == 0:
        loader_kwargs.pop('prefetch_factor', None)
    if device.type != 'cuda':
        loader_kwargs.pop('pin_memory', None)
    loader = torch.utils.data.DataLoader(
        dataset=training_set, sampler=sampler, batch_size=opts.batch_size // opts.num_gpus, **loader_kwargs
    )
    return iter(loader)


def fetch_batch(data_iter, training_set, policy, opts, device, num_phases, z_dim):
    batch_rank = opts.batch_size // opts.num_gpus
    if data_iter is None:  # Private mode: only D's step reads real images (it samples them itself).
        real_img = real_c = [None] * (batch_rank // opts.batch_gpu)
    else:
        real_img, real_c = next(data_iter)
        real_img = (real_img.to(device).to(torch.float32) / 127.5 - 1).split(opts.batch_gpu)
        real_c = real_c.to(device).split(opts.batch_gpu)
    gen_z = torch.randn([num_phases, batch_rank, z_dim], device=device)
    gen_c = policy.sample_fake_labels(training_set, num_phases * batch_rank)
    gen_c = torch.from_numpy(gen_c).to(device).reshape(num_phases, batch_rank, training_set.label_dim)
    return dnnlib.EasyDict(
        real_img=real_img,
        real_c=real_c,
        gen_z=[z.split(opts.batch_gpu) for z in gen_z],
        gen_c=[c.split(opts.batch_gpu) for c in gen_c],
    )


# ----------------------------------------------------------------------------
# Generator EMA with optional ramp-up (half-life ema_kimg, capped at ema_rampup * cur_nimg).


def update_ema(nets, opts, cur_nimg):
    with torch.autograd.profiler.record_function('Gema'), torch.no_grad():
        ema_nimg = opts.ema_kimg * 1000
        if opts.ema_rampup is not None:
            ema_nimg = min(ema_nimg, cur_nimg * opts.ema_rampup)
        ema_beta = 0.5 ** (opts.batch_size / max(ema_nimg, 1e-8))
        for p_ema, p in zip(nets.G_ema.parameters(), nets.G.parameters()):
            p_ema.copy_(p.lerp(p_ema, ema_beta))
        for b_ema, b in zip(nets.G_ema.buffers(), nets.G.buffers()):
            b_ema.copy_(b)


# ----------------------------------------------------------------------------
# ADA: every ada_interval batches, move p by sign(r_t - target), r_t = E[sign(D(real))] over all ranks.


def maybe_update_ada(augment_pipe, loss, opts, batch_idx):
    if augment_pipe is None or opts.ada_target is None or batch_idx % opts.ada_interval != 0:
        return
    stats = loss.take_real_sign_stats()
    if opts.num_gpus > 1:
        torch.distributed.all_reduce(stats)
    if stats[1] == 0:
        return
    r_t = float(stats[0] / stats[1])
    adjust = np.sign(r_t - opts.ada_target) * (opts.batch_size * opts.ada_interval) / (opts.ada_kimg * 1000)
    augment_pipe.p.copy_((augment_pipe.p + adjust).clamp(min=0))
    training_stats.report('Progress/ada_rt', r_t)


# ----------------------------------------------------------------------------
# Snapshots: image grid every image_snapshot_ticks, network pickle every network_snapshot_ticks.


def maybe_snapshot(report, opts, nets, loss, phases, progress, training_set, done):
    """Write due snapshots; return dict(data=..., pkl=...) for the metrics hook, or None."""
    tag = checkpoint.kimg_tag(progress.cur_nimg, opts.kimg_per_tick)
    due = lambda ticks: ticks is not None and (done or progress.cur_tick % ticks == 0)  # noqa: E731
    if opts.rank == 0 and due(opts.image_snapshot_ticks):
        reporting.save_fakes(report.grid, nets.G_ema, os.path.join(opts.run_dir, f'fakes{tag}.png'))
    if not due(opts.network_snapshot_ticks):
        return None
    snapshot_pkl = os.path.join(opts.run_dir, f'network-snapshot-{tag}.pkl')
    data = checkpoint.save_snapshot(snapshot_pkl, opts, nets, loss, phases, progress, training_set)
    return dict(data=data, pkl=snapshot_pkl)


# ----------------------------------------------------------------------------
