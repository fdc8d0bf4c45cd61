"""Fake-label sampling (data, balanced, a marginal) and private mode: nothing outside D's step reads the training
set (fake labels, ADA, reals grid, counts)."""

import os
import pickle

import numpy as np
import pytest

from clinical import dp
from training import training_loop as tl
from training.data_policy import OpenDataPolicy, PrivateDataPolicy, make_data_policy, parse_cond_sampling
from training.dataset import ImageFolderDataset


def _sample(policy, data, seed=0, n=400):
    np.random.seed(seed)
    return policy.sample_fake_labels(ImageFolderDataset(data, use_labels=True), n)


def test_private_fake_labels_do_not_depend_on_private_labels(tiny_dataset, tmp_path):
    balanced = tiny_dataset(path=tmp_path / 'a.zip', labels=True)
    one_class = tiny_dataset(path=tmp_path / 'b.zip', labels=[0] * 15 + [1])
    private = PrivateDataPolicy('balanced')
    np.testing.assert_array_equal(_sample(private, balanced), _sample(private, one_class))
    assert abs(_sample(private, one_class)[:, 0].mean() - 0.5) < 0.1  # Uniform marginal, not the data's 15:1.
    assert _sample(OpenDataPolicy(), one_class)[:, 0].mean() > 0.85  # The open policy follows the data.


def test_user_marginal_and_multi_hot(tiny_dataset, tmp_path):
    data = tiny_dataset(path=tmp_path / 'a.zip')
    labels = _sample(PrivateDataPolicy([0.9, 0.1]), data, n=2000)
    assert abs(labels[:, 0].mean() - 0.9) < 0.03 and np.all(labels.sum(1) == 1)
    multi = tiny_dataset(path=tmp_path / 'm.zip', labels=[[1.0, 0.0, 1.0]] * 16, classes=3)
    labels = _sample(PrivateDataPolicy('0.5,0,1'), multi, n=2000)
    assert labels[:, 1].max() == 0 and labels[:, 2].min() == 1 and abs(labels[:, 0].mean() - 0.5) < 0.05
    with pytest.raises(ValueError, match='label marginal'):
        _sample(PrivateDataPolicy([1.0]), data)


def test_private_run_keeps_ada_p_and_writes_no_reals(tiny_dataset, tiny_training_kwargs, tmp_path, capsys):
    data = tiny_dataset(path=tmp_path / 'd.zip')
    kwargs = tiny_training_kwargs(tmp_path / 'run', data, is_private=True, cond_sampling='balanced', augment_p=0.25,
                                  D_reg_interval=None, total_kimg=0.016)  # fmt: skip
    kwargs.D_kwargs = dict(kwargs.D_kwargs, epilogue_kwargs=dict(mbstd_num_channels=0))
    plan = dp.plan_privacy(16, 16, 4, steps=4, noise=1.0, accountant='rdp')
    kwargs.D_step_kwargs = dict(class_name='clinical.dp.DPDiscriminatorStep', privacy=plan,
                                training_set_kwargs=kwargs.training_set_kwargs)  # fmt: skip
    tl.training_loop(**kwargs)
    files = os.listdir(tmp_path / 'run')
    assert 'reals.png' not in files and 'fakes_init.png' in files
    assert 'counts not shown: private mode' in capsys.readouterr().out
    with open(tmp_path / 'run' / 'network-snapshot-000000.016.pkl', 'rb') as f:
        snapshot = pickle.load(f)
    assert snapshot['resume_state']['augment_p'] == 0.25  # ADA target 0 would have moved p on real signs.


# ----------------------------------------------------------------------------
# --cond-sampling: balanced classes on imbalanced data, a user marginal in open mode, private mode refuses 'data'.

IMBALANCED_MULTI = [[1.0, 0.0, 0.0]] * 12 + [[0.0, 1.0, 0.0]] * 3 + [[0.0, 0.0, 1.0]] + [[0.0, 0.0, 0.0]] * 4


def test_balanced_one_hot_evens_out_an_imbalanced_dataset(tiny_dataset, tmp_path):
    data = tiny_dataset(20, path=tmp_path / 'a.zip', labels=[0] * 16 + [1] * 3 + [2], class_names=list('abcd'))
    labels = _sample(OpenDataPolicy('balanced'), data, n=3000)  # Class d has no image.
    assert np.all(labels.sum(1) == 1) and labels[:, 3].max() == 0  # One-hot; the class without images skipped.
    np.testing.assert_allclose(labels[:, :3].mean(0), 1 / 3, atol=0.03)
    assert _sample(OpenDataPolicy('data'), data, n=3000)[:, 0].mean() > 0.75  # Upstream follows the data.
    private = _sample(PrivateDataPolicy('balanced'), data, n=4000)  # Reads no labels: all 4 classes.
    np.testing.assert_allclose(private.mean(0), 1 / 4, atol=0.03)


def test_balanced_multi_hot_picks_a_class_then_a_label_that_has_it(tiny_dataset, tmp_path):
    data = tiny_dataset(20, path=tmp_path / 'm.zip', labels=IMBALANCED_MULTI, classes=3)
    labels = _sample(OpenDataPolicy('balanced'), data, n=3000)
    np.testing.assert_allclose(labels.mean(0), 1 / 3, atol=0.03)
    assert {tuple(row) for row in labels} <= {tuple(row) for row in IMBALANCED_MULTI[:16]}  # Real labels only.
    private = _sample(PrivateDataPolicy('balanced'), data, n=3000)
    assert np.all(private.sum(1) == 1)  # One class on, uniform over all K (documented in data_policy.py).
    np.testing.assert_allclose(private.mean(0), 1 / 3, atol=0.03)


def test_open_policy_follows_a_user_marginal(tiny_dataset, tmp_path):
    data = tiny_dataset(path=tmp_path / 'a.zip', labels=[0] * 15 + [1])
    labels = _sample(OpenDataPolicy('1,3'), data, n=4000)
    assert np.all(labels.sum(1) == 1) and abs(labels[:, 1].mean() - 0.75) < 0.03
    multi = tiny_dataset(20, path=tmp_path / 'm.zip', labels=IMBALANCED_MULTI, classes=3)
    labels = _sample(OpenDataPolicy([0.2, 0.5, 1.0]), multi, n=4000)
    np.testing.assert_allclose(labels.mean(0), [0.2, 0.5, 1.0], atol=0.03)


def test_private_mode_refuses_data_sampling():
    with pytest.raises(ValueError, match='private mode cannot draw fake labels from the private training labels'):
        make_data_policy(True, 'data')
    with pytest.raises(ValueError, match='private mode'):
        PrivateDataPolicy('data')
    assert isinstance(make_data_policy(True, 'balanced'), PrivateDataPolicy)
    assert isinstance(make_data_policy(False, 'data'), OpenDataPolicy)


@pytest.mark.parametrize('spec', ['uniform', '', '1,,2', '1,nan', '-1,2', [], ['a']])
def test_bad_cond_sampling_specs(spec):
    with pytest.raises(ValueError):
        parse_cond_sampling(spec)


def test_sampling_repeats_from_the_global_rng(tiny_dataset, tmp_path):
    data = tiny_dataset(20, path=tmp_path / 'm.zip', labels=IMBALANCED_MULTI, classes=3)
    for spec in ('data', 'balanced', '0.1,0.2,0.3'):
        np.testing.assert_array_equal(
            _sample(OpenDataPolicy(spec), data, seed=3), _sample(OpenDataPolicy(spec), data, seed=3)
        )
