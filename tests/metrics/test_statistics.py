"""Metric maths on feature arrays against independent computations written here: FID via an eigendecomposition
and the Gaussian closed form, KID via an explicit unbiased MMD^2, precision/recall and density/coverage via
brute-force k-NN loops, and the input errors."""

import itertools

import numpy as np
import pytest
import scipy.linalg

from metrics.statistics import (
    density_coverage,
    feature_stats,
    frechet_distance,
    kernel_inception_distance,
    knn_radii,
    precision_recall,
)


def cloud(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# ----------------------------------------------------------------------------
# Feature statistics and the Frechet distance.


def fid_reference(x: np.ndarray, y: np.ndarray) -> float:
    """FID via Tr(sqrtm(S1 S2)) = sum of sqrt(eig(sqrt(S1) S2 sqrt(S1))), all by symmetric eigendecompositions."""
    mu1, mu2, s1, s2 = x.mean(0), y.mean(0), np.cov(x.T), np.cov(y.T)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def test_feature_stats_are_mean_and_unbiased_covariance():
    x = cloud(50, 4, seed=0)
    mu, sigma = feature_stats(x)
    assert mu.shape == (4,) and sigma.shape == (4, 4) and sigma.dtype == np.float64
    centred = x - x.mean(0)
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-15)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-12)


def test_fid_of_a_set_with_itself_is_zero():
    stats = feature_stats(cloud(500, 8, seed=1))
    assert abs(frechet_distance(*stats, *stats)) < 1e-6


def test_fid_equals_eigendecomposition_reference():
    x = cloud(300, 6, seed=2)
    y = 1.7 * cloud(250, 6, seed=3) @ np.random.default_rng(4).normal(size=(6, 6)) + 0.8  # Shifted, scaled, mixed.
    fid = frechet_distance(*feature_stats(x), *feature_stats(y))
    assert fid == pytest.approx(fid_reference(x, y), rel=1e-6)


def test_fid_approaches_gaussian_closed_form():
    mu1, mu2 = np.zeros(4), np.array([1.0, -0.5, 0.0, 2.0])
    var1, var2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([4.0, 1.0, 0.5, 0.25])
    rng = np.random.default_rng(5)
    x = mu1 + np.sqrt(var1) * rng.normal(size=(40000, 4))
    y = mu2 + np.sqrt(var2) * rng.normal(size=(40000, 4))
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)  # Diagonal covariances.
    assert frechet_distance(*feature_stats(x), *feature_stats(y)) == pytest.approx(closed, abs=0.05)


@pytest.mark.filterwarnings('ignore::scipy.linalg.LinAlgWarning')
def test_fid_is_finite_on_a_singular_product():
    sigma = np.diag([1.0, 0.0, 0.0])  # Rank 1: sqrtm warns but stays finite.
    fid = frechet_distance(np.zeros(3), sigma, np.ones(3), sigma)
    assert fid == pytest.approx(3.0, abs=1e-6)


def test_fid_adds_eps_when_sqrtm_is_not_finite(monkeypatch):
    sqrtm, seen = scipy.linalg.sqrtm, []
    fake = lambda a: (seen.append(a), np.full_like(a, np.nan) if len(seen) == 1 else sqrtm(a))[1]
    monkeypatch.setattr(scipy.linalg, 'sqrtm', fake)
    (mu1, s1), (mu2, s2) = feature_stats(cloud(200, 3, seed=21)), feature_stats(cloud(200, 3, seed=22))
    fid = frechet_distance(mu1, s1, mu2, s2, eps=1e-3)
    np.testing.assert_allclose(seen[1], (s1 + 1e-3 * np.eye(3)) @ (s2 + 1e-3 * np.eye(3)), rtol=1e-14)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(sqrtm(seen[1])).real
    assert len(seen) == 2 and fid == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------
# Kernel distance.


