"""Classifier statistics on a test set: AUC with a stratified bootstrap CI, operating points, paired comparisons
of two AUCs (DeLong et al. 1988; a paired bootstrap), per-class and macro AUC, and ROC figures.

Pure numpy/scipy/scikit-learn; only plot_roc imports matplotlib (the `plots` extra). Higher scores mean more
likely positive, and a case is called positive when its score is >= the threshold.
"""

import re
from collections.abc import Sequence

import numpy as np
import scipy.stats
import sklearn.metrics

import dnnlib

_BOOT_CHUNK = 1 << 22  # Bootstrap index-matrix entries per chunk (tens of MB).
_RULE = re.compile(r'(sensitivity|specificity|threshold)=(\S+)')
_RATE_TOL = 1e-12  # Rates from roc_curve are ratios of counts; forgive their rounding against the target.

# ----------------------------------------------------------------------------
# Input checks shared by the binary statistics: 0/1 labels with both classes, finite scores of equal length.


def _check_binary(y_true, *scores) -> tuple[np.ndarray, list[np.ndarray]]:
    y = np.asarray(y_true)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError(f'y_true must be a vector of 0/1 labels; got shape {y.shape}')
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError(f'AUC needs both classes; y_true has {y.sum()} positives and {(~y).sum()} negatives')
    checked = [np.asarray(s, dtype=np.float64) for s in scores]
    for s in checked:
        if s.shape != y.shape:
            raise ValueError(f'scores have shape {s.shape} but y_true has shape {y.shape}')
        if not np.isfinite(s).all():
            raise ValueError(f'scores contain {(~np.isfinite(s)).sum()} non-finite values (NaN or inf)')
    return y, checked


# ----------------------------------------------------------------------------
# Stratified bootstrap: positives and negatives resampled separately, so every replicate has both classes.
# A replicate's AUC comes from histograms over the distinct scores: O(N) per replicate, no sorting.


def _resampled_auc(s: np.ndarray, pos_idx: np.ndarray, neg_idx: np.ndarray) -> np.ndarray:
    """[B] AUCs (ties 1/2) of replicates whose positives are s[pos_idx[b]] and negatives s[neg_idx[b]]."""
    values, code = np.unique(s, return_inverse=True)  # code: [N] index of each score among the sorted values.
    rows, num_values = len(pos_idx), len(values)
    offsets = num_values * np.arange(rows)[:, None]  # [B, 1]
    hist = lambda idx: np.bincount((code[idx] + offsets).ravel(), minlength=rows * num_values).reshape(rows, -1)
    pos_hist, neg_hist = hist(pos_idx), hist(neg_idx)  # [B, U] replicate counts of each distinct score.
    neg_below = np.cumsum(neg_hist, axis=1) - neg_hist  # [B, U] negatives strictly below each value.
    wins = (pos_hist * (neg_below + 0.5 * neg_hist)).sum(axis=1)  # [B]
    return wins / (pos_idx.shape[1] * neg_idx.shape[1])


