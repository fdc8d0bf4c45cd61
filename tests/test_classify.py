"""classify.py end to end on the phantom: a real-data classifier separates abnormal from normal phantoms of
another seed, eval writes its JSON and ROC, compare prints a paired table, and synthetic / mixed / class-subset
training sets are assembled as asked."""

import json
import os
import pickle

import numpy as np
import pytest
import sklearn.metrics
import torch
from click.testing import CliRunner

import classify
import dataset_tool
from clinical.classifier import load_classifier
from clinical.classifier_data import load_image_set
from clinical.classifier_training import predict
from training import training_loop

# ----------------------------------------------------------------------------
# Phantom data (train seed 0, test seed 1) and two classifiers trained on it, built once.


def _run(main, args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope='module')
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp('classify')
    paths = dict(root=root, train=root / 'train.zip', test=root / 'test.zip')
    for split, seed, count in (('train', 0, 600), ('test', 1, 300)):
        _run(
            dataset_tool.main,
            ['--source', f'phantom:{count}', '--seed', seed, '--resolution', 32, '--dest', paths[split]],
        )
    for name, arch, epochs in (('resnet', 'resnet', 12), ('vgg', 'vgg', 3)):
        out = root / name
        _run(classify.main, ['train', '--data', paths['train'], '--outdir', out, '--arch', arch, '--epochs', epochs,
                             '--resolution', 32, '--seed', 1])  # fmt: skip
        paths[name] = out / 'classifier.pkl'
    return paths


def test_real_classifier_separates_test_phantoms_of_another_seed(phantom):
    out = phantom['root'] / 'eval'
    output = _run(
        classify.main, ['eval', '--classifier', phantom['resnet'], '--data', phantom['test'], '--outdir', out]
    )
    report = json.loads((out / 'eval.json').read_text())
    assert report['auc'] >= 0.9, output  # A small, fast config; the 64 px acceptance run reaches >= 0.97.
    assert report['ci_low'] <= report['auc'] <= report['ci_high'] and report['ci_high'] - report['ci_low'] < 0.1
    point = report['operating_point']
    assert 0.75 < point['sensitivity'] <= 1 and 0.75 < point['specificity'] <= 1
    assert report['n'] == 300 and report['classifier']['sha256'] and report['data']['fingerprint']
    assert (out / 'roc.png').stat().st_size > 1000 and 'AUC' in output


def test_classifier_pickle_records_its_data_and_split(phantom):
    net, meta = load_classifier(str(phantom['resnet']))
    assert net.class_names == ['normal', 'abnormal'] and net.kind == 'binary' and net.resolution == 32
    assert meta['train_data']['num_images'] == 600 and len(meta['train_data']['fingerprint']) == 16
    assert meta['split']['train'] + meta['split']['val'] == 600 and meta['label_schema'] == 'abnormal'
    assert meta['val_auc'] == max(h['val_auc'] for h in meta['history']) and 0 < meta['val_threshold'] < 1


def test_compare_prints_a_paired_table(phantom):
    out = phantom['root'] / 'compare'
    output = _run(classify.main, ['compare', '--data', phantom['test'], phantom['resnet'], phantom['vgg'],
                                  '--outdir', out])  # fmt: skip
    assert 'resnet' in output and 'vgg' in output and 'ref' in output and 'DeLong' in output
    rows = json.loads((out / 'compare.json').read_text())['rows']
    assert 'p_value' not in rows[0] and 0 <= rows[1]['p_value'] <= 1
    assert rows[1]['diff'] == pytest.approx(rows[1]['auc'] - rows[0]['auc'], abs=1e-9)


def test_an_ensemble_holds_the_single_runs_and_predicts_their_mean(phantom):
    out = phantom['root'] / 'ensemble'
    output = _run(classify.main, ['train', '--data', phantom['train'], '--outdir', out, '--arch', 'vgg', '--epochs', 3,
                                  '--resolution', 32, '--seed', 1, '--ensemble', 2])  # fmt: skip
    assert 'Seed 1: best validation AUC' in output and 'Seed 2:' in output and 'an ensemble of 2' in output
    ensemble, meta = load_classifier(str(out / 'classifier.pkl'))
    single, _meta = load_classifier(str(phantom['vgg']))  # The fixture's run: the same options, seed 1.
    first = ensemble.members[0].state_dict()
    assert all(torch.equal(first[name], value) for name, value in single.state_dict().items())
    assert [m['seed'] for m in meta['members']] == [1, 2] and (out / 'seed-2' / 'classifier.pkl').exists()
    thresholds = [m['val_threshold'] for m in meta['members']]
    assert meta['val_threshold'] == pytest.approx(sum(thresholds) / 2)
    test = load_image_set(str(phantom['test']))
    mean = sum(predict(net, test.images) for net in ensemble.members) / 2
    assert np.allclose(predict(ensemble, test.images), mean, atol=1e-6)
    _run(classify.main, ['eval', '--classifier', out / 'classifier.pkl', '--data', phantom['test'], '--outdir', out])
    auc = json.loads((out / 'eval.json').read_text())['auc']
    assert auc == pytest.approx(sklearn.metrics.roc_auc_score(test.labels[:, 1], mean), abs=1e-6)


