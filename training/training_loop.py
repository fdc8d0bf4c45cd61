"""Main training loop (StyleGAN2-ADA, Karras et al. 2020), device-agnostic and exactly resumable.

Reads like a table of contents: setup_networks() -> setup_phases() -> loop: run_phase() -> update_ema()
-> maybe_update_ada() -> maybe_report() -> maybe_snapshot(). Every step is seeded from
(random_seed, rank, cur_nimg) and snapshots carry a `resume_state`, so a resumed run equals an
uninterrupted one.
"""

# The official signature's {} / [] defaults are kept (never mutated).
# ruff: noqa: B006

import copy
import hashlib
import json
import os
import pickle
import random
import time

import numpy as np
import PIL.Image
import torch

import dnnlib
from torch_utils import misc, training_stats
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
from training.dataset import ResumableSampler

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
    device = setup_device(opts)
    training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
    if rank == 0:
        print_dataset_summary(training_set)
    nets = setup_networks(opts, training_set, device)
    state = resume_networks(opts, nets) if resume_pkl is not None else None
    broadcast_networks(nets, num_gpus)
    loss, phases = setup_phases(opts, nets, device)
    progress = restore_training_state(state, opts, nets, loss, phases)
    data_iter = setup_data_iterator(opts, training_set, device, start=progress.cur_nimg // num_gpus)
    report = setup_reporting(opts, training_set, nets, device, progress)
    num_phases, z_dim = len(phases), nets.G.z_dim

    while True:
        set_random_seed(random_seed, rank, progress.cur_nimg)
        batch = fetch_batch(data_iter, training_set, opts, device, num_phases, z_dim)
        for phase, gen_z, gen_c in zip(phases, batch.gen_z, batch.gen_c):
            if progress.batch_idx % phase.interval == 0:
                run_phase(phase, loss, batch.real_img, batch.real_c, gen_z, gen_c, num_gpus)
        update_ema(nets, opts, progress.cur_nimg)
        progress.cur_nimg += batch_size
        progress.batch_idx += 1
        maybe_update_ada(nets.augment_pipe, loss, opts, progress.batch_idx)

        done = progress.cur_nimg >= total_kimg * 1000
        tick_end_nimg = progress.tick_start_nimg + kimg_per_tick * 1000
        if not done and progress.cur_tick != 0 and progress.cur_nimg < tick_end_nimg:
            continue
        done = maybe_report(report, opts, nets, progress, device) or done
        snapshot = maybe_snapshot(report, opts, nets, loss, phases, progress, done)
        maybe_evaluate_metrics(report, opts, snapshot, device)
        finish_tick(report, progress)
        if done:
            break

    if num_gpus > 1:
        report_rank_hashes(nets, rank)
    if rank == 0:
        print('\nExiting...')
    close_reporting(report)


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
    conv2d_gradfix.enabled = True  # Faster; also needed for R1/PL double backward with no_weight_gradients.
    grid_sample_gradfix.enabled = True  # Double backward through the augmentation pipe.
    if opts.batch_size % (opts.batch_gpu * opts.num_gpus) != 0:
        raise ValueError(f'batch_size {opts.batch_size} must be a multiple of batch_gpu * num_gpus')
    return device


def print_dataset_summary(training_set):
    print(f'Num images:  {len(training_set)}')
    print(f'Image shape: {training_set.image_shape}')
    print(f'Label shape: {training_set.label_shape}')
    if training_set.has_labels:
        print('Label counts:\n' + training_set.format_label_stats())
    print()


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
# Resume: copy what fits from the pickle and report what was re-initialised. Returns the pickle's
# `resume_state` when the run can continue exactly, else None (transfer learning from kimg 0).


def resume_networks(opts, nets):
    if opts.rank == 0:
        print(f'Resuming from "{opts.resume_pkl}"')
    with dnnlib.util.open_url(opts.resume_pkl) as f:
        resume_data = pickle.load(f)
    reinitialised = {}
    with torch.no_grad():
        for name in ('G', 'D', 'G_ema'):
            skipped = misc.copy_params_and_buffers(resume_data[name], nets[name], require_all=False)
            if skipped:
                reinitialised[name] = skipped
    if opts.rank == 0:
        for name, skipped in reinitialised.items():
            print(f'Re-initialised {len(skipped)} tensor(s) of {name} (missing or shape differs): {", ".join(skipped)}')
    state = resume_data.get('resume_state')
    if state is not None and reinitialised:
        if opts.rank == 0:
            print('Networks differ from the snapshot: starting at kimg 0 (transfer learning), not resuming exactly.')
        return None
    if state is not None and nets.augment_pipe is not None and resume_data.get('augment_pipe') is not None:
        with torch.no_grad():
            misc.copy_params_and_buffers(resume_data['augment_pipe'], nets.augment_pipe, require_all=False)
    return state


def broadcast_networks(nets, num_gpus):
    if num_gpus == 1:
        return
    for module in (nets.G, nets.D, nets.G_ema, nets.augment_pipe):
        if module is not None:
            for tensor in misc.params_and_buffers(module):
                torch.distributed.broadcast(tensor, src=0)


# ----------------------------------------------------------------------------
# Loss and training phases. Lazy regularisation rescales Adam's lr and betas (StyleGAN2 Appendix B).


def setup_phases(opts, nets, device):
    loss = dnnlib.util.construct_class_by_name(
        device=device, G_mapping=nets.G.mapping, G_synthesis=nets.G.synthesis, D=nets.D,
        augment_pipe=nets.augment_pipe, **opts.loss_kwargs,
    )  # fmt: skip
    phases = []
    for name, module, opt_kwargs, reg_interval in [
        ('G', nets.G, opts.G_opt_kwargs, opts.G_reg_interval),
        ('D', nets.D, opts.D_opt_kwargs, opts.D_reg_interval),
    ]:
        if reg_interval is None:
            opt = dnnlib.util.construct_class_by_name(params=module.parameters(), **opt_kwargs)
            phases += [dnnlib.EasyDict(name=name + 'both', module=module, opt=opt, interval=1)]
            continue
        mb_ratio = reg_interval / (reg_interval + 1)
        opt_kwargs = dnnlib.EasyDict(opt_kwargs)
        opt_kwargs.lr = opt_kwargs.lr * mb_ratio
        opt_kwargs.betas = [beta**mb_ratio for beta in opt_kwargs.betas]
        opt = dnnlib.util.construct_class_by_name(module.parameters(), **opt_kwargs)
        phases += [dnnlib.EasyDict(name=name + 'main', module=module, opt=opt, interval=1)]
        phases += [dnnlib.EasyDict(name=name + 'reg', module=module, opt=opt, interval=reg_interval)]
    return loss, phases


def restore_training_state(state, opts, nets, loss, phases):
    progress = dnnlib.EasyDict(cur_nimg=0, cur_tick=0, batch_idx=0, tick_start_nimg=0)
    if state is None:
        return progress
    progress.update(cur_nimg=state['cur_nimg'], cur_tick=state['cur_tick'], batch_idx=state['batch_idx'])
    progress.tick_start_nimg = state['cur_nimg']
    for phase in phases:
        phase.opt.load_state_dict(state['optimizers'][phase.name[0]])
    loss.load_state_dict(state['loss'])
    if opts.rank != 0:
        loss.real_sign_acc.zero_()  # Rank 0 holds the all-reduced pending ADA statistics.
    if nets.augment_pipe is not None and state.get('augment_p') is not None:
        nets.augment_pipe.p.copy_(torch.as_tensor(state['augment_p']))
    restore_rng_state(state.get('rng'))
    if opts.rank == 0:
        p = f', augment p {state["augment_p"]:.6f}' if state.get('augment_p') is not None else ''
        where = f'kimg {progress.cur_nimg / 1000:g} (tick {progress.cur_tick}, batch {progress.batch_idx}{p})'
        print(f'Continuing at {where}')
    return progress


def capture_rng_state():
    rng = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate())
    if torch.cuda.is_available():
        rng['cuda'] = torch.cuda.get_rng_state_all()
    return rng


