"""DP-SGD (clinical/dp.py): exact per-sample gradients, clipping, noise, the ablation arms, accounting, and private
runs of the training loop (epsilon in snapshots and generate's output, the budget stop, exact resume, nothing else
reading the data)."""

import json
import math
import os
import pickle

import numpy as np
import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from clinical import dp
from clinical.synthetic import load_network
from torch_utils import misc
from torch_utils.ops import conv2d_gradfix, fma
from training import training_loop as tl
from training.data_policy import PrivateDataPolicy
from training.networks import Discriminator

# ----------------------------------------------------------------------------
# Per-sample gradients (torch.func) == a loop of batch-of-1 autograd passes, in float64.


def _double_discriminator(c_dim):
    torch.manual_seed(0)
    D = Discriminator(c_dim=c_dim, img_resolution=16, img_channels=1, channel_base=256, channel_max=16,
                      conv_clamp=256, epilogue_kwargs=dict(mbstd_num_channels=0)).double()  # fmt: skip
    for name, buffer in D.named_buffers():
        if 'filter' in name:  # FIR filters stay float32 (the resampling ops' contract).
            buffer.data = buffer.data.float()
    return D.requires_grad_(True)


def _loop_gradients(D, images, labels, r1_weight):
    rows = []
    for img, c in zip(images, labels):
        img = img[None].clone().requires_grad_(r1_weight > 0)
        logit = D(img, c[None])
        loss = torch.nn.functional.softplus(-logit).sum()
        if r1_weight:
            (img_grad,) = torch.autograd.grad(logit.sum(), img, create_graph=True)
            loss = loss + r1_weight * img_grad.square().sum()
        rows.append(torch.autograd.grad(loss, list(D.parameters())))
    return {name: torch.stack([row[i] for row in rows]) for i, (name, _) in enumerate(D.named_parameters())}


@pytest.mark.parametrize('c_dim', [0, 3])
@pytest.mark.parametrize('r1_weight', [0.0, 2.5])
def test_per_sample_gradients_equal_a_batch_of_one_loop(c_dim, r1_weight):
    D = _double_discriminator(c_dim)
    images = torch.randn([5, 1, 16, 16], dtype=torch.float64)
    labels = torch.eye(max(c_dim, 1), dtype=torch.float64)[torch.arange(5) % max(c_dim, 1)][:, :c_dim]
    grads = dp.per_sample_gradients(D, dp._real_loss(r1_weight), images, labels, chunk_size=2)
    expected = _loop_gradients(D, images, labels, r1_weight)
    assert grads.keys() == expected.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-10, atol=1e-13, msg=name)


def test_per_sample_gradients_in_cpu_bfloat16_stay_near_fp32(monkeypatch):
    """train.py's CPU bfloat16 blocks under --dp: each example's gradient, and its norm that clipping reads, stays
    near fp32's. The CPU FIR matrices are first made inside the transforms here; made as wrapped tensors, their
    reuse one level deeper (R1's input gradient) failed in bfloat16."""
    from torch_utils.ops import upfirdn2d
    from training import networks

    upfirdn2d._axis_matrices.cache_clear()
    torch.manual_seed(0)
    D = Discriminator(c_dim=3, img_resolution=16, img_channels=1, channel_base=256, channel_max=16, num_fp16_res=2,
                      conv_clamp=256, epilogue_kwargs=dict(mbstd_num_channels=0)).requires_grad_(True)  # fmt: skip
    images, labels = torch.randn([6, 1, 16, 16]), torch.eye(3)[torch.arange(6) % 3]
    rows = {}
    for bf16 in (False, True):
        monkeypatch.setattr(networks, 'cpu_bfloat16', bf16)
        grads = dp.per_sample_gradients(D, dp._real_loss(2.5), images, labels, chunk_size=3)
        rows[bf16] = torch.cat([g.flatten(1) for g in grads.values()], dim=1)
    rows32, rows16 = rows[False], rows[True]
    assert not torch.equal(rows16, rows32)  # bfloat16 really ran.
    assert torch.nn.functional.cosine_similarity(rows16, rows32, dim=1).min() >= 0.99
    torch.testing.assert_close(rows16.norm(dim=1), rows32.norm(dim=1), rtol=0.05, atol=0)


