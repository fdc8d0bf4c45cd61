"""Train a StyleGAN2-ADA generator (flags and presets as in stylegan2-ada-pytorch, plus --device and --tick).

Examples:
    python train.py --outdir=runs --data=phantom.zip --cfg=cpu --kimg=0.1            # smoke run on a CPU
    python train.py --outdir=runs --data=spine.zip --cond=1 --mirror=1 --gpus=2      # 2 processes
    torchrun --nnodes=2 --nproc-per-node=8 ... train.py --outdir=runs --data=...     # multi-node
"""

import json
import os
import pickle
import sys
import tempfile

import click
import torch

import dnnlib
from training.augment import augpipe_specs

# ----------------------------------------------------------------------------
# Presets (cfg_specs of stylegan2-ada-pytorch with the keys spelled out). -1 = derived from the data
# (see resolve_auto_preset). `cpu` trains usefully at 32-64 px on a CPU.

# fmt: off
CONFIG_PRESETS = {
    'auto': dict(
        ref_gpus=-1, kimg=25000,  batch=-1, mbstd_group=-1, channel_base=-1,    channel_max=512, map_layers=2,
        lr=-1,     gamma=-1,   ema_kimg=-1,  ema_rampup=0.05, pl_weight=2, style_mixing=0.9, d_architecture='resnet',
    ),
    'stylegan2': dict(
        ref_gpus=8,  kimg=25000,  batch=32, mbstd_group=4,  channel_base=32768, channel_max=512, map_layers=8,
        lr=0.002,  gamma=10,   ema_kimg=10,  ema_rampup=None, pl_weight=2, style_mixing=0.9, d_architecture='resnet',
    ),
    'paper256': dict(
        ref_gpus=8,  kimg=25000,  batch=64, mbstd_group=8,  channel_base=16384, channel_max=512, map_layers=8,
        lr=0.0025, gamma=1,    ema_kimg=20,  ema_rampup=None, pl_weight=2, style_mixing=0.9, d_architecture='resnet',
    ),
    'paper512': dict(
        ref_gpus=8,  kimg=25000,  batch=64, mbstd_group=8,  channel_base=32768, channel_max=512, map_layers=8,
        lr=0.0025, gamma=0.5,  ema_kimg=20,  ema_rampup=None, pl_weight=2, style_mixing=0.9, d_architecture='resnet',
    ),
    'paper1024': dict(
        ref_gpus=8,  kimg=25000,  batch=32, mbstd_group=4,  channel_base=32768, channel_max=512, map_layers=8,
        lr=0.002,  gamma=2,    ema_kimg=10,  ema_rampup=None, pl_weight=2, style_mixing=0.9, d_architecture='resnet',
    ),
    'cifar': dict(
        ref_gpus=2,  kimg=100000, batch=64, mbstd_group=32, channel_base=32768, channel_max=512, map_layers=2,
        lr=0.0025, gamma=0.01, ema_kimg=500, ema_rampup=0.05, pl_weight=0, style_mixing=0,   d_architecture='orig',
    ),
    'cpu': dict(
        ref_gpus=1,  kimg=500,    batch=16, mbstd_group=4,  channel_base=4096,  channel_max=128, map_layers=2,
        lr=0.0025, gamma=-1,   ema_kimg=5,   ema_rampup=0.05, pl_weight=2, style_mixing=0.9, d_architecture='resnet',
    ),
}
# fmt: on

# ----------------------------------------------------------------------------
# Fill the data-dependent (-1) entries of a preset (rules of stylegan2-ada-pytorch's `auto`).


