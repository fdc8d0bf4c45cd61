"""Synthetic images from a generator: load a snapshot or release and draw a labelled synthetic set (class balance
and truncation chosen by the caller) for synthetic-learning experiments. Images are per seed
(training.sampling.generate_images), so an image depends on its seed only, not on the batch.
"""

import numpy as np
import torch

from clinical.dp import describe_release
from training import checkpoint, release
from training.sampling import generate_images

# ----------------------------------------------------------------------------
# A generator on the device and the class names it was trained with (None if unknown), from a release
# (safetensors, no pickle) or a snapshot pickle (trusted sources only).


def load_network(network: str, device: torch.device, param: str = '--network', verbose: bool = True):
    """(G_ema in eval mode, class_names).

    Raises:
        dnnlib.UserError: a file that is neither a snapshot nor a release (naming `param`).
    """
    if release.is_release(network):
        if verbose:
            print(f'Loading generator from release "{network}" (safetensors)...')
        G, config = release.load_release(network, device, param=param)
        info = dict(class_names=config.class_names, dp=config.get('dp'))
    else:
        if verbose:
            print(f'Loading networks from snapshot "{network}" (pickle: trusted sources only)...')
        data = checkpoint.load_snapshot(network, param=param)
        G, info = data['G_ema'].eval().requires_grad_(False).to(device), release.snapshot_info(data)
    if verbose:
        print(f'Privacy: {describe_release(info["dp"])}')
    return G, info['class_names']


# ----------------------------------------------------------------------------
# Labels for a synthetic set: one class per image, exactly balanced or drawn from a given class prior.


def synthetic_labels(num: int, num_classes: int, prior=None, seed: int = 0) -> np.ndarray:
    """[num, num_classes] one-hot float32. prior None = balanced (counts differ by at most one), else the
    expected share of each class (normalised), drawn with RandomState(seed)."""
    rng = np.random.RandomState(seed)
    if prior is None:
        classes = rng.permutation(np.arange(num) % num_classes)
    else:
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != (num_classes,) or prior.min() < 0 or prior.sum() <= 0:
            raise ValueError(f'class prior must be {num_classes} non-negative numbers, not all zero')
        classes = rng.choice(num_classes, size=num, p=prior / prior.sum())
    return np.eye(num_classes, dtype=np.float32)[classes]


def sample_synthetic(
    G, num: int, *, prior=None, truncation_psi: float = 1, seed: int = 0, batch_size: int = 32, device='cpu'
):
    """(uint8 images [N, C, H, W], float32 labels [N, c_dim]) from a conditional generator; seeds seed*N.. on."""
    if G.c_dim == 0:
        raise ValueError('the generator is unconditional: its images have no labels to learn from')
    labels = synthetic_labels(num, G.c_dim, prior, seed)
    seeds = [seed * num + i for i in range(num)]
    images = generate_images(G, seeds, labels, truncation_psi, 'const', batch_size, device)
    return images.transpose(0, 3, 1, 2), labels


# ----------------------------------------------------------------------------