def test_ops_take_their_reference_paths_under_torch_func(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    weight, seen = torch.randn([2, 3], requires_grad=True), []
    torch.func.vmap(lambda row: seen.append((misc.functorch_transform_active(), _use_custom(weight))) or row)(weight)
    assert seen == [(True, False)]  # Inside vmap: the transform is seen and the custom autograd.Function not used.
    assert not misc.functorch_transform_active() and _use_custom(weight)
    a, b, c = torch.randn([3, 4, 5], dtype=torch.float64)
    torch.testing.assert_close(torch.func.vmap(fma.fma)(a, b, c), a * b + c)


def _use_custom(weight):
    return conv2d_gradfix._use_custom_op(weight)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_per_sample_gradients_on_cuda_match_the_fused_ops_loop():
    torch.manual_seed(0)
    D = Discriminator(c_dim=3, img_resolution=16, img_channels=1, channel_base=256, channel_max=16, conv_clamp=256,
                      epilogue_kwargs=dict(mbstd_num_channels=0)).cuda().requires_grad_(True)  # fmt: skip
    images, labels = torch.randn([6, 1, 16, 16], device='cuda'), torch.eye(3, device='cuda')[torch.arange(6) % 3]
    grads = dp.per_sample_gradients(D, dp._real_loss(2.5), images, labels)  # Reference ops inside vmap.
    expected = _loop_gradients(D, images, labels, 2.5)  # Fused CUDA kernels where they apply.
    for name in grads:
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-3, atol=1e-5, msg=name)


def test_rows_of_one_patient_are_summed_into_one_unit():
    grads = {'w': torch.arange(12.0).reshape(4, 3)}
    summed = dp.sum_by_unit(grads, torch.tensor([0, 1, 0, 2]), 3)['w']
    torch.testing.assert_close(summed, torch.tensor([[6.0, 8, 10], [3, 4, 5], [9, 10, 11]]))
    sampler = dp.UnitSampler(4, ['p1', 'p2', 'p1', 'p3'], sample_rate=1.0)
    items, rows = sampler.sample()
    assert sorted(items) == [0, 1, 2, 3] and len(set(rows)) == 3
    assert rows[items.index(0)] == rows[items.index(2)] != rows[items.index(1)]


# ----------------------------------------------------------------------------
# The DP step on hand-made per-sample gradients: clipping bound, noise level, the clip-only and noise-only arms.


def _plan(mode='full', noise=0.0, clip=1.0, batch_size=4):
    return dp.plan_privacy(100, 100, batch_size, steps=10, mode=mode, noise=noise, clip=clip, accountant='rdp')


def _step(plan, rows, lr=1.0):
    """One DP step of SGD(lr) on a zero parameter; returns the update's negative (= the gradient used)."""
    param = torch.nn.Parameter(torch.zeros(rows.shape[1:], dtype=torch.float64))
    optimizer = dp.make_dp_optimizer(torch.optim.SGD([param], lr=lr), plan)
    dp.take_dp_step(optimizer, {'w': param}, {'w': rows})
    return -param.detach()


def test_each_clipped_contribution_has_norm_at_most_c():
    rows = torch.tensor([[0.3, 0.4], [30.0, 40.0], [0.0, 500.0]], dtype=torch.float64)
    plan = _plan(clip=2.0, batch_size=1)
    for row in rows:
        contribution = _step(plan, row[None])
        assert contribution.norm() <= 2.0 + 1e-9
    torch.testing.assert_close(_step(plan, rows[:1]), rows[0])  # Below C: unchanged.
    torch.testing.assert_close(_step(plan, rows[1:2]).norm(), torch.tensor(2.0, dtype=torch.float64), rtol=1e-5, atol=0)


def test_noise_std_on_a_zero_gradient_is_sigma_c_over_b():
    torch.manual_seed(0)
    sigma, clip, batch = 1.5, 0.5, 8
    update = _step(_plan(noise=sigma, clip=clip, batch_size=batch), torch.zeros([3, 200_000], dtype=torch.float64))
    assert update.std().item() == pytest.approx(sigma * clip / batch, rel=0.01)
    assert abs(update.mean().item()) < 5 * sigma * clip / batch / math.sqrt(200_000)