def resolve_auto_preset(spec, resolution, gpus):
    spec = dnnlib.EasyDict(spec)
    if spec.ref_gpus < 0:
        spec.ref_gpus = gpus
    if spec.batch < 0:
        spec.batch = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    if spec.mbstd_group < 0:
        spec.mbstd_group = min(spec.batch // gpus, 4)
    if spec.channel_base < 0:
        spec.channel_base = 32768 if resolution >= 512 else 16384
    if spec.lr < 0:
        spec.lr = 0.002 if resolution >= 1024 else 0.0025
    if spec.gamma < 0:
        spec.gamma = 0.0002 * (resolution**2) / spec.batch
    if spec.ema_kimg < 0:
        spec.ema_kimg = spec.batch * 10 / 32
    return spec


# ----------------------------------------------------------------------------
# Dataset: open it once to validate flags and to learn resolution / labels.


def setup_training_set_kwargs(data, cond, subset, mirror, seed):
    if not os.path.exists(data):
        raise click.BadParameter(f'{data}: no such file or directory', param_hint='--data')
    kwargs = dnnlib.EasyDict(
        class_name='training.dataset.ImageFolderDataset', path=data, use_labels=bool(cond), max_size=None, xflip=False
    )
    try:
        training_set = dnnlib.util.construct_class_by_name(**kwargs)
        has_labels = training_set.has_labels
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--cond' if 'label' in str(err) else '--data') from None
    if cond and not has_labels:
        raise click.BadParameter('needs labels in dataset.json', param_hint='--cond')
    kwargs.update(resolution=training_set.resolution, max_size=len(training_set))
    if subset is not None:
        if not 1 <= subset <= len(training_set):
            raise click.BadParameter(f'must be between 1 and {len(training_set)}', param_hint='--subset')
        if subset < len(training_set):
            kwargs.update(max_size=subset, random_seed=seed)
    kwargs.xflip = bool(mirror)
    return kwargs, training_set.name


# ----------------------------------------------------------------------------
# Turn command-line options into one EasyDict `c` of *_kwargs for training_loop(), plus a run description.


def build_config(opts):
    c = dnnlib.EasyDict(num_gpus=opts.gpus, random_seed=opts.seed, device=opts.device)
    c.image_snapshot_ticks = c.network_snapshot_ticks = opts.snap
    c.metrics = parse_metrics(opts.metrics)
    c.training_set_kwargs, desc = setup_training_set_kwargs(opts.data, opts.cond, opts.subset, opts.mirror, opts.seed)
    desc += ('-cond' if opts.cond else '') + (f'-subset{opts.subset}' if opts.subset else '')
    desc += '-mirror' if opts.mirror else ''
    c.data_loader_kwargs = dnnlib.EasyDict(
        pin_memory=True, num_workers=min(opts.workers, os.cpu_count() or 1), prefetch_factor=2
    )

    res = c.training_set_kwargs.resolution
    spec = resolve_auto_preset(CONFIG_PRESETS[opts.cfg], res, opts.gpus)
    desc += f'-{opts.cfg}' + (f'{opts.gpus:d}' if opts.cfg == 'auto' else '')
    for key in ('channel_base', 'channel_max', 'map_layers'):
        if opts[key] is not None:
            spec[key] = opts[key]
            desc += f'-{key.replace("_", "")}{opts[key]}'
    setup_network_kwargs(c, spec)
    c.total_kimg = spec.kimg
    c.batch_size = spec.batch
    c.batch_gpu = spec.batch // spec.ref_gpus
    c.ema_kimg = spec.ema_kimg
    c.ema_rampup = spec.ema_rampup
    c.kimg_per_tick = opts.tick
    if opts.gamma is not None:
        c.loss_kwargs.r1_gamma = opts.gamma
        desc += f'-gamma{opts.gamma:g}'
    if opts.kimg is not None:
        c.total_kimg = opts.kimg
        desc += f'-kimg{opts.kimg:g}'
    if opts.batch is not None:
        c.batch_size = opts.batch
        desc += f'-batch{opts.batch}'
    if c.batch_size % opts.gpus != 0:
        raise click.BadParameter(
            f'{c.batch_size} must be divisible by --gpus ({opts.gpus} ranks)', param_hint='--batch'
        )
    fit_batch_per_gpu(c, spec.mbstd_group)

    desc += setup_augmentation(c, opts)
    desc += setup_resume(c, opts)
    if opts.freezed is not None:
        c.D_kwargs.block_kwargs.freeze_layers = opts.freezed
        desc += f'-freezed{opts.freezed:d}'
    if opts.fp32:
        c.G_kwargs.synthesis_kwargs.num_fp16_res = c.D_kwargs.num_fp16_res = 0
        c.G_kwargs.synthesis_kwargs.conv_clamp = c.D_kwargs.conv_clamp = None
        desc += '-fp32'
    if opts.nhwc:
        c.G_kwargs.synthesis_kwargs.fp16_channels_last = c.D_kwargs.block_kwargs.fp16_channels_last = True
        desc += '-nhwc'
    c.cudnn_benchmark = not opts.nobench
    desc += '-nobench' if opts.nobench else ''
    c.allow_tf32 = bool(opts.allow_tf32)
    desc += '-tf32' if opts.allow_tf32 else ''
    return c, desc


def setup_network_kwargs(c, spec):
    c.G_kwargs = dnnlib.EasyDict(
        class_name='training.networks.Generator', z_dim=512, w_dim=512,
        mapping_kwargs=dnnlib.EasyDict(num_layers=spec.map_layers), synthesis_kwargs=dnnlib.EasyDict(),
    )  # fmt: skip
    c.D_kwargs = dnnlib.EasyDict(
        class_name='training.networks.Discriminator', architecture=spec.d_architecture,
        block_kwargs=dnnlib.EasyDict(), mapping_kwargs=dnnlib.EasyDict(), epilogue_kwargs=dnnlib.EasyDict(),
    )  # fmt: skip
    for kwargs in (c.G_kwargs.synthesis_kwargs, c.D_kwargs):
        kwargs.update(channel_base=spec.channel_base, channel_max=spec.channel_max, num_fp16_res=4, conv_clamp=256)
    c.G_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=spec.lr, betas=[0.0, 0.99], eps=1e-8)
    c.D_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=spec.lr, betas=[0.0, 0.99], eps=1e-8)
    c.loss_kwargs = dnnlib.EasyDict(
        class_name='training.loss.StyleGAN2Loss', r1_gamma=spec.gamma, pl_weight=spec.pl_weight,
        style_mixing_prob=spec.style_mixing,
    )  # fmt: skip