def test_a_dp_ensemble_is_refused(phantom, tmp_path):
    result = CliRunner().invoke(classify.main, ['train', '--data', phantom['train'], '--outdir', tmp_path, '--dp',
                                                '--dp-epsilon', 4, '--ensemble', 2])  # fmt: skip
    assert result.exit_code == 2 and 'would spend the budget again' in result.output
    assert not (tmp_path / 'classifier.pkl').exists()


# ----------------------------------------------------------------------------
# Training sets: synthetic from a generator, real + synthetic, and a subset of classes.


@pytest.fixture(scope='module')
def snapshot(tmp_path_factory, tiny_dataset, tiny_training_kwargs):
    root = tmp_path_factory.mktemp('gan')
    data = tiny_dataset(8, path=root / 'data.zip', class_names=['normal', 'abnormal'])
    training_loop.training_loop(**tiny_training_kwargs(root, data, total_kimg=0.008, kimg_per_tick=1))
    return dict(path=root / 'network-snapshot-000000.pkl', data=data)


def test_synthetic_and_mixed_training_sets(snapshot, tmp_path):
    base = ['train', '--epochs', 1, '--resolution', 16, '--channels', '8,16', '--batch', 8]
    _run(classify.main, [*base, '--synthetic', snapshot['path'], '--num', 40, '--outdir', tmp_path / 's'])
    _net, meta = load_classifier(str(tmp_path / 's' / 'classifier.pkl'))
    assert meta['train_data']['num_images'] == 40 and meta['train_data']['class_counts'] == [20, 20]
    assert 'sampled' in meta['train_data']['description']
    _run(classify.main, [*base, '--data', snapshot['data'], '--synthetic', snapshot['path'], '--num', 24,
                         '--prior', '1,3', '--outdir', tmp_path / 'm'])  # fmt: skip
    _net, meta = load_classifier(str(tmp_path / 'm' / 'classifier.pkl'))
    assert meta['train_data']['num_images'] == 8 + 24


def test_class_subset_makes_a_binary_task(tiny_dataset, tmp_path):
    data = tiny_dataset(30, classes=3, class_names=['bacteria', 'normal', 'virus'])
    _run(classify.main, ['train', '--data', data, '--classes', 'bacteria,virus', '--epochs', 1, '--resolution', 16,
                         '--channels', '8,16', '--batch', 4, '--outdir', tmp_path])  # fmt: skip
    net, meta = load_classifier(str(tmp_path / 'classifier.pkl'))
    assert net.kind == 'binary' and net.class_names == ['bacteria', 'virus'] and meta['train_data']['num_images'] == 20
    args = ['--classifier', tmp_path / 'classifier.pkl', '--data', data, '--outdir', tmp_path / 'e']
    _run(classify.main, ['eval', *args, '--operating-point', 'youden'])
    report = json.loads((tmp_path / 'e' / 'eval.json').read_text())
    assert report['data']['dropped'] == 10 and report['n'] == 20


def test_multiclass_eval_reports_per_class_and_macro_auc(tiny_dataset, tmp_path):
    data = tiny_dataset(30, classes=3, class_names=['a', 'b', 'c'])
    _run(classify.main, ['train', '--data', data, '--epochs', 1, '--resolution', 16, '--channels', '8,16',
                         '--batch', 4, '--outdir', tmp_path])  # fmt: skip
    _run(classify.main, ['eval', '--classifier', tmp_path / 'classifier.pkl', '--data', data, '--outdir', tmp_path])
    report = json.loads((tmp_path / 'eval.json').read_text())
    assert report['kind'] == 'multiclass' and set(report['per_class']) == {'a', 'b', 'c'}
    assert report['auc'] == pytest.approx(sum(report['per_class'].values()) / 3)


def test_classifier_pickle_holds_only_the_network_and_metadata(phantom):
    data = pickle.loads(open(phantom['resnet'], 'rb').read())
    assert set(data) == {'classifier', 'metadata'} and os.path.getsize(phantom['resnet']) < 2_000_000


def test_dp_classifier_states_its_epsilon_and_evaluates_at_its_own_threshold(phantom):
    out = phantom['root'] / 'dp'
    output = _run(classify.main, ['train', '--data', phantom['train'], '--outdir', out, '--arch', 'vgg', '--epochs', 1,
                                  '--resolution', 32, '--dp', '--dp-epsilon', 4, '--dp-accountant', 'rdp'])  # fmt: skip
    _net, meta = load_classifier(str(out / 'classifier.pkl'))
    record = meta['dp']
    assert record['dp'] and record['accountant'] == 'rdp' and record['unit'] == 'image' and record['steps'] == 10
    assert 3.9 < record['epsilon'] <= 4.0 and record['sample_rate'] == pytest.approx(64 / 600)
    assert meta['val_auc'] is None and meta['split']['val'] == 0  # No validation split: all data is spent once.
    assert f'Privacy: epsilon {record["epsilon"]:.3f}' in output
    _run(classify.main, ['eval', '--classifier', out / 'classifier.pkl', '--data', phantom['test'], '--outdir', out])
    assert json.loads((out / 'eval.json').read_text())['operating_point']['threshold'] == 0.5
