"""Private mode: nothing outside D's step reads the training set (fake labels, ADA, reals grid, counts)."""

import os
import pickle

import numpy as np
import pytest

from training import training_loop as tl
from training.data_policy import OpenDataPolicy, PrivateDataPolicy
from training.dataset import ImageFolderDataset


def _sample(policy, data, seed=0, n=400):
    np.random.seed(seed)
    return policy.sample_fake_labels(ImageFolderDataset(data, use_labels=True), n)


def test_private_fake_labels_do_not_depend_on_private_labels(tiny_dataset, tmp_path):
    balanced = tiny_dataset(path=tmp_path / 'a.zip', labels=True)
    one_class = tiny_dataset(path=tmp_path / 'b.zip', labels=[0] * 15 + [1])
    private = PrivateDataPolicy()
    np.testing.assert_array_equal(_sample(private, balanced), _sample(private, one_class))
    assert abs(_sample(private, one_class)[:, 0].mean() - 0.5) < 0.1  # Uniform marginal, not the data's 15:1.
    assert _sample(OpenDataPolicy(), one_class)[:, 0].mean() > 0.85  # The open policy follows the data.


def test_user_marginal_and_multi_hot(tiny_dataset, tmp_path):
    data = tiny_dataset(path=tmp_path / 'a.zip')
    labels = _sample(PrivateDataPolicy(label_marginal=[0.9, 0.1]), data, n=2000)
    assert abs(labels[:, 0].mean() - 0.9) < 0.03 and np.all(labels.sum(1) == 1)
    multi = tiny_dataset(path=tmp_path / 'm.zip', labels=[[1.0, 0.0, 1.0]] * 16, classes=3)
    labels = _sample(PrivateDataPolicy(label_marginal=[0.5, 0.0, 1.0]), multi, n=2000)
    assert labels[:, 1].max() == 0 and labels[:, 2].min() == 1 and abs(labels[:, 0].mean() - 0.5) < 0.05
    with pytest.raises(ValueError, match='label marginal'):
        _sample(PrivateDataPolicy(label_marginal=[1.0]), data)


def test_private_run_keeps_ada_p_and_writes_no_reals(tiny_dataset, tiny_training_kwargs, tmp_path, capsys):
    data = tiny_dataset(path=tmp_path / 'd.zip')
    kwargs = tiny_training_kwargs(tmp_path / 'run', data, is_private=True, augment_p=0.25, total_kimg=0.016)
    tl.training_loop(**kwargs)
    files = os.listdir(tmp_path / 'run')
    assert 'reals.png' not in files and 'fakes_init.png' in files
    assert 'counts not shown: private mode' in capsys.readouterr().out
    with open(tmp_path / 'run' / 'network-snapshot-000000.016.pkl', 'rb') as f:
        snapshot = pickle.load(f)
    assert snapshot['resume_state']['augment_p'] == 0.25  # ADA target 0 would have moved p on real signs.