def fit_batch_per_gpu(c, mbstd_group):
    # Per-process batch must divide the per-process share; the minibatch-std group must divide it too.
    per_gpu = c.batch_size // c.num_gpus
    c.batch_gpu = max(1, min(c.batch_gpu, per_gpu))
    while per_gpu % c.batch_gpu != 0:
        c.batch_gpu -= 1
    group = max(1, min(mbstd_group, c.batch_gpu))
    while c.batch_gpu % group != 0:
        group -= 1
    c.D_kwargs.epilogue_kwargs.mbstd_group_size = group


def parse_metrics(metrics):
    names = [] if metrics.lower() == 'none' else [name for name in metrics.split(',') if name]
    if not names:
        return []
    try:
        from metrics import metric_main
    except ImportError:
        raise click.BadParameter(
            'no metrics module in this build; use --metrics=none', param_hint='--metrics'
        ) from None
    invalid = [name for name in names if not metric_main.is_valid_metric(name)]
    if invalid:
        raise click.BadParameter(f'unknown metric(s) {", ".join(invalid)}', param_hint='--metrics')
    return names


def setup_augmentation(c, opts):
    desc = f'-{opts.aug}' if opts.aug is not None else ''
    aug = opts.aug or 'ada'
    if aug == 'fixed' and opts.p is None:
        raise click.BadParameter('--aug=fixed requires --p', param_hint='--aug')
    if opts.p is not None:
        if aug != 'fixed':
            raise click.BadParameter('can only be used with --aug=fixed', param_hint='--p')
        c.augment_p = opts.p
        desc += f'-p{opts.p:g}'
    if aug == 'ada':
        c.ada_target = 0.6 if opts.target is None else opts.target
        c.ada_kimg = opts.ada_kimg
    if opts.target is not None:
        if aug != 'ada':
            raise click.BadParameter('can only be used with --aug=ada', param_hint='--target')
        desc += f'-target{opts.target:g}'
    if aug == 'noaug':
        if opts.augpipe is not None:
            raise click.BadParameter('cannot be used with --aug=noaug', param_hint='--augpipe')
        return desc
    desc += f'-{opts.augpipe}' if opts.augpipe is not None else ''
    c.augment_kwargs = dnnlib.EasyDict(
        class_name='training.augment.AugmentPipe', **augpipe_specs[opts.augpipe or 'bgc']
    )
    return desc


