"""Bad input to classify.py, each in a fresh process: exit code 2, one 'Error' line, no traceback, and the
output folder untouched."""

import os
import pickle
import subprocess
import sys

import pytest

from clinical.classifier import RadiographClassifier, save_classifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------
# Inputs, built once: labelled, unlabelled and 3-class data, a binary and a multiclass classifier, broken files.


@pytest.fixture(scope='module')
def inputs(tmp_path_factory, tiny_dataset):
    root = tmp_path_factory.mktemp('bad_classify')
    paths = dict(
        data=tiny_dataset(8, path=root / 'data.zip', class_names=['normal', 'abnormal']),
        unlabelled=tiny_dataset(8, path=root / 'unlabelled.zip', labels=False),
        three=tiny_dataset(9, path=root / 'three.zip', classes=3, class_names=['a', 'b', 'c']),
    )
    for name, names, kind in (('binary', ['normal', 'abnormal'], 'binary'), ('multi', ['a', 'b', 'c'], 'multiclass')):
        path = str(root / f'{name}.pkl')
        save_classifier(path, RadiographClassifier(names, kind, 16, channels=(8, 16)), dict(val_threshold=0.5))
        paths[name] = path
    broken = dict(not_classifier=pickle.dumps({'G_ema': 1}), truncated=open(paths['binary'], 'rb').read()[:200])
    for name, content in broken.items():
        (root / f'{name}.pkl').write_bytes(content)
        paths[name] = str(root / f'{name}.pkl')
    (root / 'corrupt.zip').write_bytes(b'PK\x03\x04' + b'\0' * 64)
    paths['corrupt'] = str(root / 'corrupt.zip')
    return paths


# ----------------------------------------------------------------------------
# The table: (arguments, part of the error line). {name}: an input above; {tmp}: the test's folder, which holds
# a_file.txt and old/classifier.pkl. train writes to {tmp}/out unless the arguments say otherwise.

TRAIN = ['train', '--data={data}', '--epochs=1']
EVAL = ['eval', '--classifier={binary}', '--data={data}']
CASES = {
    'no-data': (['train', '--epochs=1'], 'give real data'),
    'data-missing': (['train', '--data={tmp}/none.zip'], 'no such file'),
    'data-unlabelled': (['train', '--data={unlabelled}'], 'no labels'),
    'data-corrupt': (['train', '--data={corrupt}'], 'not a readable zip'),
    'classes-unknown': ([*TRAIN, '--classes=normal,fungus'], 'unknown class'),
    'prior-negative': ([*TRAIN, '--prior=-1,2'], 'non-negative'),
    'prior-nan': ([*TRAIN, '--prior=nan,1'], 'finite'),
    'prior-words': ([*TRAIN, '--prior=a,b'], 'balanced'),
    'channels-odd': ([*TRAIN, '--channels=5,7'], 'multiple of 8'),
    'lr-nan': ([*TRAIN, '--lr=nan'], 'not a finite number'),
    'synthetic-truncated': ([*TRAIN, '--synthetic={truncated}', '--num=4'], 'cannot load snapshot'),
    'synthetic-no-num': ([*TRAIN, '--synthetic={tmp}/snap.pkl'], 'how many'),
    'init-missing': ([*TRAIN, '--init={tmp}/none.pt'], 'no such file'),
    'init-garbage': ([*TRAIN, '--init={tmp}/snap.pkl'], 'cannot read weights'),
    'outdir-is-file': ([*TRAIN, '--outdir={tmp}/a_file.txt'], 'is a file'),
    'outdir-has-classifier': ([*TRAIN, '--outdir={tmp}/old'], '--overwrite'),
    'eval-not-classifier': (['eval', '--classifier={not_classifier}', '--data={data}'], 'not a classifier pickle'),
    'eval-truncated': (['eval', '--classifier={truncated}', '--data={data}'], 'cannot load classifier'),
    'eval-missing': (['eval', '--classifier={tmp}/none.pkl', '--data={data}'], 'cannot load classifier'),
    'eval-other-classes': (['eval', '--classifier={binary}', '--data={three}'], 'predicts normal, abnormal'),
    'eval-bad-rule': ([*EVAL, '--operating-point=magic'], 'magic'),
    'dp-with-synthetic': ([*TRAIN, '--dp', '--dp-noise=1', '--synthetic={tmp}/snap.pkl', '--num=4'], 'protects real'),
    'dp-no-budget': ([*TRAIN, '--dp'], '--dp-epsilon or a noise multiplier'),
    'dp-epsilon-without-dp': ([*TRAIN, '--dp-epsilon=3'], '--dp-epsilon: needs --dp'),
    'dp-epsilon-negative': ([*TRAIN, '--dp', '--dp-epsilon=-3'], '--dp-epsilon'),
    'compare-multiclass': (['compare', '--data={three}', '{multi}', '{multi}'], 'binary classifiers'),
}


def _command(args, inputs, tmp):
    args = [arg.format(tmp=tmp, **inputs) for arg in args]
    if args[0] in ('train', 'eval') and not any(arg.startswith('--outdir=') for arg in args):
        args.append(f'--outdir={tmp}/out')
    return [sys.executable, 'classify.py', *args]


def _snapshot_of(folder):
    return sorted((root, sorted(files)) for root, _dirs, files in os.walk(folder))


@pytest.mark.parametrize('case', list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, inputs, tmp_path):
    args, message = CASES[case]
    (tmp_path / 'a_file.txt').write_text('not a folder')
    (tmp_path / 'old').mkdir()
    (tmp_path / 'old' / 'classifier.pkl').write_bytes(b'keep me')
    (tmp_path / 'snap.pkl').write_bytes(b'never read')
    before = _snapshot_of(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    result = subprocess.run(_command(args, inputs, tmp_path), cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith('Error')]
    assert result.returncode == 2 and len(errors) == 1 and 'Traceback' not in output, output
    assert message in errors[0], errors[0]
    assert _snapshot_of(tmp_path) == before and (tmp_path / 'old' / 'classifier.pkl').read_bytes() == b'keep me'
