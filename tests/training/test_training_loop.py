"""training_loop(): exact resume, ADA, metrics hook, transfer learning from official-format pickles."""

import inspect
import json
import math
import os
import pickle

import numpy as np
import PIL.Image
import pytest
import torch

import dnnlib
from training import checkpoint, reporting
from training import training_loop as tl
from training.loss import StyleGAN2Loss
from training.networks import Generator

# ----------------------------------------------------------------------------
# Helpers. The data (16 labelled 16x16 grayscale images) and the tiny config come from conftest.py.


def load(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def tensors(module):
    return {name: t for name, t in list(module.named_parameters()) + list(module.named_buffers())}


def test_cpu_bf16_run_repeats_exactly_near_fp32(tmp_path, tiny_dataset, tiny_training_kwargs):
    """--cpu-bf16 reaches the networks through the loop: a bf16 run repeats exactly and ends near, not at, fp32."""
    from training import networks

    data = tiny_dataset(path=tmp_path / 'data.zip')
    mixed = dict(channel_base=256, channel_max=16, num_fp16_res=2, conv_clamp=256)
    G_ema = {}
    for name, bf16 in [('fp32', False), ('bf16', True), ('bf16-again', True)]:
        kwargs = tiny_training_kwargs(tmp_path / name, data, cpu_bf16=bf16, total_kimg=0.016)
        kwargs.G_kwargs['synthesis_kwargs'] = mixed
        kwargs.D_kwargs.update(mixed)
        tl.training_loop(**kwargs)
        assert networks.cpu_bfloat16 is False  # Process-wide only while training.
        G_ema[name] = tensors(load(tmp_path / name / 'network-snapshot-000000.016.pkl')['G_ema'])
    for key in G_ema['fp32']:
        assert torch.equal(G_ema['bf16'][key], G_ema['bf16-again'][key]), key
    weights = [key for key, value in G_ema['fp32'].items() if value.is_floating_point() and 'weight' in key]
    assert any(not torch.equal(G_ema['bf16'][key], G_ema['fp32'][key]) for key in weights)
    for key in weights:
        torch.testing.assert_close(G_ema['bf16'][key], G_ema['fp32'][key], rtol=0.05, atol=0.05)


# ----------------------------------------------------------------------------
# Exact resume: snapshot at kimg 0.012, resume to 0.032 == uninterrupted run to 0.032.


@pytest.fixture(scope='module')
def uninterrupted_run(tmp_path_factory, tiny_dataset, tiny_training_kwargs):
    root = tmp_path_factory.mktemp('loop')
    data = tiny_dataset(path=root / 'data.zip', class_names=['left', 'right'])
    calls = []

    def toy_metric(G, **context):
        calls.append(context['snapshot_pkl'])
        return {'toy_mean_w': float(G.mapping.w_avg.mean())}

    torch.use_deterministic_algorithms(True)
    try:
        tl.training_loop(**tiny_training_kwargs(root / 'a', data, metrics=[toy_metric]))
    finally:
        torch.use_deterministic_algorithms(False)
    return dnnlib.EasyDict(root=root, data=data, run_dir=root / 'a', metric_calls=calls)


def test_run_writes_snapshots_grids_and_finite_stats(uninterrupted_run):
    run_dir = uninterrupted_run.run_dir
    names = sorted(os.listdir(run_dir))
    tags = ['000000.004', '000000.012', '000000.020', '000000.028', '000000.032']
    assert [f'network-snapshot-{tag}.pkl' for tag in tags] == [n for n in names if n.startswith('network-')]
    assert {'reals.png', 'fakes_init.png', 'fakes000000.004.png', 'fakes000000.032.png', 'stats.jsonl'} <= set(names)
    assert PIL.Image.open(run_dir / 'reals.png').mode == 'L'
    lines = [json.loads(line) for line in open(run_dir / 'stats.jsonl')]
    assert len(lines) == 5
    for key in ('Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty', 'Loss/pl_penalty'):
        assert all(math.isfinite(line[key]['mean']) for line in lines if key in line)
    assert sum(key in line for line in lines for key in ('Loss/r1_penalty', 'Loss/pl_penalty')) >= 2
    snapshot = load(run_dir / 'network-snapshot-000000.032.pkl')
    assert {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs', 'resume_state'} <= set(snapshot)
    assert snapshot['dataset_info']['class_names'] == ['left', 'right'] and snapshot['loss_terms'] == {}
    assert snapshot['resume_state']['cur_nimg'] == 32 and snapshot['resume_state']['batch_idx'] == 8


def test_metrics_hook_runs_at_each_network_snapshot(uninterrupted_run):
    assert len(uninterrupted_run.metric_calls) == 5
    lines = [json.loads(line) for line in open(uninterrupted_run.run_dir / 'metric-toy_metric.jsonl')]
    assert [line['snapshot_pkl'] for line in lines][-1] == 'network-snapshot-000000.032.pkl'
    assert math.isfinite(lines[-1]['results']['toy_mean_w'])


def test_resume_is_exact(uninterrupted_run, tiny_training_kwargs, capsys):
    run = uninterrupted_run
    middle = run.run_dir / 'network-snapshot-000000.012.pkl'
    torch.use_deterministic_algorithms(True)
    try:
        tl.training_loop(**tiny_training_kwargs(run.root / 'b', run.data, resume_pkl=str(middle)))
    finally:
        torch.use_deterministic_algorithms(False)
    assert 'Continuing at kimg 0.012 (tick 2, batch 3, augment p' in capsys.readouterr().out
    a = load(run.run_dir / 'network-snapshot-000000.032.pkl')
    b = load(run.root / 'b' / 'network-snapshot-000000.032.pkl')
    for name in ('G', 'D', 'G_ema', 'augment_pipe'):
        ta, tb = tensors(a[name]), tensors(b[name])
        assert ta.keys() == tb.keys()
        for key in ta:
            assert torch.equal(ta[key], tb[key]), f'{name}.{key} differs after resume'
    assert a['resume_state']['augment_p'] == b['resume_state']['augment_p'] > 0  # ADA moved p (target 0).
    assert torch.equal(a['resume_state']['loss']['pl_mean'], b['resume_state']['loss']['pl_mean'])
    assert a['resume_state']['batch_idx'] == b['resume_state']['batch_idx']


# ----------------------------------------------------------------------------
# Transfer learning: official-format pickle (no resume_state), with and without a c_dim change.


def _official_pickle(run, path):
    snapshot = load(run.run_dir / 'network-snapshot-000000.012.pkl')
    keys = ('G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs')
    with open(path, 'wb') as f:
        pickle.dump({key: snapshot[key] for key in keys}, f)
    return str(path), snapshot


def test_official_pickle_resumes_as_transfer_learning(uninterrupted_run, tiny_training_kwargs):
    run = uninterrupted_run
    pkl, snapshot = _official_pickle(run, run.root / 'official.pkl')
    defaults = {key: param.default for key, param in inspect.signature(tl.training_loop).parameters.items()}
    opts = dnnlib.EasyDict(defaults, **tiny_training_kwargs(run.root / 'c', run.data, resume_pkl=pkl))
    training_set = dnnlib.util.construct_class_by_name(**opts.training_set_kwargs)
    nets = tl.setup_networks(opts, training_set, torch.device('cpu'))
    assert checkpoint.load_networks(opts, nets) is None  # No resume_state -> start at kimg 0.
    for name in ('G', 'D', 'G_ema'):
        for key, value in tensors(snapshot[name]).items():
            assert torch.equal(tensors(nets[name])[key], value), f'{name}.{key} not copied'


def test_c_dim_change_reports_reinitialised_params(uninterrupted_run, tiny_training_kwargs, capsys):
    run = uninterrupted_run
    pkl, _snapshot = _official_pickle(run, run.root / 'official2.pkl')
    unconditional = dict(class_name='training.dataset.ImageFolderDataset', path=run.data, use_labels=False)
    kwargs = tiny_training_kwargs(
        run.root / 'd', run.data, resume_pkl=pkl, training_set_kwargs=unconditional, total_kimg=0.004
    )
    tl.training_loop(**kwargs)
    out = capsys.readouterr().out
    assert 'Re-initialised' in out and 'of G (missing or shape differs): mapping.fc0.weight' in out
    assert 'of D (missing or shape differs)' in out
    assert 'Continuing at' not in out and 'kimg 0.004' in out
    assert load(run.root / 'd' / 'network-snapshot-000000.004.pkl')['G'].c_dim == 0


# ----------------------------------------------------------------------------
# ADA: a discriminator that is always sure reals are real pushes p up; one that is never sure keeps p at 0.


class _ConstantD(torch.nn.Module):
    def __init__(self, logit):
        super().__init__()
        self.logit = torch.nn.Parameter(torch.tensor(float(logit)))

    def forward(self, img, c):
        return self.logit.expand(img.shape[0], 1) + img.mean([1, 2, 3])[:, None] * 0


@pytest.mark.parametrize('logit, expected_p', [(3.0, 2 * 4 * 4 / 100), (-3.0, 0.0)])
def test_ada_p_follows_real_sign(logit, expected_p):
    torch.manual_seed(0)
    G = Generator(
        16, 0, 16, 16, 1, mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=128, channel_max=8)
    )
    D = _ConstantD(logit).requires_grad_(False)
    pipe = dnnlib.util.construct_class_by_name(class_name='training.augment.AugmentPipe', xflip=1)
    pipe.p.zero_()
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis.requires_grad_(False), D, augment_pipe=pipe)
    opts = dnnlib.EasyDict(ada_target=0.6, ada_interval=4, ada_kimg=0.1, batch_size=4, num_gpus=1)
    real, c, z = torch.zeros([4, 1, 16, 16]), torch.zeros([4, 0]), torch.randn([4, 16])
    for batch_idx in range(1, 9):
        D.requires_grad_(True)
        loss.accumulate_gradients('Dmain', real, c, z, c, sync=True, gain=1)
        D.requires_grad_(False)
        tl.maybe_update_ada(pipe, loss, opts, batch_idx)
    assert float(pipe.p) == pytest.approx(expected_p)