def setup_resume(c, opts):
    if opts.resume is None or opts.resume == 'noresume':
        return ''
    is_url = dnnlib.util.is_url(opts.resume)
    if not is_url and not os.path.isfile(opts.resume):
        raise click.BadParameter(f'{opts.resume}: no such file', param_hint='--resume')
    c.resume_pkl = opts.resume
    if is_url or not snapshot_has_resume_state(opts.resume):
        c.ada_kimg = 100  # Transfer learning (official): react faster and skip the EMA ramp-up.
        c.ema_rampup = None
    return '-resumecustom'


def snapshot_has_resume_state(path):
    try:
        with open(path, 'rb') as f:
            return 'resume_state' in pickle.load(f)
    except Exception as err:
        raise click.BadParameter(
            f'{path}: cannot read snapshot ({type(err).__name__}: {err})', param_hint='--resume'
        ) from None


# ----------------------------------------------------------------------------
# Processes: one (direct), N spawned ranks (--gpus N), or ranks started by torchrun (env://).


class _Tee:
    """Writes to a console stream and to an append-mode log file."""

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


def subprocess_fn(rank, c, temp_dir, local_rank=None, initialised=False):
    local_rank = rank if local_rank is None else local_rank
    saved_streams = sys.stdout, sys.stderr
    if rank == 0:
        log = open(os.path.join(c.run_dir, 'log.txt'), 'a')
        sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
    try:
        run_rank(rank, local_rank, c, temp_dir, initialised)
    finally:
        if rank == 0:
            sys.stdout, sys.stderr = saved_streams
            log.close()


def run_rank(rank, local_rank, c, temp_dir, initialised):
    from torch_utils import training_stats
    from training import training_loop

    is_cuda = c.device == 'cuda'
    if c.num_gpus > 1 and not initialised:
        init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
        torch.distributed.init_process_group(
            backend='nccl' if is_cuda else 'gloo', init_method=f'file://{init_file}', rank=rank, world_size=c.num_gpus
        )
    if c.num_gpus > 1 and not is_cuda:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // c.num_gpus))
    device = torch.device('cuda', local_rank) if is_cuda else torch.device('cpu')
    if c.num_gpus > 1:
        training_stats.init_multiprocessing(rank=rank, sync_device=device)
    training_loop.training_loop(rank=rank, **dict(c, device=device))
    if c.num_gpus > 1:
        torch.distributed.barrier()  # A rank that tears down while a peer still talks to it aborts (gloo).
        torch.distributed.destroy_process_group()


def torchrun_world_size():
    """WORLD_SIZE when this process was started by torchrun (env:// rendezvous), else None."""
    if os.environ.get('WORLD_SIZE') is None or os.environ.get('LOCAL_RANK') is None:
        return None
    return int(os.environ['WORLD_SIZE'])


