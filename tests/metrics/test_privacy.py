"""Privacy audit: a generator that copies its training images is caught (near-copies, attack AUC near 1), one that
samples the same distribution independently is not (AUC 0.5 inside the CI), the distances equal brute-force loops,
and the grid and summaries are written and readable."""

import json

import numpy as np
import PIL.Image
import pytest

from metrics import privacy


def iid_sets(n: int = 300, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training, held-out and generated features, all drawn independently from one Gaussian."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)), rng.normal(size=(n, dim)), rng.normal(size=(n, dim))


def copying_sets(n: int = 300, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A generator that returns its training images plus tiny noise, shuffled."""
    rng = np.random.default_rng(seed)
    train, holdout = rng.normal(size=(n, dim)), rng.normal(size=(n, dim))
    return train, holdout, train[rng.permutation(n)] + 1e-3 * rng.normal(size=(n, dim))


def brute_nearest(query: np.ndarray, ref: np.ndarray, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    dist, index = np.empty(len(query)), np.empty(len(query), int)
    for i, q in enumerate(query):
        d = [np.inf if exclude_self and i == j else np.sqrt(((q - r) ** 2).sum()) for j, r in enumerate(ref)]
        dist[i], index[i] = min(d), int(np.argmin(d))
    return dist, index


# ----------------------------------------------------------------------------
# Memorisation and the black-box attack: copies are caught, independent samples are not.


def test_copying_generator_is_caught():
    train, holdout, gen = copying_sets()
    mem = privacy.memorisation(gen, train, holdout)
    attack = privacy.membership_inference_blackbox(train, holdout, gen, n_boot=200)
    assert mem['memorised_share'] > 0.9 and mem['closer_to_train'] > 0.99
    assert mem['median_d_train'] < 0.01 * mem['median_d_holdout']
    assert attack['auc'] > 0.9 and attack['ci_low'] > 0.5
    assert attack['median_d_train'] < 0.01 * attack['median_d_holdout']


@pytest.mark.parametrize('seed', [0, 1])
def test_independent_generator_is_not_caught(seed):
    train, holdout, gen = iid_sets(seed=seed)
    mem = privacy.memorisation(gen, train, holdout)
    attack = privacy.membership_inference_blackbox(train, holdout, gen, n_boot=500, seed=seed)
    assert mem['memorised_share'] < 0.05
    assert mem['expected_closer_to_train'] == 0.5
    assert abs(mem['closer_to_train'] - 0.5) < 0.1
    assert mem['closer_to_train_ci'][0] < 0.5 < mem['closer_to_train_ci'][1]
    assert attack['ci_low'] < 0.5 < attack['ci_high']
    assert (attack['n_pos'], attack['n_neg']) == (300, 300)


def test_expected_share_follows_set_sizes():
    train, holdout, gen = iid_sets(n=400)
    mem = privacy.memorisation(gen, train, holdout[:100])
    assert mem['expected_closer_to_train'] == pytest.approx(0.8)
    assert abs(mem['closer_to_train'] - 0.8) < 0.08


def test_memorisation_equals_brute_force():
    rng = np.random.default_rng(3)
    gen, train, holdout = rng.normal(size=(13, 5)), rng.normal(size=(11, 5)), rng.normal(size=(7, 5))
    mem = privacy.memorisation(gen, train, holdout, percentile=20.0, num_pairs=4)
    d_train, nn_train = brute_nearest(gen, train)
    d_holdout, _ = brute_nearest(gen, holdout)
    threshold = np.percentile(brute_nearest(train, train, exclude_self=True)[0], 20.0)
    assert mem['median_d_train'] == pytest.approx(np.median(d_train), abs=1e-9)
    assert mem['median_d_holdout'] == pytest.approx(np.median(d_holdout), abs=1e-9)
    assert mem['closer_to_train'] == pytest.approx(np.mean(d_train < d_holdout))
    assert mem['threshold'] == pytest.approx(threshold, abs=1e-9)
    assert mem['memorised_share'] == pytest.approx(np.mean(d_train <= threshold))
    order = np.argsort(d_train)[:4]
    assert [(p['gen_index'], p['train_index']) for p in mem['closest_pairs']] == [(g, nn_train[g]) for g in order]
    assert [p['distance'] for p in mem['closest_pairs']] == pytest.approx(d_train[order], abs=1e-9)


def test_blocks_do_not_change_the_nearest_neighbours(monkeypatch):
    rng = np.random.default_rng(4)
    query, ref = rng.normal(size=(37, 6)), rng.normal(size=(29, 6))
    whole = privacy._nearest(ref, ref, exclude_self=True)
    monkeypatch.setattr(privacy, '_BLOCK', 5 * 29)  # 5 rows per block, the last one partial.
    blocked = privacy._nearest(ref, ref, exclude_self=True)
    np.testing.assert_allclose(blocked[0], whole[0], atol=1e-12)
    np.testing.assert_array_equal(blocked[1], whole[1])
    np.testing.assert_allclose(privacy._nearest(query, ref)[0], brute_nearest(query, ref)[0], atol=1e-9)


@pytest.mark.parametrize(
    'kwargs',
    [
        dict(gen=np.zeros((3, 4)), train=np.zeros((3, 5)), holdout=np.zeros((3, 4))),  # Dimensions differ.
        dict(gen=np.zeros((3, 4)), train=np.zeros((1, 4)), holdout=np.zeros((3, 4))),  # One training image.
        dict(gen=np.full((3, 4), np.nan), train=np.zeros((3, 4)), holdout=np.zeros((3, 4))),
        dict(gen=np.zeros(4), train=np.zeros((3, 4)), holdout=np.zeros((3, 4))),
        dict(gen=np.zeros((3, 4)), train=np.zeros((3, 4)), holdout=np.zeros((3, 4)), percentile=101),
    ],
)
def test_memorisation_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        privacy.memorisation(**kwargs)


# ----------------------------------------------------------------------------
# White-box attack on discriminator logits.


def test_whitebox_detects_shifted_logits_and_not_equal_ones():
    rng = np.random.default_rng(5)
    shifted = privacy.membership_inference_whitebox(rng.normal(3, 1, 200), rng.normal(0, 1, 200), n_boot=200)
    same = privacy.membership_inference_whitebox(rng.normal(0, 1, 200), rng.normal(0, 1, 200), n_boot=500)
    assert shifted['auc'] > 0.9 and shifted['ci_low'] > 0.5
    assert same['ci_low'] < 0.5 < same['ci_high']
    with pytest.raises(ValueError):
        privacy.membership_inference_whitebox(np.zeros((2, 2)), np.zeros(2))


# ----------------------------------------------------------------------------
# Outputs: the grid PNG, the JSON report and the markdown summary.


@pytest.mark.parametrize('channels', [1, 3])
def test_pair_grid_writes_a_png_of_the_expected_size(tmp_path, channels):
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, size=(2, 3, channels, 48, 40), dtype=np.uint8)
    pairs = [dict(gen_index=i, train_index=10 + i, distance=0.5 * i) for i in range(3)]
    path = tmp_path / 'pairs.png'
    privacy.pair_grid(images[0], images[1], pairs, str(path))
    sep, label, row = privacy._SEP, privacy._LABEL_WIDTH, max(48, privacy._MIN_ROW)
    with PIL.Image.open(path) as image:
        assert image.format == 'PNG'
        assert image.size == (3 * sep + 2 * 40 + label, sep + 3 * (row + sep))
        pixels = np.asarray(image.convert('RGB'))
    first_gen = images[0, 0].transpose(1, 2, 0) if channels == 3 else np.repeat(images[0, 0, 0, :, :, None], 3, 2)
    np.testing.assert_array_equal(pixels[sep : sep + 48, sep : sep + 40], first_gen)
    assert [p.name for p in tmp_path.iterdir()] == ['pairs.png']  # No temp file left behind.


def test_pair_grid_rejects_misaligned_input(tmp_path):
    images = np.zeros((2, 1, 8, 8), np.uint8)
    with pytest.raises(ValueError):
        privacy.pair_grid(images, images[:1], [dict(gen_index=0, train_index=0, distance=0.0)] * 2, tmp_path / 'a.png')
    with pytest.raises(ValueError):
        privacy.pair_grid(images.astype(float), images, [dict(gen_index=0, train_index=0, distance=0.0)] * 2, 'x.png')


def test_audit_and_summary(tmp_path):
    train, holdout, gen = copying_sets(n=120, dim=8)
    rng = np.random.default_rng(7)
    pixels = [x @ rng.normal(size=(8, 20)) for x in (gen, train, holdout)]  # A second space: random projections.
    report = privacy.audit(gen, train, holdout, *pixels, train_scores=rng.normal(1, 1, 120),
                           holdout_scores=rng.normal(0, 1, 120), n_boot=100)  # fmt: skip
    report['feature_net'] = dict(name='pkl-test', sha256='0' * 64)
    report['memorisation']['pixels']['threshold'] = float('nan')  # Must become null, not invalid JSON.
    privacy.write_summary(report, str(tmp_path / 'privacy.json'), str(tmp_path / 'privacy.md'))
    with open(tmp_path / 'privacy.json') as f:
        saved = json.load(f)
    assert saved['counts'] == dict(generated=120, train=120, holdout=120)
    assert saved['memorisation']['pixels']['threshold'] is None
    assert saved['membership']['blackbox']['features']['auc'] == pytest.approx(
        report['membership']['blackbox']['features']['auc']
    )
    markdown = (tmp_path / 'privacy.md').read_text()
    for attack in [*report['membership']['blackbox'].values(), report['membership']['whitebox']]:
        assert f'{attack["auc"]:.3f} [{attack["ci_low"]:.3f}, {attack["ci_high"]:.3f}]' in markdown
    assert 'pkl-test' in markdown and 'membership leakage' in markdown
    assert set(privacy.headline(report)) == {
        'memorised_share/features', 'closer_to_train/features', 'memorised_share/pixels', 'closer_to_train/pixels',
        'auc_blackbox/features', 'auc_blackbox/pixels', 'auc_whitebox',
    }  # fmt: skip


def test_summary_without_whitebox(tmp_path):
    train, holdout, gen = iid_sets(n=60, dim=4)
    report = privacy.audit(gen, train, holdout, gen, train, holdout, n_boot=50)
    assert report['membership']['whitebox'] is None
    privacy.write_summary(report, str(tmp_path / 'p.json'), str(tmp_path / 'p.md'))
    assert 'White-box' not in (tmp_path / 'p.md').read_text()
    assert json.loads((tmp_path / 'p.json').read_text())['membership']['whitebox'] is None