def test_clip_only_adds_no_noise_and_noise_only_clips_nothing():
    plan = _plan(mode='clip-only', noise=3.0)
    assert plan['sigma'] == 0 and plan['planned_epsilon'] == math.inf
    assert torch.count_nonzero(_step(plan, torch.zeros([4, 1000], dtype=torch.float64))) == 0
    rows = torch.tensor([[30.0, 40.0], [0.0, -500.0]], dtype=torch.float64)
    torch.testing.assert_close(_step(_plan(mode='noise-only', noise=0.0, batch_size=2), rows), rows.sum(0) / 2)
    torch.manual_seed(0)  # Same noise level as the full arm: sigma * C.
    zeros = torch.zeros([2, 100_000], dtype=torch.float64)
    assert _step(_plan(mode='noise-only', noise=2.0, batch_size=1), zeros).std().item() == pytest.approx(2.0, rel=0.02)


# ----------------------------------------------------------------------------
# Private vs vanilla from one seed (opacus' privacy_engine_test): with no noise and no clipping the DP step's
# gradient is the ordinary mean-loss gradient; with clipping or noise it differs.


def test_private_step_equals_vanilla_without_noise_and_clipping():
    D = _double_discriminator(3)
    torch.manual_seed(1)
    reals, fakes = torch.randn([2, 4, 1, 16, 16], dtype=torch.float64)
    labels = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]]
    softplus = torch.nn.functional.softplus
    loss = softplus(-D(reals, labels)).mean() + softplus(D(fakes, labels)).mean()
    vanilla = torch.autograd.grad(loss, list(D.parameters()))
    real_rows = dp.per_sample_gradients(D, dp._real_loss(0.0), reals, labels)
    fake_rows, _logits = dp.per_sample_gradients(D, dp._fake_loss, fakes, labels, has_aux=True)
    rows = {name: torch.cat([real_rows[name], fake_rows[name]]) for name in real_rows}

    def private(plan):
        torch.manual_seed(2)
        params = {name: torch.nn.Parameter(torch.zeros_like(p)) for name, p in D.named_parameters()}
        optimizer = dp.make_dp_optimizer(torch.optim.SGD(params.values(), lr=1.0), plan)
        dp.take_dp_step(optimizer, params, rows)
        return [-p.detach() for p in params.values()]

    for a, b in zip(private(_plan(mode='noise-only', noise=0.0)), vanilla):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    for plan in (_plan(mode='full', noise=0.0, clip=1e-3), _plan(mode='noise-only', noise=1.0)):
        assert any(not torch.allclose(a, b) for a, b in zip(private(plan), vanilla))


# ----------------------------------------------------------------------------
# Accounting against opacus' own accountants; the budget's sigma and its stopping step.


@pytest.mark.parametrize('accountant', ['rdp', 'prv'])
def test_epsilon_equals_opacus_accountant(accountant):
    q, sigma, steps, delta = 0.01, 1.1, 300, 1e-5
    reference = RDPAccountant() if accountant == 'rdp' else PRVAccountant()
    for _ in range(steps):
        reference.step(noise_multiplier=sigma, sample_rate=q)
    expected = reference.get_epsilon(delta)
    assert dp.epsilon_of([(sigma, q, steps)], delta, accountant) == pytest.approx(expected, rel=1e-6)
    assert dp.epsilon_of([(0.0, q, steps)], delta, accountant) == math.inf


def test_plan_for_a_budget_uses_opacus_sigma_and_stops_at_the_budget():
    plan = dp.plan_privacy(2000, 2000, 16, 400, epsilon=4.0, accountant='rdp')
    assert plan['sigma'] == get_noise_multiplier(target_epsilon=4.0, target_delta=5e-5, sample_rate=0.008, steps=400)
    assert plan['delta'] == 5e-5 < 1 / 2000 and 4.0 - 0.01 <= plan['planned_epsilon'] <= 4.0
    last = plan['max_steps']
    assert last >= 400
    assert dp.epsilon_of([(plan['sigma'], 0.008, last)], plan['delta'], 'rdp') <= 4.0
    assert dp.epsilon_of([(plan['sigma'], 0.008, last + 1)], plan['delta'], 'rdp') > 4.0