def launch_training(c, desc, outdir, dry_run):
    if torchrun_world_size() is not None:
        return launch_torchrun(c, desc, outdir, dry_run)
    c.run_dir = dnnlib.util.next_run_dir(outdir, desc)
    print_options(c, dry_run)
    if dry_run:
        return
    write_options(c)
    if c.num_gpus == 1:
        subprocess_fn(rank=0, c=c, temp_dir=None)
        return
    print('Launching processes...')
    with tempfile.TemporaryDirectory() as temp_dir:
        torch.multiprocessing.spawn(fn=subprocess_fn, args=(c, temp_dir), nprocs=c.num_gpus)


def launch_torchrun(c, desc, outdir, dry_run):
    rank, local_rank = int(os.environ['RANK']), int(os.environ['LOCAL_RANK'])
    backend = 'nccl' if c.device == 'cuda' else 'gloo'
    if c.device == 'cuda':
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group(backend=backend, init_method='env://')
    run_dir = [dnnlib.util.next_run_dir(outdir, desc) if rank == 0 else None]
    torch.distributed.broadcast_object_list(run_dir, src=0)
    c.run_dir = run_dir[0]
    if rank == 0:
        print_options(c, dry_run)
        if not dry_run:
            write_options(c)
    torch.distributed.barrier()
    if not dry_run:
        subprocess_fn(rank, c, temp_dir=None, local_rank=local_rank, initialised=True)


def print_options(c, dry_run):
    print()
    print('Training options:')
    print(json.dumps(c, indent=2))
    print()
    print(f'Output directory:   {c.run_dir}')
    print(f'Training data:      {c.training_set_kwargs.path}')
    print(f'Training duration:  {c.total_kimg:g} kimg')
    print(f'Number of ranks:    {c.num_gpus} ({c.device})')
    print(f'Number of images:   {c.training_set_kwargs.max_size}')
    print(f'Image resolution:   {c.training_set_kwargs.resolution}')
    print(f'Conditional model:  {c.training_set_kwargs.use_labels}')
    print(f'Dataset x-flips:    {c.training_set_kwargs.xflip}')
    print()
    if dry_run:
        print('Dry run; exiting.')


def write_options(c):
    print('Creating output directory...')
    os.makedirs(c.run_dir, exist_ok=False)
    with dnnlib.util.atomic_write(os.path.join(c.run_dir, 'training_options.json'), 'w') as f:
        json.dump(c, f, indent=2)


# ----------------------------------------------------------------------------
# Command line.


def resolve_device(device, gpus):
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda':
        if not torch.cuda.is_available():
            raise click.BadParameter('CUDA is not available on this machine', param_hint='--device')
        if torchrun_world_size() is None and gpus > torch.cuda.device_count():
            raise click.BadParameter(f'only {torch.cuda.device_count()} CUDA device(s) available', param_hint='--gpus')
    return device


