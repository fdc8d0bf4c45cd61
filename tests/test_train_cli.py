"""train.py: usage errors, a conditional ADA run, SIGKILL + --resume, and two gloo ranks on CPU."""

import json
import math
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import PIL.Image
import pytest
from click.testing import CliRunner

import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
TINY = ['--cfg=cpu', '--channel-base=256', '--channel-max=16', '--batch=4', '--workers=0', '--tick=0.008', '--snap=1']

# ----------------------------------------------------------------------------
# Datasets: 16 structured 16x16 grayscale images, two classes; optionally without labels or broken.


@pytest.fixture(scope='module')
def data(tmp_path_factory, tiny_dataset):
    root = tmp_path_factory.mktemp('cli')
    return dict(
        labelled=tiny_dataset(path=root / 'labelled.zip'),
        unlabelled=tiny_dataset(path=root / 'unlabelled.zip', labels=False),
        mixed=tiny_dataset(2, path=root / 'mixed.zip', sizes=[16, 32]),
    )


def run_cli(args):
    return CliRunner().invoke(train.main, args, catch_exceptions=False)


def snapshots(run_dir):
    return sorted(f for f in os.listdir(run_dir) if re.fullmatch(r'network-snapshot-[\d.]+\.pkl', f))


# ----------------------------------------------------------------------------
# Usage errors: exit code 2, one line naming the flag, no traceback, nothing written.


@pytest.mark.parametrize(
    'dataset, extra, message',
    [
        ('unlabelled', ['--cond=1'], 'Invalid value for --cond: '),
        ('labelled', ['--gpus=3'], 'must be a power of two'),
        ('labelled', ['--gpus=2', '--batch=5', '--device=cpu'], '--batch: 5 must be divisible by --gpus (2 ranks)'),
        ('labelled', ['--p=0.3'], '--p: can only be used with --aug=fixed'),
        ('labelled', ['--aug=fixed'], 'requires --p'),
        ('labelled', ['--aug=noaug', '--target=0.5'], '--target: can only be used with --aug=ada'),
        ('labelled', ['--cond-sampling=balanced'], '--cond-sampling: needs --cond=1'),
        ('labelled', ['--cond=1', '--cond-sampling=1'], '--cond-sampling: label marginal must be 2 non-negative'),
        (
            'labelled',
            ['--cond=1', '--clinical-loss=/nonexistent/c.pkl'],
            '--clinical-loss: /nonexistent/c.pkl: no such',
        ),
        ('labelled', ['--resume=/nonexistent/x.pkl'], '--resume: /nonexistent/x.pkl: no such file'),
        ('mixed', [], 'mixed image shapes'),
        (None, [], '--data: /nonexistent/data.zip: no such file or directory'),
    ],
)
def test_usage_errors(tmp_path, data, dataset, extra, message):
    path = data[dataset] if dataset else '/nonexistent/data.zip'
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path / "out"}', f'--data={path}', *TINY, *extra])
    assert result.exit_code == 2, result.output
    output = result.output.replace("'", '')  # click quotes the flag name in some versions
    (error,) = [line for line in output.splitlines() if line.startswith('Error:')]
    assert message in error and 'Traceback' not in output
    assert not os.path.exists(tmp_path / 'out')


def test_dry_run_writes_nothing(tmp_path, data):
    result = run_cli([f'--outdir={tmp_path / "out"}', f'--data={data["labelled"]}', '--dry-run', '--cond=1', *TINY])
    assert result.exit_code == 0 and 'Dry run; exiting.' in result.output
    assert '"class_name": "training.loss.StyleGAN2Loss"' in result.output and '"cond_sampling": "data"' in result.output
    args = [f'--outdir={tmp_path / "out"}', f'--data={data["labelled"]}', '--dry-run', '--cond=1', *TINY]
    result = run_cli([*args, '--cond-sampling=0.25,0.75'])
    assert result.exit_code == 0 and '"cond_sampling": [\n    0.25,\n    0.75\n  ]' in result.output
    assert not os.path.exists(tmp_path / 'out')


def test_dp_dry_run_prints_the_privacy_plan(tmp_path, data):
    args = [f'--outdir={tmp_path / "out"}', f'--data={data["labelled"]}', '--cond=1', *TINY, '--kimg=0.4']
    result = run_cli([*args, '--dry-run', '--dp=1', '--dp-epsilon=8', '--dp-accountant=rdp'])
    assert result.exit_code == 0, result.output
    privacy = re.search(r'Privacy: +DP-SGD: mode full, sigma ([\d.]+), C 1, q 0.25, delta 0.00625, 100 steps, '
                        r'16 images, planned epsilon ([\d.]+) \(rdp\)', result.output)  # fmt: skip
    assert privacy and float(privacy[1]) > 0 and 7.9 < float(privacy[2]) <= 8.0, result.output
    assert '"cond_sampling": "balanced"' in result.output and '"mbstd_num_channels": 0' in result.output
    assert not os.path.exists(tmp_path / 'out')