def test_an_earlier_dp_training_is_composed_into_the_budget():
    classifier = dp.release_record(dp.plan_privacy(2000, 2000, 64, 300, noise=1.0, accountant='rdp'), 300)
    alone = dp.plan_privacy(2000, 2000, 16, 400, epsilon=6.0, accountant='rdp')
    composed = dp.plan_privacy(2000, 2000, 16, 400, epsilon=6.0, accountant='rdp', prior=[classifier])
    assert composed['sigma'] > alone['sigma'] and composed['planned_epsilon'] <= 6.0
    record = dp.release_record(composed, 400)
    assert len(record['history']) == 2 and record['composed_with'] == [classifier]
    assert record['epsilon'] > dp.epsilon_of([(composed['sigma'], 0.008, 400)], record['delta'], 'rdp')
    with pytest.raises(ValueError, match='already spends'):
        dp.plan_privacy(2000, 2000, 16, 400, epsilon=classifier['epsilon'] / 2, accountant='rdp', prior=[classifier])


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(), 'give a target --dp-epsilon or a noise multiplier'),
        (dict(noise=1.0, mode='half'), '--dp-mode'),
        (dict(noise=1.0, accountant='gdp'), '--dp-accountant'),
        (dict(noise=1.0, delta=2.0), '--dp-delta'),
        (dict(epsilon=1e-4, noise=0.1), 'spent before the first step'),
    ],
)
def test_bad_plans_name_the_flag(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dp.plan_privacy(100, 100, 4, 10, **kwargs)


# ----------------------------------------------------------------------------
# Private runs of the training loop on the tiny dataset (conftest.py).


def _private_kwargs(tiny_training_kwargs, run_dir, data, plan, **overrides):
    kwargs = tiny_training_kwargs(run_dir, data, is_private=True, cond_sampling='balanced', D_reg_interval=None,
                                  ada_target=None, augment_p=0.25, **overrides)  # fmt: skip
    kwargs.D_kwargs = dict(kwargs.D_kwargs, epilogue_kwargs=dict(mbstd_num_channels=0))
    kwargs.D_step_kwargs = dict(class_name='clinical.dp.DPDiscriminatorStep', privacy=plan, r1_interval=3,
                                training_set_kwargs=kwargs.training_set_kwargs)  # fmt: skip
    return kwargs


def _load(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


@pytest.fixture(scope='module')
def private_run(tmp_path_factory, tiny_dataset, tiny_training_kwargs):
    root = tmp_path_factory.mktemp('dp')
    data = tiny_dataset(path=root / 'data.zip', class_names=['left', 'right'])
    plan = dp.plan_privacy(16, 16, 4, steps=8, noise=1.0, accountant='rdp')
    tl.training_loop(**_private_kwargs(tiny_training_kwargs, root / 'a', data, plan))
    return root, data, plan


def test_private_run_reports_epsilon_in_ticks_and_snapshots(private_run):
    root, _data, plan = private_run
    snapshot = _load(root / 'a' / 'network-snapshot-000000.032.pkl')
    record = snapshot['privacy']
    assert record['dp'] and record['steps'] == 8 and record['sigma'] == 1.0 and record['sample_rate'] == 0.25
    assert record['epsilon'] == pytest.approx(dp.epsilon_of([(1.0, 0.25, 8)], plan['delta'], 'rdp'))
    lines = [json.loads(line) for line in open(root / 'a' / 'stats.jsonl')]
    epsilons = [line['Privacy/epsilon']['mean'] for line in lines]
    assert epsilons == sorted(epsilons) and epsilons[-1] == pytest.approx(record['epsilon'])
    reported = {key for line in lines for key, value in line.items() if isinstance(value, dict) and value['num']}
    assert not any(key.endswith('/real') or key in ('Loss/D/loss', 'Loss/r1_penalty') for key in reported)
    assert 'reals.png' not in os.listdir(root / 'a') and snapshot['resume_state']['augment_p'] == 0.25
    assert snapshot['resume_state']['step/Dboth'] == dict(steps=8)


def test_private_run_resumes_exactly(private_run, tiny_training_kwargs):
    root, data, plan = private_run
    middle = str(root / 'a' / 'network-snapshot-000000.012.pkl')
    tl.training_loop(**_private_kwargs(tiny_training_kwargs, root / 'b', data, plan, resume_pkl=middle))
    a = _load(root / 'a' / 'network-snapshot-000000.032.pkl')
    b = _load(root / 'b' / 'network-snapshot-000000.032.pkl')
    for name in ('G', 'D', 'G_ema'):
        for (key, ta), (_, tb) in zip(a[name].state_dict().items(), b[name].state_dict().items()):
            assert torch.equal(ta, tb), f'{name}.{key} differs after resume'
    assert a['privacy'] == b['privacy']


def test_training_stops_at_the_privacy_budget(private_run, tiny_training_kwargs, capsys):
    root, data, _plan = private_run
    plan = dp.plan_privacy(16, 16, 4, steps=8, noise=1.0, epsilon=3.0, accountant='rdp')
    assert plan['max_steps'] < 8
    tl.training_loop(**_private_kwargs(tiny_training_kwargs, root / 'c', data, plan))
    assert 'Stopped early: privacy budget reached: epsilon 3 at delta' in capsys.readouterr().out
    last = sorted(name for name in os.listdir(root / 'c') if name.startswith('network-'))[-1]
    record = _load(root / 'c' / last)['privacy']
    assert record['steps'] == plan['max_steps'] and record['epsilon'] <= 3.0


def test_an_empty_poisson_sample_takes_a_noise_only_step(tiny_dataset, tiny_training_kwargs, tmp_path, monkeypatch):
    # At q 0.012 and 453 patients (Kermany at 64 px), about 1 step in 270 draws no patient; such a step crashed.
    monkeypatch.setattr(dp.UnitSampler, 'sample', lambda self: ([], np.zeros([0], np.int64)))
    data = tiny_dataset(path=tmp_path / 'data.zip', class_names=['left', 'right'])
    plan = dp.plan_privacy(16, 16, 4, steps=4, noise=1.0, accountant='rdp')
    tl.training_loop(**_private_kwargs(tiny_training_kwargs, tmp_path / 'run', data, plan, total_kimg=0.016))
    start, end = (_load(tmp_path / 'run' / f'network-snapshot-000000.{kimg}.pkl') for kimg in ('004', '016'))
    assert end['resume_state']['step/Dboth'] == dict(steps=4) and end['privacy']['steps'] == 4
    changed = [not torch.equal(a, b) for a, b in zip(start['D'].parameters(), end['D'].parameters())]
    assert all(changed), 'the noise of an empty step reaches every parameter of D'


def test_an_ablation_arm_after_a_private_run_reports_epsilon_inf_not_nan(private_run, tiny_training_kwargs, capsys):
    root, data, _plan = private_run  # One process: training_stats' counters are global (inf - inf was nan).
    plan = dp.plan_privacy(16, 16, 4, steps=4, mode='clip-only', accountant='rdp')
    for name in ('clip0', 'clip'):
        capsys.readouterr()
        tl.training_loop(**_private_kwargs(tiny_training_kwargs, root / name, data, plan, total_kimg=0.016))
    ticks = [line for line in capsys.readouterr().out.splitlines() if line.startswith('tick ')]
    assert ticks and all(line.endswith('epsilon inf') and ' nan' not in line for line in ticks), '\n'.join(ticks)
    assert _load(root / 'clip' / 'network-snapshot-000000.016.pkl')['privacy']['epsilon'] == math.inf


def test_private_labels_change_neither_fake_labels_nor_ada_p(tiny_dataset, tiny_training_kwargs, tmp_path, monkeypatch):
    drawn = []
    sample = PrivateDataPolicy.sample_fake_labels
    monkeypatch.setattr(PrivateDataPolicy, 'sample_fake_labels', lambda *a: drawn.append(sample(*a)) or drawn[-1])
    plan = dp.plan_privacy(16, 16, 4, steps=4, noise=1.0, accountant='rdp')
    runs = {}
    for name, labels in (('mixed', True), ('one-class', [0] * 16)):
        data = tiny_dataset(path=tmp_path / f'{name}.zip', labels=labels, class_names=['left', 'right'])
        drawn.clear()
        tl.training_loop(**_private_kwargs(tiny_training_kwargs, tmp_path / name, data, plan, total_kimg=0.016))
        runs[name] = (np.concatenate(drawn), _load(tmp_path / name / 'network-snapshot-000000.016.pkl'))
    np.testing.assert_array_equal(runs['mixed'][0], runs['one-class'][0])
    assert runs['mixed'][1]['resume_state']['augment_p'] == runs['one-class'][1]['resume_state']['augment_p'] == 0.25


# ----------------------------------------------------------------------------


def test_generate_states_a_snapshots_privacy(private_run, capsys):
    root, _data, _plan = private_run
    record = _load(root / 'a' / 'network-snapshot-000000.032.pkl')['privacy']
    load_network(str(root / 'a' / 'network-snapshot-000000.032.pkl'), torch.device('cpu'))
    assert f'Privacy: epsilon {record["epsilon"]:.3f} at delta' in capsys.readouterr().out
