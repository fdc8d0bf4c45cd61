"""Training configuration: presets (cfg_specs of stylegan2-ada-pytorch, keys spelled out) and one plain
function that turns options into the EasyDict of *_kwargs that training_loop() takes.

`setup_training_config(cfg, **opts)` fills only the options the caller left unset (None) from the preset;
problems with the input raise dnnlib.UserError naming the flag. train.py and study.py both call it.
"""

import os

import torch

import dnnlib
from torch_utils import distributed
from training import checkpoint, data_policy
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

# Options that are not part of a preset, with their defaults (None = off / decided later).
OPTION_DEFAULTS = dict(
    gpus=1, device='auto', snap=50, tick=4, metrics=(), seed=0, cond=False, subset=None, mirror=False,
    aug=None, p=None, target=None, ada_kimg=500, augpipe=None, resume='noresume', freezed=None,
    fp32=False, cpu_bf16=None, nhwc=False, nobench=False, allow_tf32=False, workers=3, nonfinite_guard=True,
    cond_sampling='data', clinical_loss=None, clinical_weight=None, clinical_public=False,
    dp=False, dp_epsilon=None, dp_delta=None, dp_noise=None, dp_clip=1.0, dp_accountant='prv', dp_mode='full',
)  # fmt: skip

# Run-directory name parts, in order: (option, format) for every option the user set explicitly.
DESC_PARTS = [
    ('channel_base', '-channelbase{}'), ('channel_max', '-channelmax{}'), ('map_layers', '-maplayers{}'),
    ('gamma', '-gamma{:g}'), ('kimg', '-kimg{:g}'), ('batch', '-batch{}'), ('aug', '-{}'), ('p', '-p{:g}'),
    ('target', '-target{:g}'), ('augpipe', '-{}'), ('freezed', '-freezed{:d}'),
]  # fmt: skip

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
# Options -> one EasyDict `c` of *_kwargs for training_loop(), plus `c.desc` (the run directory's name).
# Preset values fill only what the caller left unset (None); errors are dnnlib.UserError naming the flag.


def setup_training_config(cfg: str = 'auto', **opts) -> dnnlib.EasyDict:
    if cfg not in CONFIG_PRESETS:
        raise dnnlib.UserError(f'unknown config {cfg!r}; expected one of {", ".join(CONFIG_PRESETS)}', param='--cfg')
    unknown = set(opts) - set(OPTION_DEFAULTS) - set(CONFIG_PRESETS[cfg]) - {'data'}
    if unknown:
        raise TypeError(f'setup_training_config: unknown option(s) {", ".join(sorted(unknown))}')
    user = {key: value for key, value in opts.items() if value is not None}
    opts = dnnlib.EasyDict(OPTION_DEFAULTS, **user)
    if opts.dp and opts.cond and 'cond_sampling' not in user:
        opts.cond_sampling = 'balanced'  # Private labels never drive the fake labels.
    opts.gpus = distributed.torchrun_world_size() or opts.gpus  # Under torchrun, ranks of every node.
    if opts.gpus & (opts.gpus - 1) != 0:
        raise dnnlib.UserError('must be a power of two', param='--gpus')
    opts.device = resolve_device(opts.device, opts.gpus)

    c = dnnlib.EasyDict(num_gpus=opts.gpus, random_seed=opts.seed, device=opts.device)
    c.image_snapshot_ticks = c.network_snapshot_ticks = opts.snap
    c.kimg_per_tick = opts.tick
    c.guard_nonfinite = bool(opts.nonfinite_guard)
    c.metrics = list(opts.metrics)  # class_name dicts (train.py resolves names) or callables.
    c.training_set_kwargs, training_set = setup_training_set_kwargs(opts)
    c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=True, num_workers=min(opts.workers, os.cpu_count() or 1))
    c.data_loader_kwargs.prefetch_factor = 2

    preset = resolve_auto_preset(CONFIG_PRESETS[cfg], c.training_set_kwargs.resolution, opts.gpus)
    spec = dnnlib.EasyDict(preset, **{key: value for key, value in user.items() if key in preset})
    if spec.channel_base < c.training_set_kwargs.resolution:
        raise dnnlib.UserError(
            f'{spec.channel_base} gives no channels at {c.training_set_kwargs.resolution} px; '
            f'use at least the resolution',
            param='--channel-base',
        )
    setup_network_kwargs(c, spec, opts)
    setup_conditioning(c, opts, training_set)
    c.update(total_kimg=spec.kimg, batch_size=spec.batch, ema_kimg=spec.ema_kimg, ema_rampup=spec.ema_rampup)
    c.batch_gpu = preset.batch // preset.ref_gpus
    if c.batch_size % opts.gpus != 0:
        raise dnnlib.UserError(f'{c.batch_size} must be divisible by --gpus ({opts.gpus} ranks)', param='--batch')
    fit_batch_per_gpu(c, spec.mbstd_group)
    setup_augmentation(c, opts, user)
    setup_privacy(c, opts, training_set)
    transfer = setup_resume(c, opts.resume)
    c.desc = run_description(training_set.name, cfg, opts, user, transfer)
    return c


