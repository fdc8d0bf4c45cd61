"""Progress reporting for the training loop: tick lines, stats.jsonl, TensorBoard, image grids, metrics.

All state lives in one EasyDict `report` (timers, stats collectors, open files, the fixed grid latents);
rank 0 prints and writes, every rank feeds training_stats.
"""

import hashlib
import json
import os
import time

import numpy as np
import PIL.Image
import torch

import dnnlib
from torch_utils import training_stats

# ----------------------------------------------------------------------------
# Start of training: dataset summary, stats collectors, output files and the reals / initial fakes grids.


def print_dataset_summary(training_set, policy):
    print(f'Num images:  {len(training_set)}')
    print(f'Image shape: {training_set.image_shape}')
    print(f'Label shape: {training_set.label_shape}')
    if training_set.has_labels:
        print('Label counts:\n' + policy.label_summary(training_set))
    print()


def setup_reporting(opts, training_set, policy, nets, device, progress):
    report = dnnlib.EasyDict(start_time=time.time(), tick_start_time=time.time(), maintenance_time=0.0)
    report.stats_collector = training_stats.Collector(regex='.*')
    report.loss_collector = training_stats.Collector(regex=r'Loss/(G|D)/loss|Loss/D/fake|Privacy/epsilon')
    report.guard_collector = training_stats.Collector(regex=r'Loss/(G|D)/.*')
    report.stats_jsonl = report.stats_tfevents = report.grid = None
    report.metrics = build_metrics(opts.metrics)
    if opts.rank == 0:
        report.grid = setup_snapshot_grid(opts, training_set, policy, nets, device)
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


# ----------------------------------------------------------------------------
# Image grids: fixed reals and latents (own RNGs, so the training stream is untouched), fakes from G_ema.


