"""generate.py: grid from a snapshot in a fresh process, classes by index/name/vector, per-seed determinism, and
lesion-type conditioning end to end (phantom dataset -> train.py --cond=1 -> generate.py --class by name)."""

import os
import pickle
import subprocess
import sys

import click
import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import generate
import train
from clinical.labels import SCHEMAS
from training import checkpoint, release, training_loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------
# One conditional snapshot (two named classes, 16x16 grayscale) from a single training step.


@pytest.fixture(scope='module')
def snapshot(tmp_path_factory, tiny_dataset, tiny_training_kwargs):
    root = tmp_path_factory.mktemp('gen')
    flat = lambda i, size, rnd: np.full([size, size], i * 30, np.uint8)
    data = tiny_dataset(8, path=root / 'data.zip', image=flat, names='img{i}.png', class_names=['normal', 'abnormal'])
    training_loop.training_loop(**tiny_training_kwargs(root, data, total_kimg=0.004, kimg_per_tick=1))
    return str(root / 'network-snapshot-000000.pkl')


def _run(args):
    return CliRunner().invoke(generate.main, args, catch_exceptions=False)


# ----------------------------------------------------------------------------


def test_grid_in_fresh_process_and_classes_differ(snapshot, tmp_path):
    cmd = [sys.executable, 'generate.py', f'--network={snapshot}', '--seeds=0-5', '--class=0', '--grid']
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    result = subprocess.run([*cmd, f'--outdir={tmp_path / "c0"}'], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    grid0 = PIL.Image.open(tmp_path / 'c0' / 'grid.png')
    assert grid0.mode == 'L' and grid0.size == (3 * 16, 2 * 16)

    assert (
        _run(
            [f'--network={snapshot}', '--seeds=0-5', '--class=abnormal', '--grid', f'--outdir={tmp_path / "c1"}']
        ).exit_code
        == 0
    )
    assert (
        _run([f'--network={snapshot}', '--seeds=0-5', '--class=1', '--grid', f'--outdir={tmp_path / "i1"}']).exit_code
        == 0
    )
    grid1 = np.asarray(PIL.Image.open(tmp_path / 'c1' / 'grid.png'))
    assert np.array_equal(grid1, np.asarray(PIL.Image.open(tmp_path / 'i1' / 'grid.png')))  # Name == index.
    assert np.abs(grid1.astype(int) - np.asarray(grid0).astype(int)).mean() > 0.5  # Other class, other images.


def test_one_png_per_seed(snapshot, tmp_path):
    result = _run([f'--network={snapshot}', '--seeds=3,7-8', '--class=0,1', f'--outdir={tmp_path}'])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path)) == ['seed0003.png', 'seed0007.png', 'seed0008.png']
    image = PIL.Image.open(tmp_path / 'seed0007.png')
    assert image.mode == 'L' and image.size == (16, 16)


@pytest.mark.parametrize('noise_mode', ['const', 'random'])
def test_images_do_not_depend_on_batch_size(snapshot, noise_mode):
    G, _data = generate.load_network(snapshot, torch.device('cpu'))
    label = generate.one_hot(1, G.c_dim)
    one = generate.generate_images(G, [5, 6, 9], label, noise_mode=noise_mode, batch_size=1)
    three = generate.generate_images(G, [9, 5, 6], label, noise_mode=noise_mode, batch_size=3)
    assert one.shape == (3, 16, 16, 1) and one.dtype == np.uint8
    assert np.abs(one.astype(int) - three[[1, 2, 0]].astype(int)).max() <= 1


def test_class_names_come_from_the_snapshot(snapshot):
    with open(snapshot, 'rb') as f:
        data = pickle.load(f)
    assert release.snapshot_info(data)['class_names'] == ['normal', 'abnormal']
    del data['dataset_info']  # Official-format pickle: fall back to the training set's dataset.json.
    assert release.snapshot_info(data)['class_names'] == ['normal', 'abnormal']


