"""Train a StyleGAN2-ADA generator (flags and presets as in stylegan2-ada-pytorch, plus --device and --tick).

A thin click wrapper: training/config.py turns the options into a config (presets fill what is unset) and
training/launch.py runs it; study.py and tests call those two directly.

Examples:
    python train.py --outdir=runs --data=phantom.zip --cfg=cpu --kimg=0.1            # smoke run on a CPU
    python train.py --outdir=runs --data=spine.zip --cond=1 --mirror=1 --gpus=2      # 2 processes
    python train.py --outdir=runs --data=spine.zip --cond=1 --cond-sampling=balanced \
        --clinical-loss=classifier.pkl --clinical-weight=0.1                           # clinical loss
    python train.py --outdir=runs --data=spine.zip --cond=1 --dp=1 --dp-epsilon=10 --cfg=cpu   # DP-SGD
    torchrun --nnodes=2 --nproc-per-node=8 ... train.py --outdir=runs --data=...     # multi-node
"""

import os

import click

import dnnlib
from cli_utils import finite_float, user_errors
from metrics import metric_main
from training.augment import augpipe_specs
from training.config import CONFIG_PRESETS, OPTION_DEFAULTS, setup_training_config
from training.launch import launch_training

# ----------------------------------------------------------------------------
# --metrics: names -> class_name dicts that training_loop builds into callables (metrics/ is a higher layer).


def parse_metrics(metrics, feature_net, holdout):
    names = [] if metrics.lower() == 'none' else [name for name in metrics.split(',') if name]
    invalid = [name for name in names if not metric_main.is_valid_metric(name)]
    if invalid:
        raise dnnlib.UserError(f'unknown metric(s) {", ".join(invalid)}', param='--metrics')
    if holdout is not None and not os.path.exists(holdout):
        raise dnnlib.UserError(f'{holdout}: no such file or directory', param='--holdout')
    if any(metric_main.resolve(name)[0] == 'privacy' for name in names) and holdout is None:
        raise dnnlib.UserError('the privacy audit needs real images the GAN never saw (--holdout)', param='--metrics')
    return [metric_main.metric_spec(name, feature_net=feature_net, holdout=holdout) for name in names]


# ----------------------------------------------------------------------------
# Command line: a thin wrapper. Options left unset are None and filled from the preset.

P = OPTION_DEFAULTS


