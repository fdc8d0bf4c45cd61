"""Classifier statistics: AUC and its bootstrap CI, operating points, DeLong against the naive O(mn) formulas,
the paired bootstrap, per-class AUC against scikit-learn, and the ROC figure."""

import math
import os
import time
import warnings

import numpy as np
import PIL.Image
import pytest
import sklearn.metrics

from clinical import evaluation
from clinical.evaluation import (
    auc_with_ci,
    delong_test,
    multiclass_auc,
    operating_point,
    paired_bootstrap_test,
    plot_roc,
)


def gaussians(n: int, seed: int = 0, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """n cases, half positive; positives score N(shift, 1), negatives N(0, 1)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return y, rng.normal(size=n) + shift * y


def tied_example() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """12 positives, 15 negatives; integer-rounded scores of two correlated classifiers, with many ties."""
    rng = np.random.default_rng(7)
    y = np.r_[np.ones(12, int), np.zeros(15, int)]
    common = rng.normal(size=27)
    a = np.round(1.5 * y + common + 0.5 * rng.normal(size=27))
    b = np.round(0.8 * y + common + 0.8 * rng.normal(size=27))
    return y, a, b


# ----------------------------------------------------------------------------
# AUC with a stratified bootstrap CI.


def test_auc_equals_sklearn_and_ci_contains_it():
    y, s = gaussians(200)
    result = auc_with_ci(y, s, n_boot=500)
    assert result['auc'] == pytest.approx(sklearn.metrics.roc_auc_score(y, s), abs=1e-15)
    assert result['ci_low'] < result['auc'] < result['ci_high']
    assert (result['n'], result['n_pos'], result['n_neg']) == (200, 100, 100)


def test_ci_narrows_as_n_grows():
    widths = {}
    for n in (100, 2000):
        result = auc_with_ci(*gaussians(n, seed=n), n_boot=1000)
        widths[n] = result['ci_high'] - result['ci_low']
    assert widths[2000] < 0.4 * widths[100]  # sqrt(20) ~ 4.5 in theory.


def test_same_seed_same_ci():
    y, s = gaussians(150)
    assert auc_with_ci(y, s, seed=3) == auc_with_ci(y, s, seed=3)
    assert auc_with_ci(y, s, seed=3)['ci_low'] != auc_with_ci(y, s, seed=4)['ci_low']


def test_bootstrap_is_stratified():
    y = np.r_[1, np.zeros(30, int)]  # One positive: an unstratified resample would often miss it.
    s = np.linspace(0, 1, 31)
    result = auc_with_ci(y, s, n_boot=200)
    assert result['ci_low'] <= result['auc'] <= result['ci_high']


def test_resampled_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y, s = gaussians(40)
    s = np.round(s)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    pos_idx, neg_idx = rng.choice(pos, (20, len(pos))), rng.choice(neg, (20, len(neg)))
    expected = [
        sklearn.metrics.roc_auc_score(np.r_[np.ones(len(p)), np.zeros(len(q))], np.r_[s[p], s[q]])
        for p, q in zip(pos_idx, neg_idx)
    ]
    np.testing.assert_allclose(evaluation._resampled_auc(s, pos_idx, neg_idx), expected, rtol=0, atol=1e-14)


def test_bootstrap_is_fast():
    y, s = gaussians(1000)
    start = time.perf_counter()
    auc_with_ci(y, s, n_boot=2000)
    assert time.perf_counter() - start < 1.0


# ----------------------------------------------------------------------------
# Operating points on a hand example: positives score 0.4, 0.7, 0.8, 0.9, 1.0; negatives 0.1, 0.2, 0.3, 0.5, 0.6.

HAND_Y = np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 1])
HAND_SCORES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])


@pytest.mark.parametrize(
    'rule, threshold, sensitivity, specificity',
    [
        ('youden', 0.7, 0.8, 1.0),  # J = 0.8 there; 0.6 at t = 0.4.
        ('sensitivity=0.90', 0.4, 1.0, 0.6),
        ('specificity=0.7', 0.6, 0.8, 0.8),  # The lowest threshold keeping specificity >= 0.7.
        ('specificity=1.0', 0.7, 0.8, 1.0),
        ('threshold=0.5', 0.5, 0.8, 0.6),
    ],
)
def test_operating_point_rules(rule, threshold, sensitivity, specificity):
    result = operating_point(HAND_Y, HAND_SCORES, rule)
    assert result == dict(threshold=threshold, sensitivity=sensitivity, specificity=specificity, rule=rule)


def test_operating_point_threshold_above_every_score_is_finite():
    result = operating_point(1 - HAND_Y, HAND_SCORES, 'specificity=1.0')  # The top score is now a negative.
    assert math.isfinite(result['threshold']) and result['threshold'] > HAND_SCORES.max()
    assert (result['sensitivity'], result['specificity']) == (0.0, 1.0)


@pytest.mark.parametrize('rule', ['youdens', 'sensitivity=abc', 'sensitivity=1.5', 'threshold=nan', 'recall=0.9'])
def test_operating_point_bad_rule(rule):
    with pytest.raises(ValueError, match=f'rule {rule!r}'):
        operating_point(HAND_Y, HAND_SCORES, rule)


# ----------------------------------------------------------------------------
# DeLong against an independent naive computation: psi kernel, V10/V01, S10/S01 (DeLong et al. 1988).


def naive_delong(y, a, b):
    psis = []
    for s in (a, b):
        x, z = s[y == 1], s[y == 0]
        psis.append((x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :]))  # [m, n]
    m, n = psis[0].shape
    aucs = [psi.mean() for psi in psis]
    v10 = [psi.mean(axis=1) for psi in psis]
    v01 = [psi.mean(axis=0) for psi in psis]
    s10 = [[np.sum((v10[r] - aucs[r]) * (v10[c] - aucs[c])) / (m - 1) for c in range(2)] for r in range(2)]
    s01 = [[np.sum((v01[r] - aucs[r]) * (v01[c] - aucs[c])) / (n - 1) for c in range(2)] for r in range(2)]
    var = (s10[0][0] + s10[1][1] - 2 * s10[0][1]) / m + (s01[0][0] + s01[1][1] - 2 * s01[0][1]) / n
    se = math.sqrt(var)
    z = (aucs[0] - aucs[1]) / se
    return dict(auc_a=aucs[0], auc_b=aucs[1], se=se, z=z, p_value=math.erfc(abs(z) / math.sqrt(2)))


def test_delong_matches_naive_reference_with_ties():
    y, a, b = tied_example()
    assert len(np.unique(a)) < 27 and len(np.unique(b)) < 27  # The example really has ties.
    result, expected = delong_test(y, a, b), naive_delong(y, a, b)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-10, abs=1e-12), key
    assert result['auc_a'] == pytest.approx(sklearn.metrics.roc_auc_score(y, a), abs=1e-15)
    half = 1.959963984540054 * result['se']
    assert (result['ci_low'], result['ci_high']) == pytest.approx((result['diff'] - half, result['diff'] + half))


def test_delong_identical_scores():
    y, a, _ = tied_example()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        result = delong_test(y, a, a.copy())
    assert (result['diff'], result['se'], result['z'], result['p_value']) == (0.0, 0.0, 0.0, 1.0)
    assert result['ci_low'] == result['ci_high'] == 0.0


def test_delong_needs_two_cases_per_class():
    with pytest.raises(ValueError, match='two cases of each class'):
        delong_test([1, 0, 0], [0.9, 0.1, 0.2], [0.5, 0.4, 0.3])


# ----------------------------------------------------------------------------
# Paired bootstrap.


def test_paired_bootstrap_better_vs_random():
    y, good = gaussians(200, shift=2.0)
    noise = np.random.default_rng(5).normal(size=200)
    result = paired_bootstrap_test(y, good, noise, n_boot=1000)
    assert result['p_value'] < 0.05 and result['ci_low'] > 0
    expected = sklearn.metrics.roc_auc_score(y, good) - sklearn.metrics.roc_auc_score(y, noise)
    assert result['diff'] == pytest.approx(expected)


def test_paired_bootstrap_identical():
    y, s = gaussians(100)
    assert paired_bootstrap_test(y, s, s.copy(), n_boot=300) == dict(diff=0.0, ci_low=0.0, ci_high=0.0, p_value=1.0)


# ----------------------------------------------------------------------------
# Per-class AUC.


def softmax_scores(labels: np.ndarray, num_classes: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(len(labels), num_classes)) + np.eye(num_classes)[labels]
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_multiclass_auc_matches_sklearn_one_vs_rest():
    labels = np.arange(90) % 3
    scores = softmax_scores(labels, 3)
    for given in (labels, np.eye(3)[labels].astype(np.float32)):  # Indices or one-hot.
        result = multiclass_auc(given, scores, ['a', 'b', 'c'], 'multiclass')
        for k, name in enumerate('abc'):
            assert result['per_class'][name] == sklearn.metrics.roc_auc_score(labels == k, scores[:, k])
        assert result['macro'] == pytest.approx(sklearn.metrics.roc_auc_score(labels, scores, multi_class='ovr'))


def test_multiclass_auc_absent_class_is_none_and_left_out():
    labels = np.arange(40) % 2  # Class 'c' never occurs.
    scores = softmax_scores(labels, 3)
    result = multiclass_auc(labels, scores, ['a', 'b', 'c'], 'multiclass')
    assert result['per_class']['c'] is None
    assert result['macro'] == pytest.approx((result['per_class']['a'] + result['per_class']['b']) / 2)


def test_multilabel_auc():
    rng = np.random.default_rng(2)
    labels = (rng.random((50, 3)) < 0.4).astype(np.float32)
    labels[:, 2] = 1  # Every image has class 2: no negatives, no AUC.
    scores = labels + rng.normal(size=(50, 3))
    result = multiclass_auc(labels, scores, ['a', 'b', 'c'], 'multilabel')
    expected = sklearn.metrics.roc_auc_score(labels[:, :2], scores[:, :2], average=None)
    assert [result['per_class'][name] for name in 'ab'] == pytest.approx(expected)
    assert result['per_class']['c'] is None and result['macro'] == pytest.approx(expected.mean())


def test_multiclass_auc_bad_input():
    with pytest.raises(ValueError, match='one-hot'):
        multiclass_auc([[1, 1], [0, 1]], np.zeros((2, 2)), ['a', 'b'], 'multiclass')
    with pytest.raises(ValueError, match='unknown kind'):
        multiclass_auc([0, 1], np.zeros((2, 2)), ['a', 'b'], 'binary')
    with pytest.raises(ValueError, match='shape'):
        multiclass_auc([0, 1], np.zeros((3, 2)), ['a', 'b'], 'multiclass')


# ----------------------------------------------------------------------------
# ROC figure.


def test_plot_roc_writes_png(tmp_path):
    y, s = gaussians(100)
    path = tmp_path / 'roc.png'
    plot_roc([('good', y, s), ('noise', y, np.random.default_rng(0).normal(size=100))], str(path), title='test')
    with PIL.Image.open(path) as image:
        assert image.format == 'PNG' and image.size == (500, 500)
    assert os.listdir(tmp_path) == ['roc.png']  # No temp file left behind.


# ----------------------------------------------------------------------------
# Input errors of the binary statistics.

BINARY_FUNCTIONS = [
    lambda y, s: auc_with_ci(y, s, n_boot=10),
    lambda y, s: operating_point(y, s),
    lambda y, s: delong_test(y, s, s),
    lambda y, s: paired_bootstrap_test(y, s, s, n_boot=10),
]


@pytest.mark.parametrize('function', BINARY_FUNCTIONS)
@pytest.mark.parametrize(
    'y, s, message',
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], 'both classes'),
        ([0, 0, 0], [0.1, 0.2, 0.3], 'both classes'),
        ([0, 1, 0, 1], [0.1, 0.2, 0.3], 'shape'),
        ([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4], 'non-finite'),
        ([0, 2, 0, 1], [0.1, 0.2, 0.3, 0.4], '0/1'),
    ],
)
def test_binary_input_errors(function, y, s, message):
    with pytest.raises(ValueError, match=message):
        function(np.array(y), np.array(s))
