"""Every read of the training set outside the discriminator's step goes through a policy.

The open policy reads freely, as upstream does. The private policy (one switch: `is_private`, for DP-SGD,
where only D's step may touch private images or labels) samples fake labels from a public marginal, keeps
ADA's p fixed (its statistic is D's output on reals), writes no reals grid and prints no label counts.
"""

import numpy as np

# ----------------------------------------------------------------------------
# Open: upstream behaviour (fake labels drawn from the training labels, reals grid, ADA on real signs).


class OpenDataPolicy:
    is_private = False
    writes_reals_grid = True
    reads_real_signs = True

    def sample_fake_labels(self, training_set, n: int) -> np.ndarray:
        """[n, label_dim] labels for generated images (global numpy RNG, so runs resume exactly)."""
        labels = [training_set.get_label(np.random.randint(len(training_set))) for _ in range(n)]
        return np.stack(labels).reshape(n, training_set.label_dim).astype(np.float32)

    def grid_labels(self, training_set, indices) -> np.ndarray:
        return np.stack([training_set.get_label(i) for i in indices]).astype(np.float32)

    def label_summary(self, training_set) -> str:
        return training_set.format_label_stats()


# ----------------------------------------------------------------------------
# Private: labels from a public marginal (uniform by default), nothing else read from the training set.


class PrivateDataPolicy:
    is_private = True
    writes_reals_grid = False
    reads_real_signs = False

    def __init__(self, label_marginal=None):
        self.label_marginal = None if label_marginal is None else np.asarray(label_marginal, dtype=np.float64)

    def _marginal(self, training_set):
        dim = training_set.label_dim
        marginal = np.full(dim, 1 / max(dim, 1)) if self.label_marginal is None else self.label_marginal
        if marginal.shape != (dim,) or marginal.min(initial=0) < 0:
            raise ValueError(f'label marginal must be {dim} non-negative numbers, got {marginal.tolist()}')
        return marginal

    def sample_fake_labels(self, training_set, n: int) -> np.ndarray:
        dim = training_set.label_dim
        if dim == 0:
            return np.zeros([n, 0], dtype=np.float32)
        marginal = self._marginal(training_set)
        if not training_set.has_onehot_labels:  # Multi-hot: independent per-class rates.
            return (np.random.rand(n, dim) < marginal).astype(np.float32)
        classes = np.random.choice(dim, size=n, p=marginal / marginal.sum())
        return np.eye(dim, dtype=np.float32)[classes]

    def grid_labels(self, training_set, indices) -> np.ndarray:
        dim = training_set.label_dim
        return np.eye(dim, dtype=np.float32)[np.arange(len(indices)) % dim] if dim else np.zeros([len(indices), 0])

    def label_summary(self, training_set) -> str:
        return f'{training_set.label_dim} label dims (counts not shown: private mode)'


def make_data_policy(is_private: bool, label_marginal=None):
    return PrivateDataPolicy(label_marginal) if is_private else OpenDataPolicy()


# ----------------------------------------------------------------------------