def setup_training_set_kwargs(opts):
    """(training_set_kwargs, the training set built from them once to check it): errors name --data/--cond."""
    if not os.path.exists(opts.data):
        raise dnnlib.UserError(f'{opts.data}: no such file or directory', param='--data')
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=opts.data,
                             use_labels=bool(opts.cond), max_size=None, xflip=False)  # fmt: skip
    try:
        training_set = dnnlib.util.construct_class_by_name(**kwargs)
    except ValueError as err:
        raise dnnlib.UserError(str(err), param='--data') from None
    try:
        has_labels = training_set.has_labels  # Labels are read (and checked) lazily, here.
    except ValueError as err:
        raise dnnlib.UserError(str(err), param='--cond') from None
    if opts.cond and not has_labels:
        raise dnnlib.UserError('needs labels in dataset.json', param='--cond')
    kwargs.update(resolution=training_set.resolution, max_size=len(training_set))
    if opts.subset is not None:
        if not 1 <= opts.subset <= len(training_set):
            raise dnnlib.UserError(f'must be between 1 and {len(training_set)}', param='--subset')
        if opts.subset < len(training_set):
            kwargs.update(max_size=opts.subset, random_seed=opts.seed)
    kwargs.xflip = bool(opts.mirror)
    return kwargs, training_set


def setup_network_kwargs(c, spec, opts):
    c.G_kwargs = dnnlib.EasyDict(
        class_name='training.networks.Generator', z_dim=512, w_dim=512,
        mapping_kwargs=dnnlib.EasyDict(num_layers=spec.map_layers), synthesis_kwargs=dnnlib.EasyDict(),
    )  # fmt: skip
    c.D_kwargs = dnnlib.EasyDict(
        class_name='training.networks.Discriminator', architecture=spec.d_architecture,
        block_kwargs=dnnlib.EasyDict(), epilogue_kwargs=dnnlib.EasyDict(),
        mapping_kwargs=dnnlib.EasyDict(num_layers=1),  # Label embedding depth: ours 1, official 8.
    )  # fmt: skip
    for kwargs in (c.G_kwargs.synthesis_kwargs, c.D_kwargs):
        kwargs.update(channel_base=spec.channel_base, channel_max=spec.channel_max, num_fp16_res=4, conv_clamp=256)
    for name in ('G_opt_kwargs', 'D_opt_kwargs'):
        c[name] = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=spec.lr, betas=[0.0, 0.99], eps=1e-8)
    c.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=spec.gamma,
                                    pl_weight=spec.pl_weight, style_mixing_prob=spec.style_mixing)  # fmt: skip
    if opts.freezed is not None:
        c.D_kwargs.block_kwargs.freeze_layers = opts.freezed
    if opts.fp32:
        c.G_kwargs.synthesis_kwargs.num_fp16_res = c.D_kwargs.num_fp16_res = 0
        c.G_kwargs.synthesis_kwargs.conv_clamp = c.D_kwargs.conv_clamp = None
    if opts.nhwc:
        c.G_kwargs.synthesis_kwargs.fp16_channels_last = c.D_kwargs.block_kwargs.fp16_channels_last = True
    c.cpu_bf16 = resolve_cpu_bf16(opts)
    c.cudnn_benchmark = not opts.nobench
    c.allow_tf32 = bool(opts.allow_tf32)


def resolve_cpu_bf16(opts):
    """--cpu-bf16; unset, it is on where it pays (CPU training on a CPU with native bfloat16, unless --fp32): the
    tests keep losses, gradients and DP-SGD's per-sample gradients near fp32 (tests/training, tests/clinical)."""
    if opts.cpu_bf16 is None:
        return opts.device == 'cpu' and not opts.fp32 and cpu_has_native_bf16()
    if opts.cpu_bf16:
        check_cpu_bf16(opts)
    return bool(opts.cpu_bf16)


def check_cpu_bf16(opts):
    if opts.fp32:
        raise dnnlib.UserError('runs the mixed-precision blocks in bfloat16; drop --fp32', param='--cpu-bf16')
    if opts.device != 'cpu':
        raise dnnlib.UserError(f'is for CPU training; on {opts.device} those blocks run in fp16', param='--cpu-bf16')
    if not cpu_has_native_bf16():
        raise dnnlib.UserError('this CPU computes bfloat16 without avx512_bf16 or AMX, slower than fp32',
                               param='--cpu-bf16')  # fmt: skip