def to_cpu(obj):
    """Copy of a nested dict/list/tuple with every tensor moved to the CPU (so snapshots load anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {key: to_cpu(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(value) for value in obj)
    return copy.deepcopy(obj)


def restore_rng_state(rng):
    if rng is None:
        return
    torch.set_rng_state(rng['torch'])
    np.random.set_state(rng['numpy'])
    random.setstate(rng['python'])
    if 'cuda' in rng and torch.cuda.is_available() and len(rng['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng['cuda'])


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


def fetch_batch(data_iter, training_set, opts, device, num_phases, z_dim):
    real_img, real_c = next(data_iter)
    real_img = (real_img.to(device).to(torch.float32) / 127.5 - 1).split(opts.batch_gpu)
    real_c = real_c.to(device).split(opts.batch_gpu)
    batch_rank = opts.batch_size // opts.num_gpus
    gen_z = torch.randn([num_phases, batch_rank, z_dim], device=device)
    gen_c = [training_set.get_label(np.random.randint(len(training_set))) for _ in range(num_phases * batch_rank)]
    gen_c = torch.from_numpy(np.stack(gen_c)).to(device).reshape(num_phases, batch_rank, training_set.label_dim)
    return dnnlib.EasyDict(
        real_img=real_img,
        real_c=real_c,
        gen_z=[z.split(opts.batch_gpu) for z in gen_z],
        gen_c=[c.split(opts.batch_gpu) for c in gen_c],
    )


# ----------------------------------------------------------------------------
# One phase: accumulate gradients over rounds, average them across ranks, take an optimizer step.


def run_phase(phase, loss, real_img, real_c, gen_z, gen_c, num_gpus):
    phase.opt.zero_grad(set_to_none=True)
    phase.module.requires_grad_(True)
    num_rounds = len(real_img)
    for round_idx, (r_img, r_c, g_z, g_c) in enumerate(zip(real_img, real_c, gen_z, gen_c)):
        sync = round_idx == num_rounds - 1
        loss.accumulate_gradients(
            phase=phase.name, real_img=r_img, real_c=r_c, gen_z=g_z, gen_c=g_c, sync=sync, gain=phase.interval
        )
    phase.module.requires_grad_(False)
    with torch.autograd.profiler.record_function(phase.name + '_opt'):
        params = [param for param in phase.module.parameters() if param.grad is not None]
        if params:
            flat = torch.cat([param.grad.flatten() for param in params]) / num_rounds
            if num_gpus > 1:
                torch.distributed.all_reduce(flat)
                flat /= num_gpus
            torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
            for param, grad in zip(params, flat.split([param.numel() for param in params])):
                param.grad = grad.reshape(param.shape)
        phase.opt.step()


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
# Reporting: grids at start, stats collectors, log lines, stats.jsonl and TensorBoard (rank 0 writes).


def setup_reporting(opts, training_set, nets, device, progress):
    report = dnnlib.EasyDict(start_time=time.time(), tick_start_time=time.time(), maintenance_time=0.0)
    report.stats_collector = training_stats.Collector(regex='.*')
    report.loss_collector = training_stats.Collector(regex=r'Loss/(G|D)/loss')
    report.stats_jsonl = report.stats_tfevents = report.grid = None
    report.dataset_info = dict(
        name=training_set.name, resolution=training_set.resolution, num_channels=training_set.num_channels,
        label_dim=training_set.label_dim, class_names=training_set.class_names, label_schema=training_set.label_schema,
    )  # fmt: skip
    if opts.rank == 0:
        report.grid = setup_snapshot_grid(opts, training_set, nets, device)
        report.stats_jsonl = open(os.path.join(opts.run_dir, 'stats.jsonl'), 'a')
        try:
            import torch.utils.tensorboard as tensorboard

            report.stats_tfevents = tensorboard.SummaryWriter(opts.run_dir)
        except ImportError as err:
            print('Skipping tfevents export:', err)
        print(f'Training for {opts.total_kimg:g} kimg from kimg {progress.cur_nimg / 1000:g}...\n')
    report.tick_start_time = time.time()
    report.maintenance_time = report.tick_start_time - report.start_time
    return report


def setup_snapshot_grid(opts, training_set, nets, device):
    gw = int(np.clip(3840 // training_set.image_shape[2], 4, 16))
    gh = int(np.clip(2160 // training_set.image_shape[1], 4, 16))
    indices = choose_grid_indices(training_set, gw, gh, opts.random_seed)
    images = np.stack([training_set[i][0] for i in indices])
    save_image_grid(images, os.path.join(opts.run_dir, 'reals.png'), drange=[0, 255], grid_size=(gw, gh))
    generator = torch.Generator().manual_seed(opts.random_seed)  # Leaves the global RNG untouched.
    grid_z = torch.randn([len(indices), nets.G.z_dim], generator=generator).to(device).split(opts.batch_gpu)
    grid_c = torch.from_numpy(np.stack([training_set.get_label(i) for i in indices])).to(device)
    grid = dnnlib.EasyDict(size=(gw, gh), z=grid_z, c=grid_c.split(opts.batch_gpu))
    save_image_grid(generate_grid(nets.G_ema, grid), os.path.join(opts.run_dir, 'fakes_init.png'), [-1, 1], grid.size)
    return grid


def choose_grid_indices(training_set, gw, gh, seed):
    """Random images; with labels, each row shows one label (cycling through the labels found)."""
    order = np.random.RandomState(seed).permutation(len(training_set))
    if not training_set.has_labels:
        return [int(order[i % len(order)]) for i in range(gw * gh)]
    groups = {}
    for idx in order:
        groups.setdefault(tuple(training_set.get_label(idx).tolist()), []).append(int(idx))
    keys = sorted(groups, reverse=True)
    indices = []
    for y in range(gh):
        group = groups[keys[y % len(keys)]]
        offset = (y // len(keys)) * gw
        indices += [group[(offset + x) % len(group)] for x in range(gw)]
    return indices


def generate_grid(G_ema, grid):
    with torch.no_grad():
        images = [G_ema(z=z, c=c, noise_mode='const').cpu() for z, c in zip(grid.z, grid.c)]
    return torch.cat(images).numpy()


def save_image_grid(img, fname, drange, grid_size):
    """Tile a [N, C, H, W] batch into a PNG (mode L for 1 channel, RGB for 3); written atomically."""
    lo, hi = drange
    img = (np.asarray(img, dtype=np.float32) - lo) * (255 / (hi - lo))
    img = np.rint(img).clip(0, 255).astype(np.uint8)
    gw, gh = grid_size
    _n, C, H, W = img.shape
    img = img.reshape(gh, gw, C, H, W).transpose(0, 3, 1, 4, 2).reshape(gh * H, gw * W, C)
    image = PIL.Image.fromarray(img[:, :, 0], 'L') if C == 1 else PIL.Image.fromarray(img, 'RGB')
    with dnnlib.util.atomic_write(fname, 'wb') as f:
        image.save(f, format='PNG')


def kimg_tag(cur_nimg, kimg_per_tick):
    """'000004' (official); with fractional ticks '000000.016' so short runs don't overwrite snapshots."""
    tag = f'{cur_nimg // 1000:06d}'
    if (kimg_per_tick * 1000) % 1000 != 0:
        tag += f'.{cur_nimg % 1000:03d}'
    return tag


