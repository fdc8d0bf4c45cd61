"""Labelled image sets for classifier training and evaluation: a real dataset, synthetic images (a generator
sampled on the fly, or a dataset of synthetic images) or both, held in memory with each image's patient group,
and the patient-aware validation split.
"""

import dataclasses
import hashlib
import os
import zipfile

import numpy as np
import sklearn.model_selection
import torch

import dnnlib
from clinical.classifier import label_kind
from clinical.labels import SCHEMAS, relabel
from clinical.synthetic import load_network, sample_synthetic
from training.dataset import ImageFolderDataset, has_label_list

# ----------------------------------------------------------------------------
# A labelled image set held in memory: uint8 images, label vectors, and the group (patient) of each image.


@dataclasses.dataclass
class ImageSet:
    images: np.ndarray  # uint8 [N, C, H, W].
    labels: np.ndarray  # float32 [N, K]: one-hot or multi-hot over class_names.
    groups: np.ndarray  # str [N]: the split unit (patient); images of one group never straddle a split.
    class_names: list[str]
    is_onehot: bool  # One class per image (binary/multiclass head), else multi-hot (multilabel head).
    description: str  # Where the images came from, for the classifier's metadata.
    label_schema: str | None = None  # dataset.json's label_schema (e.g. 'abnormal', 'lesion').

    def __len__(self):
        return len(self.images)

    def subset(self, indices) -> 'ImageSet':
        idx = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(self, images=self.images[idx], labels=self.labels[idx], groups=self.groups[idx])

    def fingerprint(self) -> str:
        """sha256 of the images, labels and class names (16 hex digits), recorded with every classifier."""
        digest = hashlib.sha256()
        for array in (self.images, self.labels):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update('\n'.join(self.class_names).encode())
        return digest.hexdigest()[:16]

    @property
    def kind(self) -> str:
        return label_kind(self.class_names, self.is_onehot)

    def class_counts(self) -> np.ndarray:
        return (self.labels > 0.5).sum(axis=0).astype(np.int64)


# ----------------------------------------------------------------------------
# Loading: a dataset zip/folder (dataset.json labels and groups), optionally restricted to some classes.


def load_image_set(path: str, classes: list[str] | None = None) -> ImageSet:
    """Every image of a labelled dataset, with its groups (each image its own group if dataset.json has none).

    Raises:
        ValueError: unreadable dataset, no labels, or an unknown class in `classes`.
    """
    dataset = ImageFolderDataset(path, use_labels=True)
    if not has_label_list(path):
        raise ValueError(f'{path}: the dataset has no labels (dataset.json "labels")')
    images = np.stack([dataset[i][0] for i in range(len(dataset))])
    labels = np.stack([dataset.get_label(i) for i in range(len(dataset))]).astype(np.float32)
    names = dataset.class_names or [str(i) for i in range(labels.shape[1])]
    groups = getattr(dataset, 'groups', None) or [f'image-{i}' for i in range(len(dataset))]
    groups = np.asarray(groups, dtype=str)
    image_set = ImageSet(images, labels, groups, names, dataset.has_onehot_labels, path, dataset.label_schema)
    return select_classes(image_set, classes) if classes else image_set


def select_classes(image_set: ImageSet, classes: list[str]) -> ImageSet:
    """Keep the images of `classes` (one-hot labels only), relabelled over `classes` in that order."""
    unknown = [name for name in classes if name not in image_set.class_names]
    if unknown:
        raise ValueError(f'unknown class(es) {", ".join(unknown)}; the data has {", ".join(image_set.class_names)}')
    if not image_set.is_onehot:
        raise ValueError('choosing classes needs single-label data (one class per image)')
    columns = [image_set.class_names.index(name) for name in classes]
    keep = np.flatnonzero(image_set.labels[:, columns].sum(axis=1) > 0.5)
    kept = image_set.subset(keep)
    return dataclasses.replace(kept, labels=kept.labels[:, columns], class_names=list(classes))


def concat(sets: list[ImageSet]) -> ImageSet:
    names = sets[0].class_names
    for other in sets[1:]:
        if (other.class_names, other.is_onehot) != (names, sets[0].is_onehot):
            raise ValueError(f'labels differ: {", ".join(names)} vs {", ".join(other.class_names)}')
    return ImageSet(
        np.concatenate([s.images for s in sets]),
        np.concatenate([s.labels for s in sets]),
        np.concatenate([s.groups for s in sets]),
        names,
        sets[0].is_onehot,
        ' + '.join(s.description for s in sets),
    )


# ----------------------------------------------------------------------------
# Validation split taken from the training data: group-disjoint and stratified by the main class.


