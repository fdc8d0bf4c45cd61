"""Feature sets the metrics compare: real images of a dataset (cached per dataset, feature network, resolution
and mirroring) and generated images (one per seed, labels drawn from the real label distribution).

Each set keeps, beside the features, small grey pixels (for the privacy audit's pixel space) and the labels, so a
metric can be computed per class without touching the images again.
"""

import dataclasses
import hashlib
import os

import numpy as np
import torch
from tqdm import tqdm

import dnnlib
from metrics.features import PixelFeatures
from training.dataset import ImageFolderDataset, has_label_list
from training.sampling import generate_images

PIXEL_SIZE = 32  # Side of the pixel space used for memorisation.

# ----------------------------------------------------------------------------


@dataclasses.dataclass
class FeatureSet:
    features: np.ndarray  # float32 [N, D] in the feature network's space.
    pixels: np.ndarray  # float32 [N, PIXEL_SIZE**2] grey pixels in [0, 1].
    labels: np.ndarray  # float32 [N, K] (K = 0 when unlabelled).
    seeds: np.ndarray | None = None  # Generated sets: the seed of each image (to redraw it for a figure).

    def __len__(self):
        return len(self.features)

    def subset(self, mask) -> 'FeatureSet':
        seeds = None if self.seeds is None else self.seeds[mask]
        return FeatureSet(self.features[mask], self.pixels[mask], self.labels[mask], seeds)


# ----------------------------------------------------------------------------
# Real images: read once per (dataset file, feature network, resolution, mirror), then from the cache.


def open_dataset(path: str, mirror: bool = False, param: str = '--data') -> ImageFolderDataset:
    """The dataset with its labels when dataset.json has them; errors name `param`."""
    if not os.path.exists(path):
        raise dnnlib.UserError(f'{path}: no such file or directory', param=param)
    try:
        dataset = ImageFolderDataset(path, use_labels=has_label_list(path), xflip=mirror)
        _ = dataset.label_shape  # Reads and checks the labels now, not halfway through a metric.
    except ValueError as err:
        raise dnnlib.UserError(str(err), param=param) from None
    return dataset


def real_features(dataset, feature_net, *, device='cpu', batch_size=64, cache=True, progress=True) -> FeatureSet:
    cache_path = _cache_path(dataset, feature_net)
    if cache and os.path.isfile(cache_path):
        with np.load(cache_path) as data:
            return FeatureSet(data['features'], data['pixels'], data['labels'])
    pixel_net, batches = PixelFeatures(PIXEL_SIZE), []
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    with torch.no_grad():
        for images, labels in tqdm(loader, desc='real features', unit='batch', disable=None if progress else True):
            batches.append((feature_net(images.to(device)).cpu().numpy(), pixel_net(images).numpy(), labels.numpy()))
    result = FeatureSet(*(np.concatenate(parts).astype(np.float32) for parts in zip(*batches)))
    if cache:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        with dnnlib.util.atomic_write(cache_path) as f:
            np.savez(f, features=result.features, pixels=result.pixels, labels=result.labels)
    return result


def _cache_path(dataset, feature_net) -> str:
    stat = os.stat(dataset._path)
    key = [os.path.abspath(dataset._path), stat.st_size, stat.st_mtime_ns, dataset.resolution, len(dataset),
           bool(dataset._xflip.any()), feature_net.sha256, PIXEL_SIZE]  # fmt: skip
    digest = hashlib.md5(repr(key).encode()).hexdigest()
    return dnnlib.util.make_cache_dir_path('gan-metrics', f'{dataset.name}-{feature_net.name}-{digest}.npz')


# ----------------------------------------------------------------------------
# Generated images: seeds 0..N-1, labels drawn from the real labels (as upstream) with a seeded RNG.


def generated_features(G, feature_net, real_labels: np.ndarray, num: int, *, seed=0, device='cpu', batch_size=64,
                       progress=True) -> FeatureSet:  # fmt: skip
    rng = np.random.RandomState(seed)
    if G.c_dim:
        labels = real_labels[rng.randint(len(real_labels), size=num)].astype(np.float32)
    else:
        labels = np.zeros([num, 0], dtype=np.float32)
    seeds = np.arange(num) + seed * num
    pixel_net, parts = PixelFeatures(PIXEL_SIZE), []
    bar = tqdm(total=num, desc='generated features', unit='img', disable=None if progress else True)
    for start in range(0, num, batch_size):
        end = min(start + batch_size, num)
        images = generate_images(G, seeds[start:end].tolist(), labels[start:end], batch_size=batch_size, device=device)
        images = torch.from_numpy(images).permute(0, 3, 1, 2)
        with torch.no_grad():
            parts.append((feature_net(images.to(device)).cpu().numpy(), pixel_net(images).numpy()))
        bar.update(end - start)
    bar.close()
    features, pixels = (np.concatenate(p).astype(np.float32) for p in zip(*parts))
    return FeatureSet(features, pixels, labels, seeds)


# ----------------------------------------------------------------------------