def maybe_report(report, opts, nets, progress, device):
    """Print the tick's progress line; return True when abort_fn asks to stop."""
    tick_end_time = time.time()
    nimg = max(progress.cur_nimg - progress.tick_start_nimg, 1)
    p = float(nets.augment_pipe.p.cpu()) if nets.augment_pipe is not None else 0
    report.loss_collector.update()
    total_sec, tick_sec = tick_end_time - report.start_time, tick_end_time - report.tick_start_time
    fields = [
        f'tick {training_stats.report0("Progress/tick", progress.cur_tick):<5d}',
        f'kimg {training_stats.report0("Progress/kimg", progress.cur_nimg / 1e3):<8.3f}',
        f'time {dnnlib.util.format_time(training_stats.report0("Timing/total_sec", total_sec)):<12s}',
        f'sec/tick {training_stats.report0("Timing/sec_per_tick", tick_sec):<7.1f}',
        f'sec/kimg {training_stats.report0("Timing/sec_per_kimg", tick_sec / nimg * 1e3):<7.2f}',
        f'maintenance {training_stats.report0("Timing/maintenance_sec", report.maintenance_time):<6.1f}',
        f'cpumem {training_stats.report0("Resources/cpu_mem_gb", cpu_mem_gb()):<6.2f}',
        f'gpumem {training_stats.report0("Resources/peak_gpu_mem_gb", gpu_mem_gb(device)):<6.2f}',
        f'augment {training_stats.report0("Progress/augment", p):.3f}',
        f'G {report.loss_collector.mean("Loss/G/loss"):<7.3f}',
        f'D {report.loss_collector.mean("Loss/D/loss"):.3f}',
    ]  # fmt: skip
    training_stats.report0('Timing/total_hours', (tick_end_time - report.start_time) / 3600)
    if opts.rank == 0:
        print(' '.join(fields), flush=True)
    if opts.progress_fn is not None:
        opts.progress_fn(progress.cur_nimg // 1000, opts.total_kimg)
    report.tick_end_time = tick_end_time
    if opts.abort_fn is not None and opts.abort_fn():
        if opts.rank == 0:
            print('\nAborting...')
        return True
    return False


def cpu_mem_gb():
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**30
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def gpu_mem_gb(device):
    if device.type != 'cuda':
        return 0.0
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return peak


# ----------------------------------------------------------------------------
# Snapshots: image grid every image_snapshot_ticks, network pickle every network_snapshot_ticks.


def maybe_snapshot(report, opts, nets, loss, phases, progress, done):
    """Write due snapshots; return dict(data=..., pkl=...) for the metrics hook, or None."""
    tag = kimg_tag(progress.cur_nimg, opts.kimg_per_tick)
    due = lambda ticks: ticks is not None and (done or progress.cur_tick % ticks == 0)  # noqa: E731
    if opts.rank == 0 and due(opts.image_snapshot_ticks):
        images = generate_grid(nets.G_ema, report.grid)
        save_image_grid(images, os.path.join(opts.run_dir, f'fakes{tag}.png'), [-1, 1], report.grid.size)
    if not due(opts.network_snapshot_ticks):
        return None
    data = dict(training_set_kwargs=dict(opts.training_set_kwargs), dataset_info=report.dataset_info)
    for name in ('G', 'D', 'G_ema', 'augment_pipe'):
        module = nets[name]
        if module is not None:
            if opts.num_gpus > 1:
                misc.check_ddp_consistency(module, ignore_regex=r'.*\.w_avg')
            module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        data[name] = module
    data['resume_state'] = capture_resume_state(opts, loss, phases, progress, nets)
    snapshot_pkl = os.path.join(opts.run_dir, f'network-snapshot-{tag}.pkl')
    if opts.rank == 0:
        with dnnlib.util.atomic_write(snapshot_pkl, 'wb') as f:
            pickle.dump(data, f)
    return dict(data=data, pkl=snapshot_pkl)


def capture_resume_state(opts, loss, phases, progress, nets):
    """Everything beyond the official snapshot keys that an exact continuation needs."""
    loss_state = loss.state_dict()
    pending = loss.take_real_sign_stats()  # Consolidate pending ADA statistics on rank 0.
    if opts.num_gpus > 1:
        torch.distributed.all_reduce(pending)
    loss.real_sign_acc.copy_(pending if opts.rank == 0 else torch.zeros_like(pending))
    loss_state['real_sign_acc'] = pending.cpu()
    optimizers = {phase.name[0]: phase.opt.state_dict() for phase in phases}
    return dict(
        cur_nimg=progress.cur_nimg,
        cur_tick=progress.cur_tick + 1,  # The state after this tick closes.
        batch_idx=progress.batch_idx,
        sampler_position=progress.cur_nimg // opts.num_gpus,
        num_gpus=opts.num_gpus,
        batch_size=opts.batch_size,
        random_seed=opts.random_seed,
        augment_p=float(nets.augment_pipe.p.cpu()) if nets.augment_pipe is not None else None,
        optimizers=to_cpu(optimizers),
        loss=loss_state,
        rng=capture_rng_state(),
    )


# ----------------------------------------------------------------------------
# Metrics hook: names (metrics.metric_main, when present) or callables fn(G, **context) -> {name: value}.


def maybe_evaluate_metrics(report, opts, snapshot, device):
    if snapshot is None or not opts.metrics:
        return
    if opts.rank == 0:
        print('Evaluating metrics...')
    context = dict(
        run_dir=opts.run_dir, snapshot_pkl=snapshot['pkl'], training_set_kwargs=opts.training_set_kwargs,
        num_gpus=opts.num_gpus, rank=opts.rank, device=device,
    )  # fmt: skip
    for metric in opts.metrics:
        if callable(metric):
            name, results = getattr(metric, '__name__', 'metric'), metric(snapshot['data']['G_ema'], **context)
        else:
            name, results = metric, _run_named_metric(metric, snapshot['data']['G_ema'], context)
        results = results if isinstance(results, dict) else {name: float(results)}
        for key, value in results.items():
            training_stats.report0(f'Metrics/{key}', value)
        if opts.rank == 0:
            snapshot_pkl = os.path.basename(snapshot['pkl'])
            line = dict(results=results, metric=name, snapshot_pkl=snapshot_pkl, timestamp=time.time())
            print(json.dumps(line))
            with open(os.path.join(opts.run_dir, f'metric-{name}.jsonl'), 'a') as f:
                f.write(json.dumps(line) + '\n')


def _run_named_metric(name, G, context):
    from metrics import metric_main  # Upper layer, imported lazily and only when a name is given.

    result = metric_main.calc_metric(
        metric=name, G=G, dataset_kwargs=context['training_set_kwargs'], num_gpus=context['num_gpus'],
        rank=context['rank'], device=context['device'],
    )  # fmt: skip
    return dict(result.results)


# ----------------------------------------------------------------------------
# End of tick: collect stats, write stats.jsonl and TensorBoard, start the next tick.


def finish_tick(report, progress):
    report.stats_collector.update()
    stats_dict = report.stats_collector.as_dict()
    timestamp = time.time()
    if report.stats_jsonl is not None:
        report.stats_jsonl.write(json.dumps(dict(stats_dict, timestamp=timestamp)) + '\n')
        report.stats_jsonl.flush()
    if report.stats_tfevents is not None:
        global_step = int(progress.cur_nimg / 1e3)
        for name, value in stats_dict.items():
            walltime = timestamp - report.start_time
            report.stats_tfevents.add_scalar(name, value.mean, global_step=global_step, walltime=walltime)
        report.stats_tfevents.flush()
    progress.cur_tick += 1
    progress.tick_start_nimg = progress.cur_nimg
    report.tick_start_time = time.time()
    report.maintenance_time = report.tick_start_time - report.tick_end_time


def close_reporting(report):
    if report.stats_jsonl is not None:
        report.stats_jsonl.close()
    if report.stats_tfevents is not None:
        report.stats_tfevents.close()


# ----------------------------------------------------------------------------
# Multi-process check: rank 0 prints every rank's hash of G/D parameters (they must be identical).


def report_rank_hashes(nets, rank):
    digests = {}
    for name in ('G', 'D', 'G_ema'):
        sha = hashlib.sha256()
        for param in nets[name].parameters():
            sha.update(param.detach().cpu().numpy().tobytes())
        digests[name] = sha.hexdigest()[:16]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, digests)
    if rank == 0:
        for name in digests:
            hashes = [d[name] for d in gathered]
            verdict = 'identical' if len(set(hashes)) == 1 else 'MISMATCH'
            print(f'Rank parameter hashes {name}: {" ".join(hashes)} ({verdict})')


# ----------------------------------------------------------------------------
