"""Training speed: sec/kimg of full StyleGAN2-ADA steps (Gmain, Greg, Dmain, Dreg, EMA) on synthetic data.

Times our networks and loss; with --official PATH also times a stylegan2-ada-pytorch checkout at the same config.
Each timing runs in a fresh subprocess with its tree first on sys.path, ours and official alternating --repeat
times, and the ratio reported is the median of the pairs: on a shared machine one pair can be off by 20%. Warm-up
steps are excluded. On CUDA each timing also reports the peak memory allocated.

Ours runs at train.py's default precision: on a CPU with native bfloat16 (avx512_bf16 or AMX) its mixed-precision
blocks run in bfloat16, elsewhere in fp32; --cpu-bf16 0 times fp32 there too. The official code has no CPU
low-precision path and runs in fp32.

Example:
    python bench/train_speed.py --cfg=cpu --res=32 --batch=16
    python bench/train_speed.py --official=~/src/stylegan2-ada-pytorch --cpu-bf16 0
"""

import json
import os
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------
# Benchmark config from train.py's presets (computed in the parent; workers only get plain JSON).


def make_config(cfg, res, batch, channels, steps, warmup, device, aug, cpu_bf16=False):
    from training import config

    spec = config.resolve_auto_preset(config.CONFIG_PRESETS[cfg], res, 1)
    batch = batch or spec.batch
    fp16_res = 4 if device == 'cuda' or cpu_bf16 else 0
    mbstd = min(spec.mbstd_group, batch)
    common = dict(channel_base=spec.channel_base, channel_max=spec.channel_max, num_fp16_res=fp16_res, conv_clamp=256)
    return dict(
        res=res, channels=channels, batch=batch, steps=steps, warmup=warmup, device=device, lr=spec.lr,
        cpu_bf16=cpu_bf16,
        G_kwargs=dict(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=spec.map_layers), synthesis_kwargs=common),
        D_kwargs=dict(architecture=spec.d_architecture, epilogue_kwargs=dict(mbstd_group_size=mbstd), **common),
        augment_kwargs=dict(config.augpipe_specs['bgc']) if aug == 'ada' else None,
        loss_kwargs=dict(r1_gamma=spec.gamma, pl_weight=spec.pl_weight, style_mixing_prob=spec.style_mixing),
    )  # fmt: skip


# ----------------------------------------------------------------------------
# Worker: build G/D/loss from whatever `training` package is first on sys.path and time training steps.


def time_training(config):
    import torch

    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
    from training import augment, loss, networks

    device = torch.device(config['device'])
    if config.get('threads'):
        torch.set_num_threads(config['threads'])
    if config.get('cpu_bf16'):
        networks.cpu_bfloat16 = True
    torch.manual_seed(0)
    grid_sample_gradfix.enabled = True  # Official defaults are False; its loop sets them.
    conv2d_gradfix.enabled = device.type == 'cuda'  # As both training loops run it (official's op is CUDA-only).
    dims = dict(c_dim=0, img_resolution=config['res'], img_channels=config['channels'])
    G = networks.Generator(**config['G_kwargs'], **dims).train().requires_grad_(False).to(device)
    D = networks.Discriminator(**config['D_kwargs'], **dims).train().requires_grad_(False).to(device)
    G_ema = networks.Generator(**config['G_kwargs'], **dims).eval().requires_grad_(False).to(device)
    pipe = None
    if config['augment_kwargs'] is not None:
        pipe = augment.AugmentPipe(**config['augment_kwargs']).train().requires_grad_(False).to(device)
        pipe.p.copy_(torch.as_tensor(0.2))
    criterion = loss.StyleGAN2Loss(device, G.mapping, G.synthesis, D, augment_pipe=pipe, **config['loss_kwargs'])
    phases = []
    for module, interval in [(G, 4), (D, 16)]:
        ratio = interval / (interval + 1)
        opt = torch.optim.Adam(module.parameters(), lr=config['lr'] * ratio, betas=(0.0, 0.99**ratio), eps=1e-8)
        prefix = 'G' if module is G else 'D'
        phases += [(prefix + 'main', module, opt, 1), (prefix + 'reg', module, opt, interval)]

    batch = config['batch']
    real = torch.rand([batch, config['channels'], config['res'], config['res']], device=device) * 2 - 1
    c = torch.zeros([batch, 0], device=device)

    def step(batch_idx):
        for name, module, opt, interval in phases:
            if batch_idx % interval != 0:
                continue
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            z = torch.randn([batch, G.z_dim], device=device)
            criterion.accumulate_gradients(name, real, c, z, c, sync=True, gain=interval)
            module.requires_grad_(False)
            opt.step()
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.lerp(p_ema, 0.999))

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    for batch_idx in range(config['warmup']):
        step(batch_idx)
    sync()
    start = time.perf_counter()
    for batch_idx in range(config['warmup'], config['warmup'] + config['steps']):
        step(batch_idx)
    sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else None
    return dict(sec_per_kimg=seconds / (config['steps'] * batch) * 1000, peak_mib=peak)