def _bootstrap_aucs(y: np.ndarray, scores: Sequence[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """[len(scores), n_boot] AUCs, every score vector evaluated on the same resamples."""
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f'n_boot must be a positive integer; got {n_boot!r}')
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    chunk = max(1, _BOOT_CHUNK // len(y))
    aucs = np.empty((len(scores), n_boot))
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        pos_idx, neg_idx = rng.choice(pos, (rows, len(pos))), rng.choice(neg, (rows, len(neg)))
        for i, s in enumerate(scores):
            aucs[i, start : start + rows] = _resampled_auc(s, pos_idx, neg_idx)
    return aucs


# ----------------------------------------------------------------------------
# Binary AUC with a stratified bootstrap percentile CI.


def auc_with_ci(y_true, scores, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Binary ROC AUC and its (1 - alpha) percentile CI over stratified bootstrap resamples.

    Args:
        y_true: [N] 0/1 labels (bool, int or float).
        scores: [N] scores.
        n_boot: Bootstrap replicates.
        alpha: One minus the CI's coverage.
        seed: Seed of the resampling; the same seed gives the same CI.

    Returns:
        dict(auc, ci_low, ci_high, n, n_pos, n_neg).

    Raises:
        ValueError: one class only, labels other than 0/1, length mismatch, non-finite scores, bad n_boot/alpha.
    """
    y, (s,) = _check_binary(y_true, scores)
    if not 0 < alpha < 1:
        raise ValueError(f'alpha must lie in (0, 1); got {alpha}')
    low, high = np.quantile(_bootstrap_aucs(y, [s], n_boot, seed)[0], [alpha / 2, 1 - alpha / 2])
    auc, n_pos = sklearn.metrics.roc_auc_score(y, s), int(y.sum())
    return dict(auc=float(auc), ci_low=float(low), ci_high=float(high), n=len(y), n_pos=n_pos, n_neg=len(y) - n_pos)


# ----------------------------------------------------------------------------
# Operating point: the threshold a rule picks, with its sensitivity and specificity.


def _parse_rule(rule: str) -> tuple[str, float | None]:
    match = _RULE.fullmatch(rule.replace(' ', ''))
    if rule.strip() == 'youden':
        return 'youden', None
    try:
        kind, value = match.group(1), float(match.group(2))
    except (AttributeError, ValueError):
        expected = 'youden, sensitivity=X, specificity=X or threshold=X'
        raise ValueError(f'unknown operating-point rule {rule!r}; expected {expected}') from None
    if not np.isfinite(value) or (kind != 'threshold' and not 0 <= value <= 1):
        raise ValueError(f'operating-point rule {rule!r}: the value must be finite, and in [0, 1] for a rate')
    return kind, value


def operating_point(y_true, scores, rule: str = 'youden') -> dict:
    """The threshold a rule picks, and the sensitivity and specificity there.

    Args:
        y_true: [N] 0/1 labels.
        scores: [N] scores.
        rule: 'youden' (max sensitivity + specificity - 1, the highest threshold on ties), 'sensitivity=X' (the
            highest threshold with sensitivity >= X), 'specificity=X' (the lowest threshold with specificity >= X)
            or 'threshold=X' (a fixed threshold).

    Returns:
        dict(threshold, sensitivity, specificity, rule); the threshold is always finite.

    Raises:
        ValueError: a bad rule, or the input errors of auc_with_ci.
    """
    y, (s,) = _check_binary(y_true, scores)
    kind, value = _parse_rule(rule)
    threshold = value
    if kind != 'threshold':
        fpr, tpr, thresholds = sklearn.metrics.roc_curve(y, s, drop_intermediate=False)  # Thresholds decrease.
        thresholds[0] = np.nextafter(s.max(), np.inf)  # sklearn's first (inf or max + 1) calls nothing positive.
        if kind == 'youden':
            threshold = thresholds[np.argmax(tpr - fpr)]
        elif kind == 'sensitivity':
            threshold = thresholds[np.flatnonzero(tpr >= value - _RATE_TOL)[0]]
        else:
            threshold = thresholds[np.flatnonzero(1 - fpr >= value - _RATE_TOL)[-1]]
    sensitivity, specificity = np.mean(s[y] >= threshold), np.mean(s[~y] < threshold)
    return dict(threshold=float(threshold), sensitivity=float(sensitivity), specificity=float(specificity), rule=rule)


# ----------------------------------------------------------------------------
# Paired DeLong test of two correlated AUCs (DeLong et al. 1988), with the midrank placement values of
# Sun & Xu (2014): O(N log N), exact with ties.


def _placements(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Structural components: V10 [m] over the positives, V01 [n] over the negatives."""
    x, z = s[y], s[~y]
    m, n = len(x), len(z)
    ranks = scipy.stats.rankdata(np.concatenate([x, z]))  # [m + n] midranks over all cases.
    v10 = (ranks[:m] - scipy.stats.rankdata(x)) / n  # Share of negatives below each positive (ties 1/2).
    v01 = 1 - (ranks[m:] - scipy.stats.rankdata(z)) / m  # Share of positives above each negative (ties 1/2).
    return v10, v01


def delong_test(y_true, scores_a, scores_b) -> dict:
    """Two-sided DeLong test of AUC(a) - AUC(b) on the same cases, and the 95% CI of the difference.

    Args:
        y_true: [N] 0/1 labels, at least two of each class.
        scores_a: [N] scores of classifier a.
        scores_b: [N] scores of classifier b on the same cases.

    Returns:
        dict(auc_a, auc_b, diff, se, z, p_value, ci_low, ci_high), diff = auc_a - auc_b. With se = 0 (e.g.
        identical scores): z = 0 and p = 1 when diff = 0, else z = +-inf and p = 0.

    Raises:
        ValueError: fewer than two cases of a class, or the input errors of auc_with_ci.
    """
    y, (a, b) = _check_binary(y_true, scores_a, scores_b)
    m, n = int(y.sum()), int((~y).sum())
    if min(m, n) < 2:
        raise ValueError(f'the DeLong test needs two cases of each class; got {m} positives and {n} negatives')
    (v10_a, v01_a), (v10_b, v01_b) = _placements(a, y), _placements(b, y)
    cov = np.cov([v10_a, v10_b]) / m + np.cov([v01_a, v01_b]) / n  # [2, 2]: S10 / m + S01 / n.
    se = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    auc_a, auc_b = float(v10_a.mean()), float(v10_b.mean())
    diff = auc_a - auc_b
    z = diff / se if se > 0 else 0.0 if diff == 0 else float(np.copysign(np.inf, diff))
    p_value, half = float(2 * scipy.stats.norm.sf(abs(z))), float(scipy.stats.norm.ppf(0.975) * se)
    result = dict(auc_a=auc_a, auc_b=auc_b, diff=diff, se=se, z=z, p_value=min(p_value, 1.0))
    return dict(result, ci_low=diff - half, ci_high=diff + half)


# ----------------------------------------------------------------------------
# Paired stratified bootstrap of an AUC difference: both classifiers scored on the same resamples.


def paired_bootstrap_test(y_true, scores_a, scores_b, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """AUC(a) - AUC(b), its 95% percentile CI, and a two-sided bootstrap p-value.

    p = min(1, 2 (1 + k) / (n_boot + 1)), k being the replicates on the smaller side of 0 (a replicate at 0
    counts on both sides, so identical scores give p = 1).

    Args:
        y_true: [N] 0/1 labels.
        scores_a: [N] scores of classifier a.
        scores_b: [N] scores of classifier b on the same cases.
        n_boot: Bootstrap replicates.
        seed: Seed of the resampling.

    Returns:
        dict(diff, ci_low, ci_high, p_value), diff = auc_a - auc_b on the full set.

    Raises:
        ValueError: the input errors of auc_with_ci.
    """
    y, (a, b) = _check_binary(y_true, scores_a, scores_b)
    boots_a, boots_b = _bootstrap_aucs(y, [a, b], n_boot, seed)
    d = boots_a - boots_b  # [n_boot]
    low, high = np.quantile(d, [0.025, 0.975])
    p_value = min(1.0, 2 * (1 + min(np.sum(d <= 0), np.sum(d >= 0))) / (n_boot + 1))
    diff = sklearn.metrics.roc_auc_score(y, a) - sklearn.metrics.roc_auc_score(y, b)
    return dict(diff=float(diff), ci_low=float(low), ci_high=float(high), p_value=float(p_value))


# ----------------------------------------------------------------------------
# One-vs-rest AUC of each class of a multiclass or multilabel classifier, and their macro mean.


def _indicator_labels(labels, num_classes: int, kind: str) -> np.ndarray:
    """[N, K] bool indicators from class indices [N] (multiclass) or 0/1 arrays [N, K]."""
    y = np.asarray(labels)
    if kind == 'multiclass' and y.ndim == 1:
        if not np.isin(y, np.arange(num_classes)).all():
            raise ValueError(f'multiclass labels must be class indices in [0, {num_classes})')
        return np.eye(num_classes, dtype=bool)[y.astype(np.int64)]
    if y.ndim != 2 or y.shape[1] != num_classes or not np.isin(y, (0, 1)).all():
        raise ValueError(f'labels must be 0/1 of shape [N, {num_classes}]; got shape {y.shape}')
    if kind == 'multiclass' and not (y.sum(axis=1) == 1).all():
        raise ValueError("multiclass labels must be one-hot (one class per row); use kind='multilabel'")
    return y.astype(bool)


def multiclass_auc(labels, scores, class_names: Sequence[str], kind: str) -> dict:
    """Per-class one-vs-rest ROC AUC, and the macro mean over the classes that have one.

    A class with no positives or no negatives in the set has no AUC: its entry is None and it is left out of the
    macro mean, which is None when no class has an AUC.

    Args:
        labels: 'multiclass': class indices [N] or one-hot [N, K]; 'multilabel': multi-hot [N, K].
        scores: [N, K] per-class scores (probabilities).
        class_names: K names in column order.
        kind: 'multiclass' or 'multilabel'.

    Returns:
        dict(per_class={name: auc or None}, macro=float or None).

    Raises:
        ValueError: unknown kind, shapes that disagree, labels that are not indices or 0/1, non-finite scores.
    """
    if kind not in ('multiclass', 'multilabel'):
        raise ValueError(f"unknown kind {kind!r}; expected 'multiclass' or 'multilabel'")
    s = np.asarray(scores, dtype=np.float64)
    y = _indicator_labels(labels, len(class_names), kind)
    if s.shape != y.shape or not np.isfinite(s).all():
        raise ValueError(f'scores must be finite, of shape {y.shape} like the labels; got shape {s.shape}')
    per_class = {}
    for k, name in enumerate(class_names):
        has_auc = 0 < y[:, k].sum() < len(y)
        per_class[name] = float(sklearn.metrics.roc_auc_score(y[:, k], s[:, k])) if has_auc else None
    aucs = [auc for auc in per_class.values() if auc is not None]
    return dict(per_class=per_class, macro=float(np.mean(aucs)) if aucs else None)


# ----------------------------------------------------------------------------
# ROC figure of one or more binary score vectors, written atomically as PNG.


def plot_roc(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str, title: str | None = None) -> None:
    """One 5x5 in, 100 dpi ROC figure, a curve per (name, y_true, scores) labelled "name (AUC 0.923)".

    Args:
        curves: (name, [N] 0/1 labels, [N] scores) per curve; each needs both classes.
        path: PNG path, replaced atomically.
        title: Figure title.

    Raises:
        ValueError: the input errors of auc_with_ci, for any curve.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # The `plots` extra; no pyplot, no global state.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, y_true, scores in curves:
        y, (s,) = _check_binary(y_true, scores)
        fpr, tpr, _ = sklearn.metrics.roc_curve(y, s)
        ax.plot(fpr, tpr, label=f'{name} (AUC {sklearn.metrics.roc_auc_score(y, s):.3f})')
    ax.plot([0, 1], [0, 1], linestyle='--', color='gray', linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel='1 - specificity', ylabel='sensitivity', aspect='equal')
    ax.set_title(title or '')
    if curves:
        ax.legend(loc='lower right', fontsize='small')
    fig.tight_layout()
    with dnnlib.util.atomic_write(path) as f:
        fig.savefig(f, format='png')