def setup_snapshot_grid(opts, training_set, policy, nets, device):
    gw = int(np.clip(3840 // training_set.image_shape[2], 4, 16))
    gh = int(np.clip(2160 // training_set.image_shape[1], 4, 16))
    indices = choose_grid_indices(training_set, gw, gh, opts.random_seed) if policy.writes_reals_grid else [0] * gw * gh
    if policy.writes_reals_grid:
        images = np.stack([training_set[i][0] for i in indices])
        save_image_grid(images, os.path.join(opts.run_dir, 'reals.png'), drange=[0, 255], grid_size=(gw, gh))
    generator = torch.Generator().manual_seed(opts.random_seed)
    grid_z = torch.randn([len(indices), nets.G.z_dim], generator=generator).to(device).split(opts.batch_gpu)
    grid_c = torch.from_numpy(policy.grid_labels(training_set, indices)).to(device)
    grid = dnnlib.EasyDict(size=(gw, gh), z=grid_z, c=grid_c.split(opts.batch_gpu))
    save_fakes(grid, nets.G_ema, os.path.join(opts.run_dir, 'fakes_init.png'))
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


def save_fakes(grid, G_ema, fname):
    with torch.no_grad():
        images = [G_ema(z=z, c=c, noise_mode='const').cpu() for z, c in zip(grid.z, grid.c)]
    save_image_grid(torch.cat(images).numpy(), fname, drange=[-1, 1], grid_size=grid.size)


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


# ----------------------------------------------------------------------------
# End of a tick: the progress line (also reported as Progress/*, Timing/*, Resources/* statistics).


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
    ]  # fmt: skip
    fields += private_fields(report.loss_collector)
    training_stats.report0('Timing/total_hours', total_sec / 3600)
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


def private_fields(collector):
    """D's loss, or under DP-SGD its fake half (the real half reads private data) and the epsilon spent."""
    if collector.num('Loss/D/loss') or not collector.num('Loss/D/fake'):
        return [f'D {collector.mean("Loss/D/loss"):.3f}']
    epsilon = collector.mean('Privacy/epsilon') if collector.num('Privacy/epsilon') else float('inf')  # Not DP.
    return [f'D(fake) {collector.mean("Loss/D/fake"):.3f}', f'epsilon {epsilon:.3f}']


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
# Guard: a tick whose losses or weights are not finite stops the run before it writes a snapshot, so the
# last snapshot on disk is the last good one.


def loss_phase(stat_name):
    """'Loss/G/reg' -> 'Greg', 'Loss/D/loss' -> 'Dmain', 'Loss/G/clinical' -> 'Gmain', ..."""
    net = stat_name.split('/')[1]
    return net + ('reg' if stat_name.endswith('/reg') else 'main')


class NonFiniteError(dnnlib.UserError):  # Not the user's fault, but a one-line stop with no traceback.
    pass


def check_finite(report, nets, progress):
    report.guard_collector.update()
    stats = report.guard_collector
    bad_stats = sorted(name for name in stats.names() if stats.num(name) and not np.isfinite(stats.mean(name)))
    phases = sorted({loss_phase(name) for name in bad_stats})
    bad = [f'{phase} ({", ".join(n for n in bad_stats if loss_phase(n) == phase)})' for phase in phases]
    for net in ('G', 'D'):
        bad += [f'{net} weight {name}' for name, p in nets[net].named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteError(
            f'non-finite values in tick {progress.cur_tick} (kimg {progress.cur_nimg / 1000:g}): {", ".join(bad[:4])}; '
            f'stopped before writing a snapshot, so the last one is the last good one (--nonfinite-guard=0 goes on)'
        )


# ----------------------------------------------------------------------------
# Metrics hook: callables fn(G, **context) -> {name: value} ({} = skipped) or a value, or class_name dicts that
# build one (the CLI layer resolves metric names; this layer never imports metrics/).


def maybe_evaluate_metrics(report, opts, snapshot, device):
    if snapshot is None or not opts.metrics:
        return
    if opts.rank == 0:
        print('Evaluating metrics...')
    context = dict(
        run_dir=opts.run_dir, snapshot_pkl=snapshot['pkl'], training_set_kwargs=opts.training_set_kwargs,
        num_gpus=opts.num_gpus, rank=opts.rank, device=device,
    )  # fmt: skip
    for metric in report.metrics:
        name = getattr(metric, 'name', getattr(metric, '__name__', 'metric'))
        results = metric(snapshot['data']['G_ema'], **context)
        results = results if isinstance(results, dict) else {name: float(results)}
        if not results:  # The metric skipped this snapshot (e.g. its feature network is missing: it warned).
            continue
        for key, value in results.items():
            if isinstance(value, (int, float)):  # Numbers go to the tick log; descriptions only to the JSON line.
                training_stats.report0(f'Metrics/{key}', value)
        if opts.rank == 0:
            snapshot_pkl = os.path.basename(snapshot['pkl'])
            line = dict(results=results, metric=name, snapshot_pkl=snapshot_pkl, timestamp=time.time())
            if opts.is_private:  # Asked for under DP: these read real training images outside DP-SGD.
                line['private'] = False
            print(json.dumps(line))
            with open(os.path.join(opts.run_dir, f'metric-{name}.jsonl'), 'a') as f:
                f.write(json.dumps(line) + '\n')


def build_metrics(metrics):
    built = [dnnlib.util.construct_class_by_name(**m) if isinstance(m, dict) else m for m in metrics]
    for metric in built:
        if not callable(metric):
            raise TypeError(f'metric {metric!r} is neither callable nor a class_name dict that builds one')
    return built


# ----------------------------------------------------------------------------
# After the tick's snapshots: collect stats, write stats.jsonl and TensorBoard, restart the tick timers.


def finish_tick(report, cur_nimg):
    report.stats_collector.update()
    stats_dict = report.stats_collector.as_dict()
    timestamp = time.time()
    if report.stats_jsonl is not None:
        report.stats_jsonl.write(json.dumps(dict(stats_dict, timestamp=timestamp)) + '\n')
        report.stats_jsonl.flush()
    if report.stats_tfevents is not None:
        global_step = int(cur_nimg / 1e3)
        for name, value in stats_dict.items():
            walltime = timestamp - report.start_time
            report.stats_tfevents.add_scalar(name, value.mean, global_step=global_step, walltime=walltime)
        report.stats_tfevents.flush()
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