def run_worker(code_root, config):
    """Time `config` in a fresh interpreter with `code_root` first on sys.path: {sec_per_kimg, peak_mib (CUDA)}."""
    script = (
        'import json, sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]);'
        'from train_speed import time_training; print("RESULT", json.dumps(time_training(json.loads(sys.argv[3]))))'
    )
    cmd = [sys.executable, '-c', script, os.path.abspath(code_root), os.path.dirname(__file__), json.dumps(config)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.abspath(code_root))
    lines = [line for line in result.stdout.splitlines() if line.startswith('RESULT ')]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f'worker in {code_root} failed:\n' + '\n'.join(tail))
    return json.loads(lines[-1][len('RESULT ') :])


def describe(result):
    peak = f', peak {result["peak_mib"]:.0f} MiB' if result['peak_mib'] is not None else ''
    return f'{result["sec_per_kimg"]:8.2f} sec/kimg{peak}'


# ----------------------------------------------------------------------------
# Command line.


def main(argv=None):
    sys.path.insert(0, REPO_ROOT)
    import click
    import numpy as np

    @click.command()
    @click.option('--cfg', help='Preset from train.py', type=str, default='cpu', show_default=True)
    @click.option(
        '--res', help='Image resolution', metavar='INT', type=click.IntRange(min=4), default=32, show_default=True
    )
    @click.option(
        '--batch', help='Batch size [default: 16 for cfg cpu]', metavar='INT', type=click.IntRange(min=1), default=16
    )
    @click.option('--channels', help='Image channels', type=click.Choice(['1', '3']), default='1', show_default=True)
    @click.option(
        '--steps', help='Timed steps', metavar='INT', type=click.IntRange(min=1), default=8, show_default=True
    )
    @click.option(
        '--warmup',
        help='Untimed warm-up steps',
        metavar='INT',
        type=click.IntRange(min=0),
        default=2,
        show_default=True,
    )
    @click.option(
        '--aug',
        help='Augment D inputs (bgc, p=0.2)',
        type=click.Choice(['ada', 'noaug']),
        default='ada',
        show_default=True,
    )
    @click.option(
        '--device', help='Device kind', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True
    )
    @click.option(
        '--threads', help='CPU threads (0 = torch default)', metavar='INT', type=click.IntRange(min=0), default=0
    )
    @click.option('--official', help='stylegan2-ada-pytorch checkout to compare against', metavar='PATH', type=str)
    @click.option(
        '--cpu-bf16', help='Ours in bfloat16 on the CPU [default: as train.py, on where the CPU has it]',
        metavar='BOOL', type=bool,
    )  # fmt: skip
    @click.option(
        '--repeat', help='Alternating ours/official pairs', metavar='INT', type=click.IntRange(min=1), default=3,
        show_default=True,
    )  # fmt: skip
    def cli(cfg, res, batch, channels, steps, warmup, aug, device, threads, official, cpu_bf16, repeat):
        import torch

        import dnnlib
        from training import config as train_config

        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        try:  # train.py's rule: unset = bfloat16 where the CPU has it natively.
            cpu_bf16 = train_config.resolve_cpu_bf16(dnnlib.EasyDict(cpu_bf16=cpu_bf16, device=device, fp32=False))
        except dnnlib.UserError as err:
            raise click.BadParameter(str(err), param_hint='--cpu-bf16') from None
        config = make_config(cfg, res, batch, int(channels), steps, warmup, device, aug, cpu_bf16)
        config['threads'] = threads
        desc = f'cfg={cfg} res={res} batch={config["batch"]} channels={channels} aug={aug} device={device}'
        desc += f' threads={threads or torch.get_num_threads()}' + (' ours in bf16' if cpu_bf16 else '')
        if official is None:
            ours = run_worker(REPO_ROOT, config)
            print(f'ours:     {describe(ours)}  ({desc}, {steps} steps after {warmup} warm-up)')
            print('official: skipped (pass --official PATH to a stylegan2-ada-pytorch checkout to compare)')
            return
        if not os.path.isfile(os.path.join(official, 'training', 'networks.py')):
            raise click.BadParameter(f'{official}: no training/networks.py there', param_hint='--official')
        theirs_config = dict(make_config(cfg, res, batch, int(channels), steps, warmup, device, aug), threads=threads)
        print(f'{desc}, {steps} steps after {warmup} warm-up')
        ratios = []
        for index in range(repeat):
            ours, theirs = run_worker(REPO_ROOT, config), run_worker(official, theirs_config)
            ratios.append(ours['sec_per_kimg'] / theirs['sec_per_kimg'])
            print(f'pair {index + 1}: ours {describe(ours)}, official {describe(theirs)} (ratio {ratios[-1]:.2f})')
        print(f'ours/official = {np.median(ratios):.2f} (median of {repeat})')

    cli(args=argv)


# ----------------------------------------------------------------------------

if __name__ == '__main__':
    main()

# ----------------------------------------------------------------------------