# ----------------------------------------------------------------------------
# Small helpers.


def test_kimg_tag_and_seeding():
    assert checkpoint.kimg_tag(4000, 4) == '000004' and checkpoint.kimg_tag(4012, 4) == '000004'
    assert checkpoint.kimg_tag(16, 0.008) == '000000.016' and checkpoint.kimg_tag(1016, 0.5) == '000001.016'
    tl.set_random_seed(3, 0, 128)
    a = (torch.rand(3), np.random.rand(), torch.randint(9, [4]))
    tl.set_random_seed(3, 0, 128)
    b = (torch.rand(3), np.random.rand(), torch.randint(9, [4]))
    tl.set_random_seed(3, 1, 128)
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and not torch.equal(torch.rand(3), a[0])


def test_save_image_grid_modes(tmp_path):
    gray = np.linspace(-1, 1, 6 * 1 * 4 * 4).reshape(6, 1, 4, 4)
    reporting.save_image_grid(gray, tmp_path / 'g.png', drange=[-1, 1], grid_size=(3, 2))
    image = PIL.Image.open(tmp_path / 'g.png')
    assert image.mode == 'L' and image.size == (12, 8)
    assert np.asarray(image)[0, 0] == 0 and np.asarray(image)[-1, -1] == 255
    reporting.save_image_grid(np.zeros([4, 3, 4, 4]), tmp_path / 'c.png', drange=[0, 1], grid_size=(2, 2))
    assert PIL.Image.open(tmp_path / 'c.png').mode == 'RGB'


# ----------------------------------------------------------------------------