@click.command(context_settings=dict(max_content_width=120))
# General options.
@click.option('--outdir', help='Where to save the results', metavar='DIR', type=str, required=True)
@click.option(
    '--gpus',
    help='Number of processes (GPUs, or CPU ranks with gloo); power of two',
    metavar='INT',
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
)
@click.option(
    '--device', help='Device kind', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True
)
@click.option(
    '--snap',
    help='Snapshot interval in ticks',
    metavar='INT',
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
)
@click.option(
    '--tick',
    help='Progress interval in kimg (may be fractional)',
    metavar='KIMG',
    type=click.FloatRange(min=0, min_open=True),
    default=4,
    show_default=True,
)
@click.option(
    '--metrics',
    help='Comma-separated metric names or "none"',
    metavar='LIST',
    type=str,
    default='none',
    show_default=True,
)
@click.option('--seed', help='Random seed', metavar='INT', type=click.IntRange(min=0), default=0, show_default=True)
@click.option('-n', '--dry-run', help='Print training options and exit', is_flag=True)
# Dataset.
@click.option('--data', help='Training data (directory or zip)', metavar='PATH', type=str, required=True)
@click.option(
    '--cond',
    help='Train conditional model based on dataset labels',
    metavar='BOOL',
    type=bool,
    default=False,
    show_default=True,
)
@click.option('--subset', help='Train with only N images', metavar='INT', type=click.IntRange(min=1))
@click.option('--mirror', help='Enable dataset x-flips', metavar='BOOL', type=bool, default=False, show_default=True)
# Base config.
@click.option('--cfg', help='Base config', type=click.Choice(list(CONFIG_PRESETS)), default='auto', show_default=True)
@click.option('--gamma', help='Override R1 gamma', metavar='FLOAT', type=click.FloatRange(min=0))
@click.option(
    '--kimg',
    help='Override training duration in kimg (may be fractional)',
    metavar='KIMG',
    type=click.FloatRange(min=0, min_open=True),
)
@click.option('--batch', help='Override batch size', metavar='INT', type=click.IntRange(min=1))
@click.option('--channel-base', help='Override channel base (capacity)', metavar='INT', type=click.IntRange(min=1))
@click.option('--channel-max', help='Override max channels per layer', metavar='INT', type=click.IntRange(min=1))
@click.option('--map-layers', help='Override mapping network depth', metavar='INT', type=click.IntRange(min=1))
# Discriminator augmentation.
@click.option('--aug', help='Augmentation mode [default: ada]', type=click.Choice(['noaug', 'ada', 'fixed']))
@click.option('--p', help='Augmentation probability for --aug=fixed', metavar='FLOAT', type=click.FloatRange(0, 1))
@click.option(
    '--target', help='ADA target value for --aug=ada [default: 0.6]', metavar='FLOAT', type=click.FloatRange(0, 1)
)
@click.option(
    '--ada-kimg',
    help='ADA speed: kimg for p to go 0 -> 1',
    metavar='KIMG',
    type=click.FloatRange(min=0, min_open=True),
    default=500,
    show_default=True,
)
@click.option('--augpipe', help='Augmentation pipeline [default: bgc]', type=click.Choice(list(augpipe_specs)))
# Transfer learning.
@click.option(
    '--resume',
    help='Resume from network pickle (exactly, if it is one of our snapshots)',
    metavar='PKL',
    type=str,
    default='noresume',
    show_default=True,
)
@click.option('--freezed', help='Freeze-D: number of frozen layers', metavar='INT', type=click.IntRange(min=0))
# Performance options.
@click.option(
    '--fp32', help='Disable mixed-precision training', metavar='BOOL', type=bool, default=False, show_default=True
)
@click.option(
    '--nhwc', help='Use NHWC memory format with FP16', metavar='BOOL', type=bool, default=False, show_default=True
)
@click.option(
    '--nobench', help='Disable cuDNN benchmarking', metavar='BOOL', type=bool, default=False, show_default=True
)
@click.option(
    '--allow-tf32',
    help='Allow PyTorch to use TF32 internally',
    metavar='BOOL',
    type=bool,
    default=False,
    show_default=True,
)
@click.option(
    '--workers',
    help='Override number of DataLoader workers',
    metavar='INT',
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
)
def main(**opts):
    """Train a GAN using the techniques described in "Training Generative Adversarial Networks with Limited
    Data" (Karras et al. 2020), on CPU or CUDA, in one or many processes.

    \b
    Example (CPU smoke run, ~1 minute):
    python train.py --outdir=runs --data=phantom.zip --cfg=cpu --kimg=0.1 --tick=0.05
    """
    opts = dnnlib.EasyDict(opts)
    if torchrun_world_size() is not None:
        opts.gpus = torchrun_world_size()  # Ranks of every node; --gpus is ignored under torchrun.
    elif opts.gpus & (opts.gpus - 1) != 0:
        raise click.BadParameter('must be a power of two', param_hint='--gpus')
    opts.device = resolve_device(opts.device, opts.gpus)
    c, desc = build_config(opts)
    launch_training(c, desc, opts.outdir, opts.dry_run)


# ----------------------------------------------------------------------------

if __name__ == '__main__':
    main()

# ----------------------------------------------------------------------------