def cpu_has_native_bf16() -> bool:
    checks = [getattr(torch.cpu, name, None) for name in ('_is_avx512_bf16_supported', '_is_amx_tile_supported')]
    return any(check() for check in checks if check is not None)


# ----------------------------------------------------------------------------
# Conditioning: how fake labels are drawn (--cond-sampling) and the clinical generator term (--clinical-loss),
# both checked against the training set's labels here, before anything is written.


def setup_conditioning(c, opts, training_set):
    try:
        c.cond_sampling = data_policy.parse_cond_sampling(opts.cond_sampling)
        if isinstance(c.cond_sampling, list) and opts.cond:
            data_policy.check_marginal(c.cond_sampling, training_set.label_dim, training_set.has_onehot_labels)
    except ValueError as err:
        raise dnnlib.UserError(str(err), param='--cond-sampling') from None
    if c.cond_sampling != 'data' and not opts.cond:
        raise dnnlib.UserError('needs --cond=1', param='--cond-sampling')
    if opts.clinical_weight is not None and opts.clinical_loss is None:
        raise dnnlib.UserError('needs --clinical-loss', param='--clinical-weight')
    if opts.clinical_public and opts.clinical_loss is None:
        raise dnnlib.UserError('needs --clinical-loss', param='--clinical-public')
    if opts.clinical_loss is not None:
        opts.clinical_weight = 0.1 if opts.clinical_weight is None else opts.clinical_weight  # The study's lambda.
        c.loss_kwargs.extra_G_terms = [clinical_term_spec(opts, training_set)]


def clinical_term_spec(opts, training_set):
    """The clinical loss as a class_name spec, built once here so that a bad classifier stops the run now."""
    if not opts.cond:
        raise dnnlib.UserError('needs --cond=1 (the classifier scores the requested labels)', param='--clinical-loss')
    if not os.path.isfile(opts.clinical_loss):
        raise dnnlib.UserError(f'{opts.clinical_loss}: no such file', param='--clinical-loss')
    spec = dnnlib.EasyDict(
        class_name='clinical.clinical_loss.ClinicalLoss', classifier_pkl=opts.clinical_loss,
        weight=opts.clinical_weight, class_names=training_set.class_names, is_onehot=training_set.has_onehot_labels,
    )  # fmt: skip
    term = dnnlib.util.construct_class_by_name(**spec)  # Loads the classifier and checks its schema (UserError).
    if opts.dp and not opts.clinical_public and not (term.record['dp'] or {}).get('dp'):
        raise dnnlib.UserError(f'{opts.clinical_loss} was not trained with DP (classify.py train --dp ...); under --dp '
                               'its training images leak through G unless it is public (--clinical-public=1)',
                               param='--clinical-loss')  # fmt: skip
    opts.clinical_dp_record = None if opts.clinical_public else term.record['dp']  # Composed with D's DP-SGD.
    return spec


# ----------------------------------------------------------------------------
# Batch split per rank, augmentation and resume.


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


def setup_augmentation(c, opts, user):
    if opts.dp and opts.aug == 'ada' and 'aug' in user:
        raise dnnlib.UserError("ADA's p follows D's outputs on private images; under --dp use --aug=fixed --p=P",
                               param='--aug')  # fmt: skip
    aug = opts.aug or ('noaug' if opts.dp else 'ada')
    if aug == 'fixed' and opts.p is None:
        raise dnnlib.UserError('--aug=fixed requires --p', param='--aug')
    if opts.p is not None and aug != 'fixed':
        raise dnnlib.UserError('can only be used with --aug=fixed', param='--p')
    if opts.target is not None and aug != 'ada':
        raise dnnlib.UserError('can only be used with --aug=ada', param='--target')
    if opts.p is not None:
        c.augment_p = opts.p
    if aug == 'ada':
        c.ada_target = 0.6 if opts.target is None else opts.target
        c.ada_kimg = opts.ada_kimg
    if aug == 'noaug':
        if opts.augpipe is not None:
            raise dnnlib.UserError('cannot be used with --aug=noaug', param='--augpipe')
        return
    c.augment_kwargs = dnnlib.EasyDict(
        class_name='training.augment.AugmentPipe', **augpipe_specs[opts.augpipe or 'bgc']
    )


# ----------------------------------------------------------------------------
# Differential privacy (--dp): D's step becomes DP-SGD (clinical/dp.py), everything else stops reading the
# training set (training/data_policy.py), minibatch-stddev is off (it mixes samples) and R1 folds into D's one
# step every 16 steps. The plan (sigma, q, delta, the budget's last step) is made here, before anything runs.