@pytest.mark.parametrize(
    'spec, c_dim, message',
    [
        ('5', 2, 'class index 5 out of range [0, 1]'),
        ('0,1,0', 2, 'label vector has 3 entries, network needs 2'),
        ('fracture', 2, "unknown class 'fracture'"),
        ('0', 0, 'the network is unconditional'),
        (None, 2, 'the network is conditional'),
    ],
)
def test_bad_class_specs(spec, c_dim, message):
    with pytest.raises(click.BadParameter, match=message.replace('[', r'\[').replace(']', r'\]')):
        generate.make_label(spec, c_dim, ['normal', 'abnormal'])


def test_label_vectors_and_seed_ranges():
    np.testing.assert_array_equal(generate.make_label('0,1,0,0,1,0,0,0', 8, None), [0, 1, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(generate.make_label('Normal', 2, ['normal', 'abnormal']), [1, 0])
    assert generate.parse_range('0-3,10, 12-12') == [0, 1, 2, 3, 10, 12]
    for bad in ('a-b', '5-2', ''):
        with pytest.raises(click.BadParameter):
            generate.parse_range(bad)


def test_bad_network_path_is_a_usage_error(tmp_path):
    (tmp_path / 'junk.pkl').write_bytes(b'not a pickle')
    for path in (tmp_path / 'junk.pkl', tmp_path / 'missing.pkl'):
        result = CliRunner().invoke(generate.main, [f'--network={path}', '--seeds=0', f'--outdir={tmp_path}'])
        assert result.exit_code == 2 and 'Traceback' not in result.output


# ----------------------------------------------------------------------------
# Lesion types end to end: dataset_tool.py --labels lesion (one-hot) / lesion-multi (multi-hot) on the phantom,
# a few conditional ticks with balanced fake labels, then generate.py --class by lesion name(s).

TINY = ['--cfg=cpu', '--channel-base=256', '--channel-max=16', '--batch=4', '--workers=0', '--tick=0.004', '--snap=1']


@pytest.mark.parametrize(
    'labels, spec, expected',
    [('lesion', 'osteophytes', [3]), ('lesion-multi', 'Osteophytes,Surgical implant', [3, 5])],
)
def test_lesion_conditioning_end_to_end(tmp_path, labels, spec, expected):
    data, outdir = tmp_path / 'phantom.zip', tmp_path / 'runs'
    tool = ['dataset_tool.py', '--source', 'phantom:24', '--dest', str(data), '--resolution', '16', '--labels', labels]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, *tool], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    args = [f'--outdir={outdir}', f'--data={data}', '--cond=1', '--cond-sampling=balanced', '--kimg=0.008', *TINY]
    result = CliRunner().invoke(train.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_name,) = os.listdir(outdir)
    assert run_name.startswith('00000-phantom-cond-condbalanced-cpu')
    snapshot = str(outdir / run_name / 'network-snapshot-000000.008.pkl')
    data_info = checkpoint.load_snapshot(snapshot)['dataset_info']
    assert data_info['class_names'] == SCHEMAS[labels] and data_info['label_schema'] == labels
    assert data_info['label_dim'] == 8

    assert generate.make_label(spec, 8, SCHEMAS[labels]).nonzero()[0].tolist() == expected
    for name, class_spec in (('lesion', spec), ('normal', 'No finding')):
        result = _run([f'--network={snapshot}', '--seeds=0-1', f'--class={class_spec}', f'--outdir={tmp_path / name}'])
        assert result.exit_code == 0, result.output
        assert sorted(os.listdir(tmp_path / name)) == ['seed0000.png', 'seed0001.png']
    lesion, normal = (np.asarray(PIL.Image.open(tmp_path / name / 'seed0000.png')) for name in ('lesion', 'normal'))
    assert lesion.shape == (16, 16) and not np.array_equal(lesion, normal)  # The label steers the generator.


# ----------------------------------------------------------------------------
