"""The metric registry end to end: calc_metric on a tiny snapshot (results, per-class numbers, the feature network
recorded, the real-feature cache), calc_metrics.py, and train.py --metrics with and without a feature network."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import calc_metrics  # noqa: F401 - imported so a syntax error fails here, not in a subprocess.
from metrics import feature_sets, metric_main
from metrics.features import FeatureNetMissing, PixelFeatures, load_feature_net
from training import checkpoint, training_loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def snapshot(tmp_path_factory, tiny_dataset, tiny_training_kwargs):
    root = tmp_path_factory.mktemp('metrics')
    data = tiny_dataset(24, path=root / 'data.zip', class_names=['normal', 'abnormal'])
    holdout = tiny_dataset(24, path=root / 'holdout.zip', class_names=['normal', 'abnormal'], seed=7)
    training_loop.training_loop(**tiny_training_kwargs(root, data, total_kimg=0.008, kimg_per_tick=1))
    return dict(pkl=str(root / 'network-snapshot-000000.pkl'), data=data, holdout=holdout, root=root)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv('SPINEGAN_INCEPTION', raising=False)


def _G(snapshot):
    return checkpoint.load_snapshot(snapshot['pkl'])['G_ema']


# ----------------------------------------------------------------------------


def test_registry_names_and_aliases():
    assert all(metric_main.is_valid_metric(name) for name in ('fid', 'kid', 'pr', 'dc', 'privacy', 'fid50k_full'))
    assert not metric_main.is_valid_metric('fid51k')
    assert metric_main.resolve('fid50k_full') == ('fid', 50000) and metric_main.resolve('pr') == ('pr', None)


@pytest.mark.parametrize('name, keys', [('fid', {'fid'}), ('kid', {'kid', 'kid_std'}), ('pr', {'precision', 'recall'}),
                                        ('dc', {'density', 'coverage'})])  # fmt: skip
def test_calc_metric_reports_overall_and_per_class_with_its_feature_net(snapshot, name, keys):
    result = metric_main.calc_metric(name, _G(snapshot), data=snapshot['data'], feature_net=PixelFeatures(8),
                                     num_gen=40, progress=False)  # fmt: skip
    results = result['results']
    assert keys <= set(results) and all(np.isfinite(v) for v in results.values())
    assert {f'{key}/{cls}' for key in keys for cls in ('normal', 'abnormal')} <= set(results)
    assert result['feature_net'] == dict(name='pixels8', sha256=PixelFeatures(8).sha256, num_real=24, num_gen=40)


def test_real_features_are_cached_per_dataset_and_feature_net(snapshot, tmp_path):
    dataset = feature_sets.open_dataset(snapshot['data'])
    first = feature_sets.real_features(dataset, PixelFeatures(8), progress=False)
    assert len(list((tmp_path / 'cache' / 'gan-metrics').iterdir())) == 1
    again = feature_sets.real_features(dataset, PixelFeatures(8), progress=False)
    assert np.array_equal(first.features, again.features) and np.array_equal(first.labels, again.labels)
    feature_sets.real_features(dataset, PixelFeatures(4), progress=False)
    mirrored = feature_sets.real_features(feature_sets.open_dataset(snapshot['data'], mirror=True), PixelFeatures(8),
                                          progress=False)  # fmt: skip
    assert len(mirrored) == 48 and len(list((tmp_path / 'cache' / 'gan-metrics').iterdir())) == 3


def test_generated_images_depend_on_their_seed_only(snapshot):
    G, labels = _G(snapshot), np.eye(2, dtype=np.float32)[[0, 1] * 8]
    a = feature_sets.generated_features(G, PixelFeatures(8), labels, 6, batch_size=6, progress=False)
    b = feature_sets.generated_features(G, PixelFeatures(8), labels, 6, batch_size=4, progress=False)
    assert np.allclose(a.features, b.features, atol=1e-6) and np.array_equal(a.labels, b.labels)


def test_missing_inception_names_the_file_and_where_to_put_it(tmp_path):
    with pytest.raises(FeatureNetMissing) as info:
        load_feature_net('inception')
    message = str(info.value)
    assert str(tmp_path / 'cache' / 'inception-2015-12-05.pt') in message and 'download' in message
    with pytest.raises(FeatureNetMissing):
        load_feature_net(str(tmp_path / 'none.pkl'))


def test_snapshot_hook_warns_once_and_skips_without_its_feature_net(snapshot, capsys):
    hook = metric_main.SnapshotMetric('fid')
    context = dict(run_dir=str(snapshot['root']), snapshot_pkl=snapshot['pkl'],
                   training_set_kwargs=dict(path=snapshot['data']))  # fmt: skip
    assert hook(_G(snapshot), **context) == {} and hook(_G(snapshot), **context) == {}
    assert capsys.readouterr().out.count('Warning: metric fid skipped') == 1


# ----------------------------------------------------------------------------
# The CLIs.


def _run(args, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO, DNNLIB_CACHE_DIR=str(tmp_path / 'cache'))
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_calc_metrics_prints_and_appends_beside_the_snapshot(snapshot, tmp_path):
    result = _run(['calc_metrics.py', f'--network={snapshot["pkl"]}', '--metrics=fid,pr', '--feature-net=pixels:8',
                   '--num-gen=30'], tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
    assert [line['metric'] for line in lines] == ['fid', 'pr']
    written = (snapshot['root'] / 'metric-pr.jsonl').read_text().splitlines()
    assert json.loads(written[-1])['results'] == lines[1]['results'] and lines[1]['feature_net']['num_gen'] == 30


def test_train_with_metrics_and_no_inception_finishes_with_one_warning(snapshot, tmp_path):
    args = ['train.py', f'--outdir={tmp_path / "runs"}', f'--data={snapshot["data"]}', '--cfg=cpu', '--metrics=fid',
            '--channel-base=256', '--channel-max=16', '--batch=4', '--workers=0', '--kimg=0.008', '--tick=0.004',
            '--snap=1', '--cond=1']  # fmt: skip
    result = _run(args, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count('Warning: metric fid skipped') == 1 and 'inception-2015-12-05.pt' in result.stdout
    run_dir = next((tmp_path / 'runs').iterdir())
    assert len(list(run_dir.glob('network-snapshot-*.pkl'))) == 2 and not list(run_dir.glob('metric-*.jsonl'))


def test_train_with_pixel_metrics_logs_them(snapshot, tmp_path):
    args = ['train.py', f'--outdir={tmp_path / "runs"}', f'--data={snapshot["data"]}', '--cfg=cpu', '--metrics=kid',
            '--feature-net=pixels:8', '--channel-base=256', '--channel-max=16', '--batch=4', '--workers=0',
            '--kimg=0.004', '--snap=1', '--cond=1']  # fmt: skip
    result = _run(args, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run_dir = next((tmp_path / 'runs').iterdir())
    line = json.loads((run_dir / 'metric-kid.jsonl').read_text().splitlines()[0])
    assert np.isfinite(line['results']['kid']) and line['results']['feature_net']['name'] == 'pixels8'
    stats = [json.loads(s) for s in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert any('Metrics/kid' in s for s in stats)


def test_calc_metrics_privacy_audit_writes_json_markdown_and_pairs(snapshot, tmp_path):
    args = ['calc_metrics.py', f'--network={snapshot["pkl"]}', '--metrics=privacy', '--feature-net=pixels:8',
            f'--holdout={snapshot["holdout"]}', '--num-gen=30']  # fmt: skip
    result = _run(args, tmp_path)
    assert result.returncode == 0, result.stderr
    line = json.loads([s for s in result.stdout.splitlines() if s.startswith('{')][0])
    assert {'auc_whitebox', 'auc_blackbox/features', 'memorised_share/pixels'} <= set(line['results'])
    stem = snapshot['root'] / 'privacy-network-snapshot-000000'
    report = json.loads(stem.with_suffix('.json').read_text())
    assert report['counts'] == dict(generated=30, train=24, holdout=24)
    assert 'AUC' in stem.with_suffix('.md').read_text()
    assert (snapshot['root'] / 'privacy-network-snapshot-000000-pairs.png').stat().st_size > 500
