"""Bad input to calc_metrics.py, each in a fresh process: exit code 2, one 'Error' line, no traceback, and no
metric-*.jsonl written beside the snapshot."""

import os
import pickle
import subprocess
import sys

import pytest

from training import training_loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def inputs(tmp_path_factory, tiny_dataset, tiny_training_kwargs):
    root = tmp_path_factory.mktemp('bad_metrics')
    data = tiny_dataset(8, path=root / 'data.zip', class_names=['normal', 'abnormal'])
    training_loop.training_loop(**tiny_training_kwargs(root, data, total_kimg=0.004, kimg_per_tick=1))
    (root / 'garbage.pkl').write_bytes(b'not a pickle')
    (root / 'foreign.pkl').write_bytes(pickle.dumps({'classifier': 3}))
    return dict(snapshot=str(root / 'network-snapshot-000000.pkl'), data=data, root=str(root))


NET = ['--network={snapshot}', '--feature-net=pixels']
CASES = {
    'network-missing': (['--network={root}/none.pkl'], 'cannot load snapshot'),
    'network-garbage': (['--network={root}/garbage.pkl', '--feature-net=pixels'], 'cannot load snapshot'),
    'metric-unknown': ([*NET, '--metrics=fid,fud'], 'unknown metric(s) fud'),
    'inception-missing': (['--network={snapshot}', '--metrics=fid'], 'inception-2015-12-05.pt'),
    'privacy-no-holdout': ([*NET, '--metrics=privacy'], 'never saw'),
    'holdout-missing': ([*NET, '--metrics=privacy', '--holdout={root}/none.zip'], 'no such file'),
    'feature-net-missing': (['--network={snapshot}', '--feature-net={root}/none.pkl'], 'no such file'),
    'feature-net-garbage': (['--network={snapshot}', '--feature-net={root}/garbage.pkl'], 'cannot load classifier'),
    'feature-net-foreign': (['--network={snapshot}', '--feature-net={root}/foreign.pkl'], 'not a classify.py'),
    'pixels-zero': (['--network={snapshot}', '--feature-net=pixels:0'], 'pixels:S'),
    'data-missing': ([*NET, '--data={root}/none.zip'], 'no such file'),
    'num-gen-one': ([*NET, '--num-gen=1'], '--num-gen'),
}


@pytest.mark.parametrize('case', list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, inputs, tmp_path):
    args, message = CASES[case]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO, DNNLIB_CACHE_DIR=str(tmp_path / 'cache'))
    env.pop('SPINEGAN_INCEPTION', None)
    cmd = [sys.executable, 'calc_metrics.py', *[arg.format(**inputs) for arg in args]]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith('Error')]
    assert result.returncode == 2 and len(errors) == 1 and 'Traceback' not in output, output
    assert message in errors[0], errors[0]
    assert not [name for name in os.listdir(inputs['root']) if name.startswith('metric-')]