@click.command(context_settings=dict(max_content_width=120, show_default=True))
# General options.
@click.option('--outdir', help='Where to save the results', metavar='DIR', type=str, required=True)
@click.option(
    '--gpus',
    help='Number of processes (GPUs, or CPU ranks with gloo); power of two',
    metavar='INT',
    type=click.IntRange(min=1),
    default=P['gpus'],
)
@click.option('--device', help='Device kind', type=click.Choice(['auto', 'cpu', 'cuda']), default=P['device'])
@click.option('--snap', help='Snapshot interval in ticks', metavar='INT', type=click.IntRange(min=1), default=P['snap'])
@click.option(
    '--tick',
    help='Progress interval in kimg (may be fractional)',
    metavar='KIMG',
    type=finite_float(min=0, min_open=True),
    default=P['tick'],
)
@click.option('--metrics', help='Comma-separated metric names or "none"', metavar='LIST', type=str, default='none')
@click.option(
    '--feature-net',
    help='Metrics feature space: inception, pixels[:S] or a classify.py PKL',
    metavar='SPEC',
    type=str,
    default='inception',
)
@click.option('--holdout', help='Real images the GAN never sees (--metrics=privacy)', metavar='PATH', type=str)
@click.option('--seed', help='Random seed', metavar='INT', type=click.IntRange(min=0), default=P['seed'])
@click.option('-n', '--dry-run', help='Print training options and exit', is_flag=True)
# Dataset.
@click.option('--data', help='Training data (directory or zip)', metavar='PATH', type=str, required=True)
@click.option(
    '--cond', help='Train conditional model based on dataset labels', metavar='BOOL', type=bool, default=P['cond']
)
@click.option('--subset', help='Train with only N images', metavar='INT', type=click.IntRange(min=1))
@click.option('--mirror', help='Enable dataset x-flips', metavar='BOOL', type=bool, default=P['mirror'])
@click.option(
    '--cond-sampling',
    help='Fake labels: data (training labels), balanced (classes equally often) or class weights P1,P2,...  '
    '[default: data; balanced under --dp]',
    metavar='data|balanced|LIST',
    type=str,
)
# Base config.
@click.option('--cfg', help='Base config', type=click.Choice(list(CONFIG_PRESETS)), default='auto')
@click.option('--gamma', help='Override R1 gamma', metavar='FLOAT', type=finite_float(min=0))
@click.option(
    '--kimg',
    help='Override training duration in kimg (may be fractional)',
    metavar='KIMG',
    type=finite_float(min=0, min_open=True),
)
@click.option('--batch', help='Override batch size', metavar='INT', type=click.IntRange(min=1))
@click.option('--channel-base', help='Override channel base (capacity)', metavar='INT', type=click.IntRange(min=1))
@click.option('--channel-max', help='Override max channels per layer', metavar='INT', type=click.IntRange(min=1))
@click.option('--map-layers', help='Override mapping network depth', metavar='INT', type=click.IntRange(min=1))
# Clinical generator term.
@click.option(
    '--clinical-loss',
    help="Frozen classifier (classify.py train) whose loss on the requested label is added to G's loss",
    metavar='PKL',
    type=str,
)
@click.option(
    '--clinical-weight',
    help='Weight of the clinical loss  [default: 0.1]',
    metavar='FLOAT',
    type=finite_float(min=0),
    default=None,
)
@click.option(
    '--clinical-public',
    help='Under --dp: the clinical classifier saw no private images (else it must be DP-trained)',
    metavar='BOOL',
    type=bool,
    default=P['clinical_public'],
)
# Differential privacy.
@click.option(
    '--dp', help="Train D with DP-SGD (only D's step reads the images)", metavar='BOOL', type=bool, default=P['dp']
)
@click.option(
    '--dp-epsilon',
    help='Privacy budget: sigma is chosen to spend it over --kimg; training stops at it',
    metavar='FLOAT',
    type=finite_float(min=0, min_open=True),
)
@click.option(
    '--dp-delta',
    help='Privacy delta  [default: 0.1 / number of images or patients]',
    metavar='FLOAT',
    type=finite_float(min=0, max=1, min_open=True, max_open=True),
)
@click.option(
    '--dp-noise',
    help='Noise multiplier sigma (instead of deriving it from --dp-epsilon)',
    metavar='FLOAT',
    type=finite_float(min=0),
)
@click.option(
    '--dp-clip',
    help='Per-sample gradient norm bound C',
    metavar='FLOAT',
    type=finite_float(min=0, min_open=True),
    default=P['dp_clip'],
)
@click.option(
    '--dp-accountant',
    help='Accountant for sigma, the budget and the reported epsilon',
    type=click.Choice(['prv', 'rdp']),
    default=P['dp_accountant'],
)
@click.option(
    '--dp-mode',
    help='Ablation: full DP-SGD, clip-only (sigma=0) or noise-only (no clipping)',
    type=click.Choice(['full', 'clip-only', 'noise-only']),
    default=P['dp_mode'],
)
# Discriminator augmentation.
@click.option(
    '--aug', help='Augmentation mode [default: ada; noaug under --dp]', type=click.Choice(['noaug', 'ada', 'fixed'])
)
@click.option('--p', help='Augmentation probability for --aug=fixed', metavar='FLOAT', type=finite_float(0, 1))
@click.option(
    '--target', help='ADA target value for --aug=ada [default: 0.6]', metavar='FLOAT', type=finite_float(0, 1)
)
@click.option(
    '--ada-kimg',
    help='ADA speed: kimg for p to go 0 -> 1',
    metavar='KIMG',
    type=finite_float(min=0, min_open=True),
    default=P['ada_kimg'],
)
@click.option('--augpipe', help='Augmentation pipeline [default: bgc]', type=click.Choice(list(augpipe_specs)))
# Transfer learning.
@click.option(
    '--resume',
    help='Resume from network pickle (exactly, if it is one of our snapshots)',
    metavar='PKL',
    type=str,
    default=P['resume'],
)
@click.option('--freezed', help='Freeze-D: number of frozen layers', metavar='INT', type=click.IntRange(min=0))
@click.option(
    '--nonfinite-guard',
    help='Stop when losses or weights go NaN/inf (the last snapshot stays the last good one)',
    metavar='BOOL',
    type=bool,
    default=P['nonfinite_guard'],
)
# Performance options.
@click.option('--fp32', help='Disable mixed-precision training', metavar='BOOL', type=bool, default=P['fp32'])
@click.option(
    '--cpu-bf16',
    help='Run the mixed-precision blocks in bfloat16 on the CPU (1.6-1.7x faster at --cfg=cpu)  '
    '[default: on for CPU training on CPUs with avx512_bf16 or AMX, unless --fp32]',
    metavar='BOOL',
    type=bool,
    default=P['cpu_bf16'],
)
@click.option('--nhwc', help='Use NHWC memory format with FP16', metavar='BOOL', type=bool, default=P['nhwc'])
@click.option('--nobench', help='Disable cuDNN benchmarking', metavar='BOOL', type=bool, default=P['nobench'])
@click.option(
    '--allow-tf32', help='Allow PyTorch to use TF32 internally', metavar='BOOL', type=bool, default=P['allow_tf32']
)
@click.option(
    '--workers',
    help='Override number of DataLoader workers',
    metavar='INT',
    type=click.IntRange(min=0),
    default=P['workers'],
)
def main(outdir, dry_run, cfg, metrics, feature_net, holdout, **opts):
    """Train a GAN using the techniques described in "Training Generative Adversarial Networks with Limited
    Data" (Karras et al. 2020), on CPU or CUDA, in one or many processes.

    \b
    Example (CPU smoke run, ~1 minute):
    python train.py --outdir=runs --data=phantom.zip --cfg=cpu --kimg=0.1 --tick=0.05
    """
    with user_errors():
        c = setup_training_config(cfg, **opts, metrics=parse_metrics(metrics, feature_net, holdout))
        launch_training(c, outdir, dry_run)


# ----------------------------------------------------------------------------

if __name__ == '__main__':
    main()

# ----------------------------------------------------------------------------