def split_validation(image_set: ImageSet, fraction: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices); no group is in both. About `fraction` of the groups go to validation
    (1 of round(1/fraction) stratified folds; fewer folds when a class has fewer images than that).

    Raises:
        dnnlib.UserError: a class with fewer than 2 images, so no split can hold it on both sides.
    """
    strata = image_set.labels.argmax(axis=1)
    smallest = np.bincount(strata, minlength=image_set.labels.shape[1])[np.unique(strata)].min()
    folds = min(max(2, int(round(1 / fraction))), int(smallest), len(set(image_set.groups)))
    if folds < 2:
        raise dnnlib.UserError('too few images or patients per class for a validation split', param='--data')
    splitter = sklearn.model_selection.StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros(len(image_set)), strata, image_set.groups))
    return np.sort(train_idx), np.sort(val_idx)


# ----------------------------------------------------------------------------
# The training data of one run: a real dataset, synthetic images (a generator sampled on the fly, or a
# dataset of synthetic images), or both. Synthetic images are each their own group.


def assemble_training_set(
    data: str | None = None,  # Real dataset (zip or folder with dataset.json).
    synthetic: str | None = None,  # Generator snapshot/release, or a dataset of synthetic images.
    num: int | None = None,  # Synthetic images to draw (generator) or keep (dataset); None = all of a dataset.
    prior: list[float] | None = None,  # Class shares of drawn images; None = balanced.
    truncation_psi: float = 1.0,
    classes: list[str] | None = None,  # Keep only these classes (single-label data).
    seed: int = 0,
    device='cpu',
    schema: str | None = None,  # Relabel every image into this schema (e.g. lesion types -> 'abnormal').
) -> ImageSet:
    if data is None and synthetic is None:
        raise dnnlib.UserError('give real data (--data), synthetic data (--synthetic), or both', param='--data')
    parts = [] if data is None else [_load(data, '--data')]
    if synthetic is not None:
        parts.append(_synthetic_part(synthetic, num, prior, truncation_psi, seed, device, parts))
    if schema is not None:
        parts = [_relabel(part, schema) for part in parts]
    image_set = concat(parts) if len(parts) > 1 else parts[0]
    return _select(image_set, classes) if classes else image_set


def _load(path: str, param: str) -> ImageSet:
    if not os.path.exists(path):
        raise dnnlib.UserError(f'{path}: no such file or directory', param=param)
    try:
        return load_image_set(path)
    except ValueError as err:
        raise dnnlib.UserError(str(err), param=param) from None


def _relabel(image_set: ImageSet, schema: str) -> ImageSet:
    try:
        labels = [relabel(label, image_set.class_names, schema) for label in image_set.labels]
    except ValueError as err:
        raise dnnlib.UserError(f'{image_set.description}: {err}') from None
    if any(label is None for label in labels):
        raise dnnlib.UserError(f'{image_set.description}: some images have no single {schema!r} label')
    names = list(SCHEMAS[schema])
    onehot = np.eye(len(names), dtype=np.float32)
    labels = np.stack([onehot[label] if isinstance(label, int) else np.float32(label) for label in labels])
    return dataclasses.replace(image_set, labels=labels, class_names=names, is_onehot=schema != 'lesion-multi',
                               label_schema=schema)  # fmt: skip


def _select(image_set: ImageSet, classes: list[str]) -> ImageSet:
    try:
        return select_classes(image_set, classes)
    except ValueError as err:
        raise dnnlib.UserError(str(err), param='--classes') from None


def _synthetic_part(path, num, prior, truncation_psi, seed, device, real_parts) -> ImageSet:
    if os.path.isdir(path) or zipfile.is_zipfile(path):
        part = _load(path, '--synthetic')
        if num is not None and num < len(part):
            part = part.subset(np.sort(np.random.RandomState(seed).choice(len(part), num, replace=False)))
        return dataclasses.replace(part, groups=np.array([f'synthetic-{i}' for i in range(len(part))]))
    if num is None:
        raise dnnlib.UserError('how many images to draw from the generator?', param='--num')
    G, class_names = load_network(path, torch.device(device), param='--synthetic', verbose=False)
    if class_names is None:
        class_names = real_parts[0].class_names if real_parts else [str(i) for i in range(G.c_dim)]
    is_onehot = real_parts[0].is_onehot if real_parts else True
    try:
        images, labels = sample_synthetic(G, num, prior=prior, truncation_psi=truncation_psi, seed=seed, device=device)
    except ValueError as err:
        raise dnnlib.UserError(f'{path}: {err}', param='--synthetic') from None
    groups = np.array([f'synthetic-{i}' for i in range(num)])
    return ImageSet(images, labels, groups, list(class_names), is_onehot, f'{path} ({num} sampled, seed {seed})')


# ----------------------------------------------------------------------------
