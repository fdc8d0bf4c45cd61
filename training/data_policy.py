"""Every read of the training set outside the discriminator's step goes through a policy.

The open policy reads freely, as upstream does. The private policy (one switch: `is_private`, for DP-SGD,
where only D's step may touch private images or labels) samples fake labels without the training labels,
keeps ADA's p fixed (its statistic is D's output on reals), writes no reals grid and prints no label counts.

Fake labels for G and D steps follow `cond_sampling` (train.py --cond-sampling):
    'data'      a random training label (upstream). Open mode only.
    'balanced'  every class equally often. Open, one-hot: uniform over the classes that have images; open,
                multi-hot: a class uniformly (classes without images skipped), then a random training label
                that has it on. Private (no labels read): one-hot vectors of a class uniform over all K.
    [P1..PK]    a public marginal: one-hot labels drawn with these weights (normalised); multi-hot labels with
                independent per-class rates in [0, 1].
Every draw uses the global numpy RNG, which the training loop seeds per step, so runs resume exactly.
"""

import math

import numpy as np

# ----------------------------------------------------------------------------
# cond_sampling: 'data' | 'balanced' | 'P1,P2,...' (or a list of numbers) -> 'data' | 'balanced' | [floats].


def parse_cond_sampling(spec) -> str | list[float]:
    """Normalise a --cond-sampling value. Raises ValueError for anything else."""
    if isinstance(spec, str) and spec in ('data', 'balanced'):
        return spec
    try:
        values = [float(v) for v in (spec.split(',') if isinstance(spec, str) else spec)]
    except (TypeError, ValueError):
        raise ValueError(f'{spec!r}: expected data, balanced or a comma list of class weights') from None
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f'{spec!r}: class weights must be finite non-negative numbers')
    return values


def check_marginal(marginal, label_dim: int, is_onehot: bool) -> np.ndarray:
    """The marginal as float64 [label_dim]; ValueError if it does not fit the labels."""
    marginal = np.asarray(marginal, dtype=np.float64)
    if marginal.shape != (label_dim,) or not np.all(marginal >= 0):
        raise ValueError(f'label marginal must be {label_dim} non-negative numbers (one per class), '
                         f'got {marginal.tolist()}')  # fmt: skip
    if is_onehot and marginal.sum() <= 0:
        raise ValueError('label marginal of one-hot labels needs at least one positive weight')
    if not is_onehot and marginal.max(initial=0) > 1:
        raise ValueError(f'label marginal of multi-hot labels holds per-class rates in [0, 1], got {marginal.tolist()}')
    return marginal


# ----------------------------------------------------------------------------
# Samplers shared by both policies: from a marginal, and one class per label uniform over the given classes.


def sample_from_marginal(marginal, training_set, n: int) -> np.ndarray:
    dim, is_onehot = training_set.label_dim, training_set.has_onehot_labels
    marginal = check_marginal(marginal, dim, is_onehot)
    if not is_onehot:  # Multi-hot: independent per-class rates.
        return (np.random.rand(n, dim) < marginal).astype(np.float32)
    classes = np.random.choice(dim, size=n, p=marginal / marginal.sum())
    return np.eye(dim, dtype=np.float32)[classes]


def sample_uniform_classes(classes, dim: int, n: int) -> np.ndarray:
    """[n, dim] one-hot labels, the class uniform over `classes`."""
    return np.eye(dim, dtype=np.float32)[np.asarray(classes)[np.random.randint(len(classes), size=n)]]


# ----------------------------------------------------------------------------
# Open: upstream behaviour (reals grid, ADA on real signs); fake labels as `cond_sampling` says.


class OpenDataPolicy:
    is_private = False
    writes_reals_grid = True
    reads_real_signs = True

    def __init__(self, cond_sampling='data'):
        self.cond_sampling = parse_cond_sampling(cond_sampling)
        self._members_of = None  # (training_set, labels, members), read once for 'balanced'.

    def sample_fake_labels(self, training_set, n: int) -> np.ndarray:
        """[n, label_dim] labels for generated images (global numpy RNG, so runs resume exactly)."""
        if self.cond_sampling == 'data':
            labels = [training_set.get_label(np.random.randint(len(training_set))) for _ in range(n)]
            return np.stack(labels).reshape(n, training_set.label_dim).astype(np.float32)
        if training_set.label_dim == 0:
            return np.zeros([n, 0], dtype=np.float32)
        if self.cond_sampling == 'balanced':
            return self._sample_balanced(training_set, n)
        return sample_from_marginal(self.cond_sampling, training_set, n)

    def _sample_balanced(self, training_set, n):
        labels, members = self._class_members(training_set)
        present = [k for k, rows in enumerate(members) if len(rows)]  # Classes without images are skipped.
        if not present:
            raise ValueError('balanced fake labels need at least one class with images')
        if training_set.has_onehot_labels:
            return sample_uniform_classes(present, training_set.label_dim, n)
        classes = np.asarray(present)[np.random.randint(len(present), size=n)]
        picks = [members[k][np.random.randint(len(members[k]))] for k in classes]
        return labels[picks].astype(np.float32)

    def _class_members(self, training_set):
        """([N, K] training labels, per class the indices of the labels that have it on), read once."""
        if self._members_of is None or self._members_of[0] is not training_set:
            labels = np.stack([training_set.get_label(i) for i in range(len(training_set))])
            labels = labels.reshape(len(training_set), training_set.label_dim)
            members = [np.flatnonzero(labels[:, k] > 0) for k in range(labels.shape[1])]
            self._members_of = (training_set, labels, members)
        return self._members_of[1:]

    def grid_labels(self, training_set, indices) -> np.ndarray:
        return np.stack([training_set.get_label(i) for i in indices]).astype(np.float32)

    def label_summary(self, training_set) -> str:
        return training_set.format_label_stats()


# ----------------------------------------------------------------------------
# Private: fake labels without the training labels ('balanced' or a public marginal); nothing else read.


class PrivateDataPolicy:
    is_private = True
    writes_reals_grid = False
    reads_real_signs = False

    def __init__(self, cond_sampling='balanced'):
        self.cond_sampling = parse_cond_sampling(cond_sampling)
        if self.cond_sampling == 'data':
            raise ValueError('private mode cannot draw fake labels from the private training labels '
                             "(cond_sampling='data'); use 'balanced' or a public marginal")  # fmt: skip

    def sample_fake_labels(self, training_set, n: int) -> np.ndarray:
        dim = training_set.label_dim
        if dim == 0:
            return np.zeros([n, 0], dtype=np.float32)
        if self.cond_sampling == 'balanced':  # One class on, uniform over all K (one-hot or multi-hot).
            return sample_uniform_classes(np.arange(dim), dim, n)
        return sample_from_marginal(self.cond_sampling, training_set, n)

    def grid_labels(self, training_set, indices) -> np.ndarray:
        dim = training_set.label_dim
        return np.eye(dim, dtype=np.float32)[np.arange(len(indices)) % dim] if dim else np.zeros([len(indices), 0])

    def label_summary(self, training_set) -> str:
        return f'{training_set.label_dim} label dims (counts not shown: private mode)'


def make_data_policy(is_private: bool, cond_sampling='data'):
    """The policy for a run; ValueError for private mode with cond_sampling='data' or a bad spec."""
    return PrivateDataPolicy(cond_sampling) if is_private else OpenDataPolicy(cond_sampling)


# ----------------------------------------------------------------------------
