"""Bad input to train.py: one line naming the problem, exit code 2, no traceback, nothing written."""

import collections
import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from clinical.classifier import RadiographClassifier, save_classifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
TINY = ['--cfg=cpu', '--channel-base=256', '--channel-max=16', '--batch=4', '--workers=0', '--kimg=0.004']

# ----------------------------------------------------------------------------
# Inputs, made once: good data, broken datasets and broken resume pickles.


def _png(seed):
    buf = io.BytesIO()
    PIL.Image.fromarray(np.random.RandomState(seed).randint(0, 255, [16, 16], dtype=np.uint8)).save(buf, 'PNG')
    return buf.getvalue()


def _zip(path, files, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, 'w', compression) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return str(path)


@pytest.fixture(scope='module')
def inputs(tmp_path_factory, tiny_dataset):
    root = tmp_path_factory.mktemp('bad')
    good = {f'img{i}.png': _png(i) for i in range(8)}
    whole = open(_zip(root / 'whole.zip', good), 'rb').read()
    (root / 'truncated.zip').write_bytes(whole[: len(whole) // 2])
    (root / 'random.zip').write_bytes(np.random.RandomState(0).bytes(4096))
    crc = bytearray(whole)
    crc[whole.index(good['img3.png']) + 60] ^= 0xFF  # Inside a stored member: the zip CRC no longer matches.
    (root / 'crc.zip').write_bytes(bytes(crc))
    damaged = dict(good, **{'img5.png': good['img5.png'][:50] + b'\0' * 20 + good['img5.png'][70:]})
    _zip(root / 'damaged_png.zip', damaged)
    os.makedirs(root / 'empty_folder')
    (root / 'not_a_folder').write_text('keep me')
    pickles = dict(
        int_pkl=pickle.dumps(1), no_networks=pickle.dumps({'G_ema': 1}), truncated_pkl=pickle.dumps([1] * 100)[:20],
        missing_module=pickle.dumps(collections.OrderedDict, protocol=0).replace(b'collections', b'no_such_mod'),
    )  # fmt: skip
    for name, data in pickles.items():
        (root / f'{name}.pkl').write_bytes(data)
    for name, class_names, kind in (
        ('clf', ['normal', 'abnormal'], 'binary'),
        ('other_clf', ['a', 'b', 'c'], 'multiclass'),
        ('multi_clf', ['normal', 'abnormal'], 'multilabel'),
    ):
        torch.manual_seed(0)
        net = RadiographClassifier(class_names, kind, resolution=16, channels=(8, 16))
        save_classifier(str(root / f'{name}.pkl'), net, {})
    named = tiny_dataset(path=root / 'named.zip', class_names=['normal', 'abnormal'])
    return dict(
        root=root, data=tiny_dataset(path=root / 'data.zip'), unlabelled=tiny_dataset(labels=False), named=named
    )


# ----------------------------------------------------------------------------
# The table: (extra args, with {root} and {data} filled in, and a piece of the one error line).

CASES = {
    'kimg nan': (['--kimg=nan'], 'not a finite number'),
    'kimg inf': (['--kimg=inf'], 'not a finite number'),
    'ada-kimg nan': (['--ada-kimg=nan'], 'not a finite number'),
    'gamma nan': (['--gamma=nan'], 'not a finite number'),
    'gamma -inf': (['--gamma=-inf'], '--gamma'),
    'tick nan': (['--tick=nan'], 'not a finite number'),
    'p nan': (['--aug=fixed', '--p=nan'], 'not a finite number'),
    'target inf': (['--target=inf'], '--target'),
    'channel-base 1': (['--channel-base=1'], 'gives no channels'),
    'gpus 3': (['--gpus=3'], 'must be a power of two'),
    'outdir is a file': (['--outdir={root}/not_a_folder'], 'is a file, not a folder'),
    'resume int pickle': (['--resume={root}/int_pkl.pkl'], 'not a network snapshot'),
    'resume no networks': (['--resume={root}/no_networks.pkl'], "no network 'G'"),
    'resume truncated': (['--resume={root}/truncated_pkl.pkl'], 'cannot load snapshot'),
    'resume missing module': (['--resume={root}/missing_module.pkl'], 'No module named'),
    'resume missing file': (['--resume={root}/nope.pkl'], 'no such file'),
    'data missing': (['--data={root}/nope.zip'], 'no such file or directory'),
    'data truncated zip': (['--data={root}/truncated.zip'], 'not a readable zip file'),
    'data random bytes': (['--data={root}/random.zip'], 'not a readable zip file'),
    'data bad CRC': (['--data={root}/crc.zip'], 'img3.png is corrupt'),
    'data damaged PNG': (['--data={root}/damaged_png.zip'], 'img5.png is corrupt'),
    'data empty folder': (['--data={root}/empty_folder'], 'no image files'),
    'cond without labels': (['--data={unlabelled}', '--cond=1'], '--cond'),
    'clinical-loss missing file': (['--cond=1', '--clinical-loss={root}/nope.pkl'], 'nope.pkl: no such file'),
    'clinical-loss not a classifier': (['--cond=1', '--clinical-loss={root}/int_pkl.pkl'], 'not a classifier pickle'),
    'clinical-loss truncated': (['--cond=1', '--clinical-loss={root}/truncated_pkl.pkl'], 'cannot load classifier'),
    'clinical-loss other classes': (
        ['--data={named}', '--cond=1', '--clinical-loss={root}/other_clf.pkl'],
        'predicts a, b, c but the dataset has normal, abnormal',
    ),
    'clinical-loss other head': (
        ['--data={named}', '--cond=1', '--clinical-loss={root}/multi_clf.pkl'],
        'is a multilabel classifier; the labels need binary',
    ),
    'clinical-loss unnamed classes': (['--cond=1', '--clinical-loss={root}/clf.pkl'], 'has no class names'),
    'clinical-loss without cond': (
        ['--data={named}', '--clinical-loss={root}/clf.pkl'],
        '--clinical-loss: needs --cond=1',
    ),
    'clinical-weight nan': (['--clinical-weight=nan'], 'not a finite number'),
    'clinical-weight negative': (['--clinical-weight=-1'], '--clinical-weight'),
    'clinical-weight without loss': (['--clinical-weight=0.5'], 'needs --clinical-loss'),
    'cond-sampling without cond': (['--cond-sampling=balanced'], '--cond-sampling: needs --cond=1'),
    'cond-sampling too long': (['--cond=1', '--cond-sampling=1,2,3'], 'must be 2 non-negative numbers'),
    'cond-sampling negative': (['--cond=1', '--cond-sampling=1,-2'], 'finite non-negative'),
    'cond-sampling nan': (['--cond=1', '--cond-sampling=nan,1'], 'finite non-negative'),
    'cond-sampling all zero': (['--cond=1', '--cond-sampling=0,0'], 'at least one positive weight'),
    'cond-sampling unknown word': (['--cond=1', '--cond-sampling=uniform'], 'expected data, balanced'),
    'dp with ada': (['--dp=1', '--aug=ada'], '--aug: ADA'),
    'dp with data labels': (['--dp=1', '--cond=1', '--cond-sampling=data'], 'cannot follow the private labels'),
    'dp with two ranks': (['--dp=1', '--gpus=2', '--device=cpu'], '--gpus: DP-SGD runs in one process'),
    'dp with mirror': (['--dp=1', '--mirror=1'], '--mirror: flipped copies'),
    'dp-epsilon without dp': (['--dp-epsilon=5'], '--dp-epsilon: needs --dp=1'),
    'dp-noise without dp': (['--dp-noise=1'], '--dp-noise: needs --dp=1'),
    'dp no budget': (['--dp=1'], 'epsilon'),
    'dp-epsilon negative': (['--dp=1', '--dp-epsilon=-1'], '--dp-epsilon: -1.0 is not in the range'),
    'dp-epsilon spent at once': (['--dp=1', '--dp-noise=0.01', '--dp-epsilon=0.1'], 'spent before the first step'),
    'dp-delta too large': (['--dp=1', '--dp-noise=1', '--dp-delta=1.5'], 'delta'),
    'dp clinical classifier not private': (
        ['--data={named}', '--cond=1', '--dp=1', '--dp-noise=1', '--clinical-loss={root}/clf.pkl'],
        'was not trained with DP',
    ),
    'clinical-public without loss': (['--clinical-public=1'], '--clinical-public: needs --clinical-loss'),
}


@pytest.mark.parametrize('case', list(CASES))
def test_bad_input(inputs, case):
    extra, message = CASES[case]
    outdir = inputs['root'] / f'out-{case.replace(" ", "_")}'
    args = [f'--outdir={outdir}', f'--data={inputs["data"]}', *TINY]
    args += [arg.format(root=inputs['root'], unlabelled=inputs['unlabelled'], named=inputs['named']) for arg in extra]
    result = subprocess.run([sys.executable, 'train.py', *args], cwd=REPO, env=ENV, capture_output=True, text=True)
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith('Error')]
    assert result.returncode == 2, output[-2000:]
    assert len(errors) == 1 and message in errors[0].replace("'--", '--').replace("':", ':'), output[-2000:]
    assert 'Traceback' not in output
    assert not outdir.exists()
    assert (inputs['root'] / 'not_a_folder').read_text() == 'keep me'
