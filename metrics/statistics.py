"""The maths of generative-model metrics on precomputed features ([N, D] float64 arrays): Frechet distance (FID),
kernel distance (KID), improved precision/recall and density/coverage.

Pure numpy/scipy; no networks. Distances are Euclidean and computed in row blocks, so 10k x 10k sets stay in
memory. Balls are closed: a point at exactly a sample's radius is inside it.
"""

from collections.abc import Iterator

import numpy as np
import scipy.linalg

_BATCH = 1024  # Rows of a distance block: a [1024, N] float64 block is 80 MB at N = 10k.

# ----------------------------------------------------------------------------
# Input checks: finite 2-D float64 feature arrays with enough rows and a shared feature dimension.


def _check_features(x, name: str, min_rows: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f'{name} must be a 2-D [N, D] feature array; got shape {x.shape}')
    if x.shape[0] < min_rows:
        raise ValueError(f'{name} needs at least {min_rows} samples; got {x.shape[0]}')
    if not np.isfinite(x).all():
        raise ValueError(f'{name} contains {(~np.isfinite(x)).sum()} non-finite values (NaN or inf)')
    return x


def _check_pair(real, gen, min_real: int, min_gen: int) -> tuple[np.ndarray, np.ndarray]:
    real, gen = _check_features(real, 'real', min_real), _check_features(gen, 'gen', min_gen)
    if real.shape[1] != gen.shape[1]:
        raise ValueError(f'real and gen features differ in dimension: {real.shape[1]} vs {gen.shape[1]}')
    return real, gen


def _check_count(value, name: str, low: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f'{name} must be an integer >= {low}; got {value!r}')
    return int(value)


# ----------------------------------------------------------------------------
# Feature statistics: the mean and covariance that FID compares.


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, N - 1) of a feature set.

    Args:
        features: [N, D] features, N >= 2.

    Returns:
        (mu [D], sigma [D, D]), float64.

    Raises:
        ValueError: not 2-D, fewer than 2 samples, or non-finite values.
    """
    x = _check_features(features, 'features', 2)
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


# ----------------------------------------------------------------------------
# Frechet distance between two Gaussians (Heusel et al. 2017, FID), as in the TTUR reference implementation.


def frechet_distance(mu1, sigma1, mu2, sigma2, *, eps: float = 1e-6) -> float:
    """Frechet distance ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)).

    The real part of the matrix square root is kept (rounding can leave a tiny imaginary part). When the square
    root is not finite (a singular product), eps * I is added to both covariances and it is taken again, as the
    original TTUR implementation does.

    Args:
        mu1: [D] mean of the first set.
        sigma1: [D, D] covariance of the first set.
        mu2: [D] mean of the second set.
        sigma2: [D, D] covariance of the second set.
        eps: Diagonal offset of the fallback.

    Returns:
        The distance (FID when the features are Inception pool features).

    Raises:
        ValueError: shapes that do not match, or non-finite values.
    """
    mu1, sigma1, mu2, sigma2 = (np.asarray(v, dtype=np.float64) for v in (mu1, sigma1, mu2, sigma2))
    shapes = [v.shape for v in (mu1, sigma1, mu2, sigma2)]
    d = len(mu1) if mu1.ndim == 1 else -1
    if shapes != [(d,), (d, d), (d,), (d, d)]:
        raise ValueError(f'expected mu [D], sigma [D, D] for both sets, one D; got shapes {shapes}')
    if not all(np.isfinite(v).all() for v in (mu1, sigma1, mu2, sigma2)):
        raise ValueError('mu and sigma must be finite')
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(len(mu1))
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real)


# ----------------------------------------------------------------------------
# Kernel distance (Binkowski et al. 2018, KID): unbiased MMD^2 with the cubic polynomial kernel over random
# subsets, as StyleGAN2-ADA's metrics/kernel_inception_distance.py computes it.


def _cubic_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M] kernel (a.b / D + 1)^3; k * k * k, as numpy's ** 3 is slower."""
    k = a @ b.T / a.shape[1] + 1
    return k * k * k


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-sized [m, D] sets: within-set diagonals dropped, all cross pairs kept."""
    m = len(x)
    within = _cubic_kernel(x, x) + _cubic_kernel(y, y)  # [m, m]
    return float((within.sum() - np.trace(within)) / (m * (m - 1)) - 2 * _cubic_kernel(x, y).sum() / (m * m))


def kernel_inception_distance(
    real, gen, *, num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel distance: unbiased MMD^2 with the kernel (x.y / D + 1)^3, averaged over random subsets.

    Args:
        real: [N, D] real features, N >= 2.
        gen: [M, D] generated features, M >= 2.
        num_subsets: Random subsets averaged over.
        max_subset_size: Each subset draws min(N, M, this) samples without replacement from each set.
        seed: Seed of the subset draws; the same seed gives the same result.

    Returns:
        (mean, std) of the per-subset MMD^2; std is the population one (ddof 0).

    Raises:
        ValueError: bad shapes, non-finite values, fewer than 2 samples, or bad num_subsets/max_subset_size.
    """
    real, gen = _check_pair(real, gen, 2, 2)
    num_subsets = _check_count(num_subsets, 'num_subsets', 1)
    m = min(len(real), len(gen), _check_count(max_subset_size, 'max_subset_size', 2))
    rng = np.random.default_rng(seed)
    pick = lambda x: x[rng.choice(len(x), m, replace=False)]  # [m, D]
    mmd2 = [_mmd2_unbiased(pick(gen), pick(real)) for _ in range(num_subsets)]
    return float(np.mean(mmd2)), float(np.std(mmd2))