# ----------------------------------------------------------------------------
# A conditional ADA run over several ticks.


def test_conditional_ada_run(tmp_path, data):
    outdir = tmp_path / 'out'
    result = run_cli(
        [f'--outdir={outdir}', f'--data={data["labelled"]}', '--cond=1', '--aug=ada', '--kimg=0.024', *TINY]
    )
    assert result.exit_code == 0, result.output
    (run_name,) = os.listdir(outdir)
    assert run_name == '00000-labelled-cond-cpu-channelbase256-channelmax16-kimg0.024-batch4-ada'
    run_dir = outdir / run_name
    assert snapshots(run_dir) == [f'network-snapshot-000000.{n:03d}.pkl' for n in (4, 12, 20, 24)]
    assert PIL.Image.open(run_dir / 'fakes000000.024.png').mode == 'L'
    options = json.load(open(run_dir / 'training_options.json'))
    assert options['training_set_kwargs']['use_labels'] is True and options['ada_target'] == 0.6
    lines = [json.loads(line) for line in open(run_dir / 'stats.jsonl')]
    assert len(lines) == 4
    for key in ('Loss/G/loss', 'Loss/D/loss', 'Loss/scores/real', 'Loss/signs/real'):
        assert all(math.isfinite(line[key]['mean']) for line in lines), key
    log = open(run_dir / 'log.txt').read()
    assert log.count('\ntick ') == 4 and 'augment ' in log and 'Exiting...' in log
    assert any(f.startswith('events.out.tfevents') for f in os.listdir(run_dir))


# ----------------------------------------------------------------------------
# SIGKILL mid-run, then --resume from the last complete snapshot: same kimg, same ADA p.


def test_kill_then_resume(tmp_path, data):
    outdir = tmp_path / 'out'
    args = [f'--data={data["labelled"]}', '--cond=1', '--aug=ada', '--ada-kimg=0.2', '--target=0', *TINY]
    cmd = [sys.executable, 'train.py', f'--outdir={outdir}', '--kimg=10', *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            run_dirs = os.listdir(outdir) if os.path.isdir(outdir) else []
            if run_dirs and len(snapshots(outdir / run_dirs[0])) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    run_dir = outdir / os.listdir(outdir)[0]
    last = run_dir / snapshots(run_dir)[-1]
    with open(last, 'rb') as f:
        state = pickle.load(f)['resume_state']
    assert state['augment_p'] > 0

    kimg = (state['cur_nimg'] + 8) / 1000
    result = run_cli([f'--outdir={outdir}', f'--kimg={kimg}', f'--resume={last}', *args])
    assert result.exit_code == 0, result.output
    expected = (
        f'Continuing at kimg {state["cur_nimg"] / 1000:g} (tick {state["cur_tick"]}, batch {state["batch_idx"]}, '
    )
    assert expected + f'augment p {state["augment_p"]:.6f})' in result.output
    resumed_dir = outdir / sorted(os.listdir(outdir))[1]
    assert snapshots(resumed_dir) == [f'network-snapshot-{train_tag(state["cur_nimg"] + 8)}.pkl']
    assert re.search(rf'\ntick {state["cur_tick"]} +kimg {kimg:.3f}', result.output)


def train_tag(nimg):
    return f'{nimg // 1000:06d}.{nimg % 1000:03d}'


# ----------------------------------------------------------------------------
# Two CPU ranks (gloo), spawned by --gpus=2 or started by torchrun: only rank 0 writes, parameters stay equal.

LAUNCHERS = {
    'spawn': [sys.executable, 'train.py', '--gpus=2'],
    'torchrun': [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node=2', 'train.py'],
}


@pytest.mark.parametrize('launcher', list(LAUNCHERS))
def test_two_gloo_ranks(tmp_path, data, launcher):
    outdir = tmp_path / 'out'
    cmd = [*LAUNCHERS[launcher], f'--outdir={outdir}', f'--data={data["labelled"]}', '--device=cpu', '--cond=1']
    cmd += ['--kimg=0.016', *TINY]
    result = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_name,) = os.listdir(outdir)
    run_dir = outdir / run_name
    files = os.listdir(run_dir)
    assert sum(f.startswith('events.out.tfevents') for f in files) == 1
    assert len(open(run_dir / 'stats.jsonl').readlines()) == 3  # Ticks at 4, 12 and 16 images; one writer.
    log = open(run_dir / 'log.txt').read()
    assert log.count('\ntick ') == 3 and 'Number of ranks:    2 (cpu)' in result.stdout
    for name in ('G', 'D', 'G_ema'):
        match = re.search(rf'Rank parameter hashes {name}: (\w+) (\w+) \((\w+)\)', log)
        assert match and match.group(1) == match.group(2) and match.group(3) == 'identical', log[-1500:]


# ----------------------------------------------------------------------------