def setup_privacy(c, opts, training_set):
    dp_flags = [key for key in ('dp_epsilon', 'dp_delta', 'dp_noise') if opts[key] is not None]
    if not opts.dp:
        if dp_flags:
            raise dnnlib.UserError('needs --dp=1', param='--' + dp_flags[0].replace('_', '-'))
        return
    if opts.gpus != 1:
        raise dnnlib.UserError('DP-SGD runs in one process', param='--gpus')
    if opts.mirror:
        raise dnnlib.UserError('flipped copies would be extra private units; flip in --augpipe', param='--mirror')
    if opts.cond and c.cond_sampling == 'data':
        raise dnnlib.UserError('under --dp fake labels cannot follow the private labels; use balanced or P1,P2,...',
                               param='--cond-sampling')  # fmt: skip
    c.cond_sampling = c.cond_sampling if opts.cond else 'balanced'  # Unconditional: no labels to draw.
    groups = training_set.groups
    unit, num_units = ('patient', len(set(groups))) if groups is not None else ('image', len(training_set))
    priors = [opts.clinical_dp_record] if opts.get('clinical_dp_record') else []
    steps = -(-int(c.total_kimg * 1000) // c.batch_size)
    try:
        plan = dnnlib.util.call_func_by_name(
            func_name='clinical.dp.plan_privacy', num_units=num_units, num_items=len(training_set),
            batch_size=c.batch_size, steps=steps, mode=opts.dp_mode, epsilon=opts.dp_epsilon, noise=opts.dp_noise,
            delta=opts.dp_delta, clip=opts.dp_clip, accountant=opts.dp_accountant, unit=unit, prior=priors,
        )  # fmt: skip
    except ValueError as err:
        raise dnnlib.UserError(str(err)) from None
    plan['summary'] = dnnlib.util.call_func_by_name(plan, func_name='clinical.dp.describe_plan')
    c.is_private = True
    c.D_reg_interval = None  # One D step per iteration; DPDiscriminatorStep folds lazy R1 into it.
    c.D_kwargs.epilogue_kwargs.mbstd_num_channels = 0
    c.D_step_kwargs = dnnlib.EasyDict(class_name='clinical.dp.DPDiscriminatorStep', privacy=plan,
                                      training_set_kwargs=c.training_set_kwargs, r1_interval=16)  # fmt: skip


def setup_resume(c, resume):
    """Returns True when a resume pickle is given (exact continuation or transfer learning)."""
    if resume is None or resume == 'noresume':
        return False
    is_url = dnnlib.util.is_url(resume)
    if not is_url and not os.path.isfile(resume):
        raise dnnlib.UserError(f'{resume}: no such file', param='--resume')
    c.resume_pkl = resume
    snapshot = checkpoint.load_snapshot(resume, require=('G', 'D', 'G_ema'), param='--resume')
    if is_url or snapshot['resume_state'] is None:
        c.ada_kimg = 100  # Transfer learning (official): react faster and skip the EMA ramp-up.
        c.ema_rampup = None
    return True


def run_description(dataset_name, cfg, opts, user, resumed):
    desc = dataset_name + ('-cond' if opts.cond else '') + (f'-subset{opts.subset}' if opts.subset else '')
    if opts.cond_sampling != 'data':
        desc += '-condbalanced' if opts.cond_sampling == 'balanced' else '-condmarginal'
    desc += f'-clinical{opts.clinical_weight:g}' if opts.clinical_loss is not None else ''
    desc += f'-dp{opts.dp_mode.replace("full", "")}' if opts.dp else ''
    if opts.dp and opts.dp_epsilon is not None and opts.dp_mode != 'clip-only':
        desc += f'-eps{opts.dp_epsilon:g}'
    desc += ('-mirror' if opts.mirror else '') + f'-{cfg}' + (f'{opts.gpus:d}' if cfg == 'auto' else '')
    desc += ''.join(fmt.format(user[key]) for key, fmt in DESC_PARTS if key in user)
    desc += '-resumecustom' if resumed else ''
    for flag, text in [('fp32', '-fp32'), ('cpu_bf16', '-bf16'), ('nhwc', '-nhwc'), ('nobench', '-nobench'),
                       ('allow_tf32', '-tf32')]:  # fmt: skip
        desc += text if opts[flag] else ''
    return desc


def resolve_device(device, gpus):
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda':
        if not torch.cuda.is_available():
            raise dnnlib.UserError('CUDA is not available on this machine', param='--device')
        if distributed.torchrun_world_size() is None and gpus > torch.cuda.device_count():
            raise dnnlib.UserError(f'only {torch.cuda.device_count()} CUDA device(s) available', param='--gpus')
    return device


# ----------------------------------------------------------------------------