# ----------------------------------------------------------------------------
# Euclidean distances in row blocks, and the k-th nearest-neighbour radii built on them.


def _distance_blocks(a: np.ndarray, b: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, [B, M] distances from a[start : start + B] to every row of b), B <= batch_size, for each block."""
    b_sq = (b * b).sum(axis=1)  # [M]
    for start in range(0, len(a), batch_size):
        rows = a[start : start + batch_size]  # [B, D]
        sq = (rows * rows).sum(axis=1)[:, None] + b_sq[None, :] - 2 * rows @ b.T  # [B, M]
        yield start, np.sqrt(np.maximum(sq, 0))


def knn_radii(features, k: int, *, batch_size: int = _BATCH) -> np.ndarray:
    """Distance from each sample to its k-th nearest other sample (itself excluded; duplicates count).

    Args:
        features: [N, D] features, N > k.
        k: Neighbour rank, k >= 1.
        batch_size: Rows per distance block.

    Returns:
        [N] radii.

    Raises:
        ValueError: bad shapes, non-finite values, k or batch_size < 1, or N <= k.
    """
    k, batch_size = _check_count(k, 'k', 1), _check_count(batch_size, 'batch_size', 1)
    x = _check_features(features, 'features', k + 1)
    radii = np.empty(len(x))
    for start, block in _distance_blocks(x, x, batch_size):
        rows = np.arange(len(block))
        block[rows, start + rows] = np.inf  # Not one's own neighbour.
        radii[start : start + len(block)] = np.partition(block, k - 1, axis=1)[:, k - 1]
    return radii


def _ball_hits(
    centres: np.ndarray, radii: np.ndarray, points: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """([N] points inside each centre's ball, [M] whether each point lies inside some ball)."""
    counts, inside = np.empty(len(centres), dtype=np.int64), np.zeros(len(points), dtype=bool)
    for start, block in _distance_blocks(centres, points, batch_size):
        hits = block <= radii[start : start + len(block), None]  # [B, M]
        counts[start : start + len(block)] = hits.sum(axis=1)
        inside |= hits.any(axis=0)
    return counts, inside


# ----------------------------------------------------------------------------
# Improved precision and recall (Kynkaanniemi et al. 2019): a manifold is the union of balls around its samples,
# each reaching the sample's k-th nearest other sample.


def precision_recall(real, gen, *, k: int = 3, batch_size: int = _BATCH) -> dict:
    """Share of generated samples inside the real manifold (precision), and of real inside the generated (recall).

    Args:
        real: [N, D] real features, N > k.
        gen: [M, D] generated features, M > k.
        k: Neighbour rank of the radii.
        batch_size: Rows per distance block.

    Returns:
        dict(precision, recall), each in [0, 1].

    Raises:
        ValueError: bad shapes, non-finite values, k or batch_size < 1, or a set of k samples or fewer.
    """
    k = _check_count(k, 'k', 1)
    real, gen = _check_pair(real, gen, k + 1, k + 1)
    _, gen_inside = _ball_hits(real, knn_radii(real, k, batch_size=batch_size), gen, batch_size)
    _, real_inside = _ball_hits(gen, knn_radii(gen, k, batch_size=batch_size), real, batch_size)
    return dict(precision=float(gen_inside.mean()), recall=float(real_inside.mean()))


# ----------------------------------------------------------------------------
# Density and coverage (Naeem et al. 2020): k-NN balls around the real samples only, r_i the distance from
# real_i to its k-th nearest other real sample.


def density_coverage(real, gen, *, k: int = 5, batch_size: int = _BATCH) -> dict:
    """Density 1 / (k M) sum_j sum_i 1[gen_j in ball(real_i, r_i)], and coverage: the share of real balls holding
    some generated sample. Density is about 1 for matching distributions; a set against itself gives (k + 1) / k.

    Args:
        real: [N, D] real features, N > k.
        gen: [M, D] generated features.
        k: Neighbour rank of the radii.
        batch_size: Rows per distance block.

    Returns:
        dict(density, coverage).

    Raises:
        ValueError: bad shapes, non-finite values, k or batch_size < 1, N <= k or M = 0.
    """
    k = _check_count(k, 'k', 1)
    real, gen = _check_pair(real, gen, k + 1, 1)
    counts, _ = _ball_hits(real, knn_radii(real, k, batch_size=batch_size), gen, batch_size)
    return dict(density=float(counts.sum() / (k * len(gen))), coverage=float((counts > 0).mean()))
