"""export.py + training.release: a safetensors release draws the same images as the snapshot's G_ema, loads
without pickle, holds no discriminator, optimizer state or path, and is a small fraction of the snapshot."""

import json
import os
import pickle

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from click.testing import CliRunner

import export
import generate
from training import checkpoint, release, training_loop

CLASS_NAMES = ['normal', 'abnormal']

# ----------------------------------------------------------------------------
# One conditional snapshot (two named classes, 16x16 grayscale) from a single tick, and its release.


@pytest.fixture(scope='module')
def snapshot(tmp_path_factory, tiny_dataset, tiny_training_kwargs):
    root = tmp_path_factory.mktemp('export')
    data = tiny_dataset(8, path=root / 'data.zip', class_names=CLASS_NAMES)
    training_loop.training_loop(**tiny_training_kwargs(root, data, total_kimg=0.004, kimg_per_tick=1))
    return str(root / 'network-snapshot-000000.pkl')


@pytest.fixture(scope='module')
def release_file(snapshot):
    dest = os.path.join(os.path.dirname(snapshot), 'G.safetensors')
    result = CliRunner().invoke(export.main, [f'--network={snapshot}', f'--dest={dest}'], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return dest


def _no_pickle(*args, **kwargs):
    raise AssertionError('pickle used while loading a release')


# ----------------------------------------------------------------------------


@pytest.mark.parametrize('psi, noise_mode', [(1, 'const'), (0.7, 'const'), (0.7, 'random')])
def test_release_draws_the_same_images_as_the_snapshot(snapshot, release_file, psi, noise_mode):
    G_pkl = checkpoint.load_snapshot(snapshot)['G_ema'].eval()
    G_rel, config = release.load_release(release_file)
    seeds = [0, 1, 2, 7, 100]
    for class_idx in range(2):
        label = generate.one_hot(class_idx, 2)
        expected = generate.generate_images(G_pkl, seeds, label, psi, noise_mode)
        assert np.array_equal(generate.generate_images(G_rel, seeds, label, psi, noise_mode), expected)
    assert config.class_names == CLASS_NAMES


def test_release_loads_with_safetensors_alone(snapshot, release_file, monkeypatch):
    for name in ('load', 'loads', 'Unpickler'):
        monkeypatch.setattr(pickle, name, _no_pickle)
    G, config = release.load_release(release_file)
    tensors = safetensors.torch.load_file(release_file)
    with safetensors.safe_open(release_file, framework='pt') as f:
        metadata = f.metadata()
    monkeypatch.undo()
    G_pkl = checkpoint.load_snapshot(snapshot)['G_ema']
    expected = G_pkl.state_dict()
    assert sorted(tensors) == sorted(expected) and 'mapping.w_avg' in tensors  # Parameters and buffers.
    assert any(name.endswith('noise_const') for name in tensors) and any('resample_filter' in n for n in tensors)
    assert all(torch.equal(tensors[name], expected[name]) for name in expected)
    assert metadata['format'] == 'spinegan-release' and json.loads(metadata['config']) == dict(config)
    assert not any(p.requires_grad for p in G.parameters()) and not G.training


def test_release_is_small_and_holds_no_discriminator_or_path(snapshot, release_file):
    # A snapshot holds G, D, G_ema and Adam's two moments of G and D: about 7x G_ema's tensors at any size
    # (0.14 for the cpu and paper256 configs), so 1/6 is the bound; the rest of the release is a small header.
    G_bytes = sum(
        t.numel() * t.element_size() for t in checkpoint.load_snapshot(snapshot)['G_ema'].state_dict().values()
    )
    assert os.path.getsize(release_file) < os.path.getsize(snapshot) / 6
    assert G_bytes < os.path.getsize(release_file) < G_bytes + 8192
    with safetensors.safe_open(release_file, framework='pt') as f:
        names, metadata = list(f.keys()), f.metadata()
    assert all(name.startswith(('mapping.', 'synthesis.')) for name in names)  # G only: no D, no optimizer.
    text = json.dumps(metadata)
    assert os.path.dirname(snapshot) not in text and 'data.zip' not in text and 'path' not in text
    config = json.loads(metadata['config'])
    assert set(config) == {'format', 'format_version', 'generator', 'c_dim', 'z_dim', 'img_resolution',
                           'img_channels', 'class_names', 'label_schema', 'dp'}  # fmt: skip
    assert (config['c_dim'], config['img_resolution'], config['img_channels']) == (2, 16, 1)
    assert config['format_version'] == release.FORMAT_VERSION and config['dp'] is None


def test_generate_cli_reads_a_release(snapshot, release_file, tmp_path):
    for network, name in ((release_file, 'rel'), (snapshot, 'pkl')):
        args = [f'--network={network}', '--seeds=3-5', '--class=abnormal', '--grid', f'--outdir={tmp_path / name}']
        result = CliRunner().invoke(generate.main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert ('release' in result.output) == (name == 'rel') and ('snapshot' in result.output) == (name == 'pkl')
    assert (tmp_path / 'rel' / 'grid.png').read_bytes() == (tmp_path / 'pkl' / 'grid.png').read_bytes()


def test_dp_record_is_carried_and_overwrite_replaces(snapshot, tmp_path):
    data = checkpoint.load_snapshot(snapshot)
    dp = dict(noise_multiplier=1.1, max_grad_norm=1.0, delta=1e-5, epsilon=np.float64(8.5), steps=(1, 2))
    data['privacy'] = dp
    dest = str(tmp_path / 'dp.safetensors')
    release.save_release(data['G_ema'], release.snapshot_info(data), dest)
    _G, config = release.load_release(dest)
    assert config.dp == dict(dp, epsilon=8.5, steps=[1, 2]) and config.class_names == CLASS_NAMES
    result = CliRunner().invoke(export.main, [f'--network={snapshot}', f'--dest={dest}', '--overwrite'])
    assert result.exit_code == 0, result.output
    assert release.load_release(dest)[1].dp is None


# ----------------------------------------------------------------------------
