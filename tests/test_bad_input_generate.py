"""Bad input to generate.py and export.py, each in a fresh process: exit code 2, one 'Error' line and no
traceback, and the output location untouched (--outdir still absent, an existing --dest byte-identical)."""

import os
import pickle
import shutil
import subprocess
import sys

import pytest
import safetensors.torch
import torch

import export
from training import training_loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------
# The inputs, built once: a snapshot, its release, and broken variants of both.


@pytest.fixture(scope='module')
def inputs(tmp_path_factory, tiny_dataset, tiny_training_kwargs):
    root = tmp_path_factory.mktemp('bad_input')
    data = tiny_dataset(8, path=root / 'data.zip', class_names=['normal', 'abnormal'])
    training_loop.training_loop(**tiny_training_kwargs(root, data, total_kimg=0.004, kimg_per_tick=1))
    paths = dict(snapshot=root / 'network-snapshot-000000.pkl', release=root / 'G.safetensors')
    export.export(str(paths['snapshot']), str(paths['release']))
    snapshot, release = paths['snapshot'].read_bytes(), paths['release'].read_bytes()
    state = safetensors.torch.load_file(paths['release'])
    broken = {
        'not_snapshot.pkl': pickle.dumps([1, 2, 3]),
        'truncated.pkl': snapshot[: len(snapshot) // 2],
        'missing_module.pkl': b'\x80\x04cno_such_module_xyz\nThing\n)\x81.',
        'corrupt.safetensors': release[:100] + b'\x00' * 64,
        'garbage.safetensors': b'\xff' * 32,
        'foreign.safetensors': safetensors.torch.save({'x': torch.zeros(3)}),
        'misfit.safetensors': safetensors.torch.save(
            {k: v for k, v in state.items() if k != 'mapping.w_avg'}, metadata=_metadata(paths['release'])
        ),
    }
    for name, content in broken.items():
        (root / name).write_bytes(content)
        paths[name.split('.')[0]] = root / name  # '{truncated}' in the table.
    return {key: str(path) for key, path in paths.items()}


def _metadata(path):
    with safetensors.safe_open(path, framework='pt') as f:
        return f.metadata()


# ----------------------------------------------------------------------------
# The table: (tool, arguments, part of the error message). {name} is an input above, {tmp} the test's own folder
# (holding a_file.txt and existing.safetensors); generate.py writes to {tmp}/out and export.py to
# {tmp}/G.safetensors unless the arguments say otherwise.

GEN = ['generate.py', '--network={snapshot}', '--seeds=0-1', '--class=1']
CASES = {
    'trunc-nan': ([*GEN, '--trunc=nan'], 'not a finite number'),
    'trunc-inf': ([*GEN, '--trunc=inf'], 'not a finite number'),
    'class-overflow': (['generate.py', '--network={snapshot}', '--seeds=0', '--class=1e39,0'], 'finite float32'),
    'class-nan': (['generate.py', '--network={release}', '--seeds=0', '--class=nan,0'], 'finite float32'),
    'class-out-of-range': (['generate.py', '--network={release}', '--seeds=0', '--class=5'], 'out of range'),
    'seed-2**32': (['generate.py', '--network={snapshot}', '--seeds=4294967296', '--class=0'], 'too large'),
    'outdir-is-file': ([*GEN, '--outdir={tmp}/a_file.txt'], 'is a file'),
    'network-missing': (['generate.py', '--network={tmp}/none.pkl', '--seeds=0'], 'cannot load snapshot'),
    'network-not-snapshot': (['generate.py', '--network={not_snapshot}', '--seeds=0'], 'not a network snapshot'),
    'network-truncated': (['generate.py', '--network={truncated}', '--seeds=0'], 'cannot load snapshot'),
    'network-missing-module': (['generate.py', '--network={missing_module}', '--seeds=0'], 'no_such_module_xyz'),
    'release-corrupt': (['generate.py', '--network={corrupt}', '--seeds=0'], 'cannot read release'),
    'release-garbage': (['generate.py', '--network={garbage}', '--seeds=0'], 'cannot read release'),
    'release-foreign': (['generate.py', '--network={foreign}', '--seeds=0'], 'not a SpineGAN release'),
    'release-misfit': (['generate.py', '--network={misfit}', '--seeds=0'], 'mapping.w_avg'),
    'export-dest-exists': (
        ['export.py', '--network={snapshot}', '--dest={tmp}/existing.safetensors'],
        'pass --overwrite',
    ),
    'export-dest-not-safetensors': (['export.py', '--network={snapshot}', '--dest={tmp}/G.pkl'], '.safetensors'),
    'export-dest-folder-missing': (['export.py', '--network={snapshot}', '--dest={tmp}/no/G.safetensors'], 'folder'),
    'export-network-truncated': (['export.py', '--network={truncated}'], 'cannot load snapshot'),
    'export-network-is-release': (['export.py', '--network={release}'], 'already a release'),
}


def _command(args, inputs, tmp):
    args = [arg.format(tmp=tmp, **inputs) for arg in args]
    if args[0] == 'generate.py' and not any(arg.startswith('--outdir=') for arg in args):
        args.append(f'--outdir={tmp}/out')
    if args[0] == 'export.py' and not any(arg.startswith('--dest=') for arg in args):
        args.append(f'--dest={tmp}/G.safetensors')
    target = next(arg.split('=', 1)[1] for arg in args if arg.startswith(('--outdir=', '--dest=')))
    return [sys.executable, *args], target


def _contents(path):
    return open(path, 'rb').read() if os.path.isfile(path) else os.listdir(path) if os.path.isdir(path) else None


# ----------------------------------------------------------------------------


@pytest.mark.parametrize('case', list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, inputs, tmp_path):
    args, message = CASES[case]
    (tmp_path / 'a_file.txt').write_text('not a folder')
    shutil.copyfile(inputs['release'], tmp_path / 'existing.safetensors')
    cmd, target = _command(args, inputs, tmp_path)
    before = _contents(target)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith('Error')]
    assert result.returncode == 2 and len(errors) == 1 and 'Traceback' not in output, output
    assert message in errors[0], errors[0]
    assert _contents(target) == before and sorted(os.listdir(tmp_path)) == ['a_file.txt', 'existing.safetensors']


# ----------------------------------------------------------------------------