def mmd2_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / D + 1)^3, by explicit loops over the pairs."""
    m, d = x.shape
    kernel = lambda a, b: (float(np.dot(a, b)) / d + 1) ** 3
    within = sum(kernel(x[i], x[j]) + kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    cross = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
    return within / (m * (m - 1)) - 2 * cross / (m * m)


def test_kid_equals_explicit_unbiased_mmd():
    real, gen = cloud(20, 5, seed=6), cloud(20, 5, seed=7, shift=0.4)
    mean, std = kernel_inception_distance(real, gen, num_subsets=1, max_subset_size=20)
    assert mean == pytest.approx(mmd2_reference(gen, real), rel=1e-10)  # A full-size subset is a permutation.
    assert std == 0.0


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    real, same, other = cloud(600, 16, seed=8), cloud(600, 16, seed=9), cloud(600, 16, seed=10, shift=0.5)
    near, _ = kernel_inception_distance(real, same, num_subsets=20, max_subset_size=300)
    far, _ = kernel_inception_distance(real, other, num_subsets=20, max_subset_size=300)
    assert abs(near) < 0.02 and far > 0.5


def test_kid_is_deterministic_for_a_seed():
    real, gen = cloud(100, 4, seed=11), cloud(80, 4, seed=12)
    kid = lambda seed: kernel_inception_distance(real, gen, num_subsets=5, max_subset_size=30, seed=seed)
    assert kid(3) == kid(3) and kid(3) != kid(4)


# ----------------------------------------------------------------------------
# Precision/recall and density/coverage against brute-force k-NN.


def brute_radii(x: np.ndarray, k: int) -> np.ndarray:
    return np.array(
        [sorted(np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if j != i)[k - 1] for i in range(len(x))]
    )


def brute_inside(point: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> list[bool]:
    return [np.linalg.norm(point - c) <= r for c, r in zip(centres, radii)]


def brute_prdc(real: np.ndarray, gen: np.ndarray, k_pr: int, k_dc: int) -> dict:
    r_real, r_gen, r_dc = brute_radii(real, k_pr), brute_radii(gen, k_pr), brute_radii(real, k_dc)
    precision = np.mean([any(brute_inside(g, real, r_real)) for g in gen])
    recall = np.mean([any(brute_inside(r, gen, r_gen)) for r in real])
    inside = np.array([brute_inside(g, real, r_dc) for g in gen])  # [M, N]
    density = inside.sum() / (k_dc * len(gen))
    return dict(precision=precision, recall=recall, density=density, coverage=inside.any(axis=0).mean())


def prdc(real, gen, k_pr=3, k_dc=5, batch_size=1024) -> dict:
    return {
        **precision_recall(real, gen, k=k_pr, batch_size=batch_size),
        **density_coverage(real, gen, k=k_dc, batch_size=batch_size),
    }


def test_knn_radii_equal_brute_force():
    x = cloud(40, 3, seed=13)
    for k, batch_size in itertools.product((1, 3, 7), (1, 7, 1024)):
        np.testing.assert_allclose(knn_radii(x, k, batch_size=batch_size), brute_radii(x, k), rtol=1e-10)


def test_knn_radii_count_duplicates_but_not_self():
    x = np.array([[0.0], [0.0], [1.0], [3.0]])
    np.testing.assert_allclose(knn_radii(x, 1), [0.0, 0.0, 1.0, 2.0], atol=1e-12)


@pytest.mark.parametrize('batch_size', [1, 8, 1024])
def test_prdc_equal_brute_force(batch_size):
    real, gen = cloud(40, 3, seed=14), cloud(35, 3, seed=15, shift=0.5) * 1.3
    result, expected = prdc(real, gen, batch_size=batch_size), brute_prdc(real, gen, 3, 5)
    assert set(result) == set(expected)
    for name in expected:
        assert result[name] == pytest.approx(expected[name], abs=1e-12), name
    assert 0 < result['precision'] < 1 and 0 < result['coverage'] < 1  # A case that discriminates.


def test_prdc_of_a_set_with_itself():
    x = cloud(60, 3, seed=16)
    result = prdc(x, x.copy(), k_dc=5)
    assert result['precision'] == result['recall'] == result['coverage'] == 1.0
    assert result['density'] == pytest.approx(6 / 5)  # Each ball holds its centre and its 5 neighbours.


def test_prdc_of_disjoint_clouds_are_zero():
    result = prdc(cloud(40, 3, seed=17), cloud(35, 3, seed=18, shift=100.0))
    assert result == dict(precision=0.0, recall=0.0, density=0.0, coverage=0.0)


def test_density_is_near_one_for_one_distribution():
    result = density_coverage(cloud(2000, 8, seed=19), cloud(2000, 8, seed=20), k=5)
    assert result['density'] == pytest.approx(1.0, abs=0.1) and result['coverage'] > 0.9


# ----------------------------------------------------------------------------
# Input errors: one-line ValueErrors.

GOOD = np.zeros((10, 3)) + np.arange(10)[:, None]


@pytest.mark.parametrize(
    'call',
    [
        lambda: feature_stats(np.zeros(5)),  # 1-D.
        lambda: feature_stats(np.zeros((1, 3))),  # Too few samples.
        lambda: frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2)),  # Dimensions differ.
        lambda: frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.full((3, 3), np.nan)),
        lambda: kernel_inception_distance(GOOD, GOOD[:, :2]),
        lambda: kernel_inception_distance(GOOD, GOOD, num_subsets=0),
        lambda: kernel_inception_distance(GOOD, GOOD, max_subset_size=1),
        lambda: kernel_inception_distance(GOOD[:1], GOOD),
        lambda: precision_recall(GOOD, GOOD[:3], k=3),  # gen has N <= k.
        lambda: precision_recall(GOOD, np.where(GOOD > 5, np.inf, GOOD)),
        lambda: precision_recall(GOOD, GOOD, k=0),
        lambda: precision_recall(GOOD, GOOD, batch_size=0),
        lambda: density_coverage(GOOD[:5], GOOD, k=5),  # real has N <= k.
        lambda: density_coverage(GOOD, np.zeros((0, 3))),
        lambda: density_coverage(GOOD[None], GOOD),  # 3-D.
        lambda: knn_radii(GOOD, 2.5),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError) as info:
        call()
    assert '\n' not in str(info.value)
