"""Training a radiograph classifier: class-balanced loss, light augmentation, AdamW with a one-cycle schedule,
and the best epoch chosen on the validation split only (never on a test set).

With `privacy` (a clinical.dp plan; classify.py train --dp) it is DP-SGD instead: Poisson-sampled patients,
per-sample clipping and noise, no class weights, no validation split and no epoch choice (each would read the
private images outside DP-SGD): the last epoch's weights, trained on every image given.
"""

import copy
import os

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from clinical import dp, evaluation
from clinical.classifier import (
    ClassifierEnsemble,
    RadiographClassifier,
    load_classifier,
    load_weights,
    per_sample_loss,
    save_classifier,
    targets_from_labels,
)
from clinical.classifier_data import ImageSet, split_validation

# ----------------------------------------------------------------------------
# Augmentation on [-1, 1] float batches: a small random affine (shift, scale, rotation), brightness and
# contrast jitter, optional x-flip. Radiographs keep their orientation unless the caller asks for flips.


def augment(x: torch.Tensor, generator: torch.Generator, xflip: bool = False) -> torch.Tensor:
    n = x.shape[0]

    def uniform(lo, hi):
        return (torch.rand([n], generator=generator) * (hi - lo) + lo).to(x.device)

    angle, scale = uniform(-0.1, 0.1), uniform(0.9, 1.1)
    flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0) if xflip else torch.ones([n], device=x.device)
    theta = torch.zeros([n, 2, 3], device=x.device)
    theta[:, 0, 0], theta[:, 0, 1] = angle.cos() / scale * flip, -angle.sin() / scale
    theta[:, 1, 0], theta[:, 1, 1] = angle.sin() / scale * flip, angle.cos() / scale
    theta[:, :, 2] = torch.stack([uniform(-0.08, 0.08), uniform(-0.08, 0.08)], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode='bilinear', padding_mode='border', align_corners=False)
    contrast, brightness = uniform(0.85, 1.15), uniform(-0.1, 0.1)
    return x * contrast[:, None, None, None] + brightness[:, None, None, None]


# ----------------------------------------------------------------------------
# Class balance: positives (binary, multilabel) or classes (multiclass) weighted by their rarity.


def class_weights(labels: np.ndarray, kind: str) -> torch.Tensor:
    positives = np.maximum((labels > 0.5).sum(axis=0), 1).astype(np.float64)
    negatives = np.maximum(len(labels) - positives, 1)
    if kind == 'binary':
        return torch.tensor([negatives[1] / positives[1]], dtype=torch.float32)
    if kind == 'multiclass':
        return torch.tensor(len(labels) / (len(positives) * positives), dtype=torch.float32)
    return torch.tensor(np.clip(negatives / positives, 0.1, 100), dtype=torch.float32)


# ----------------------------------------------------------------------------
# Scores on a set: binary [N], multiclass/multilabel [N, K] probabilities.


def predict(net: RadiographClassifier, images: np.ndarray, batch_size: int = 128, device='cpu') -> np.ndarray:
    net = net.to(device).eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).to(device)
            outputs.append(net.probabilities(batch).float().cpu().numpy())
    return np.concatenate(outputs)


def score_auc(labels: np.ndarray, scores: np.ndarray, kind: str) -> float:
    """Binary AUC, or the macro one-vs-rest AUC over the classes that have positives and negatives; NaN if none."""
    if kind != 'binary':
        macro = evaluation.multiclass_auc(labels, scores, [str(k) for k in range(labels.shape[1])], kind)['macro']
        return float('nan') if macro is None else float(macro)
    y_true = labels[:, 1] > 0.5
    return float(roc_auc_score(y_true, scores)) if 0 < y_true.sum() < len(y_true) else float('nan')


# ----------------------------------------------------------------------------
# Training: AdamW with a cosine schedule; after each epoch the validation AUC decides the best weights.


def train_classifier(
    train_set: ImageSet,
    val_set: ImageSet,
    *,
    arch: str = 'resnet',
    channels: tuple = (16, 32, 64, 128),
    resolution: int = 64,
    epochs: int = 15,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    xflip: bool = False,
    seed: int = 0,
    device='cpu',
    label_schema: str | None = None,
    init_weights: str | None = None,  # Starting weights (see clinical.classifier.load_weights); None = random.
    progress: bool = True,
    privacy: dict | None = None,  # A clinical.dp.plan_privacy plan: DP-SGD (then val_set is None).
) -> tuple[RadiographClassifier, list[dict]]:
    """(the classifier at its best validation epoch, per-epoch history [{epoch, loss, val_auc}])."""
    kind = train_set.kind
    torch.manual_seed(seed)
    net = RadiographClassifier(
        train_set.class_names, kind, resolution, arch, tuple(channels), label_schema=label_schema
    )
    if init_weights is not None:
        load_weights(net, init_weights)
    net = net.to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    if privacy is not None:
        return _train_private(net, train_set, optimizer, privacy, epochs, xflip, seed, device, progress)
    steps_per_epoch = max(1, len(train_set) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
    weights = class_weights(train_set.labels, kind).to(device)
    generator = torch.Generator().manual_seed(seed)
    best, history = (-1.0, None), []
    bar = tqdm(range(epochs), unit='epoch', desc='classifier', disable=None if progress else True)
    for epoch in bar:
        loss = _train_epoch(net, train_set, optimizer, schedule, weights, generator, batch_size, xflip, device)
        val_auc = score_auc(val_set.labels, predict(net, val_set.images, device=device), kind)
        history.append(dict(epoch=epoch + 1, loss=loss, val_auc=val_auc))
        if best[1] is None or val_auc > best[0]:  # NaN (a one-class validation set) keeps the first epoch.
            best = (val_auc, copy.deepcopy(net.state_dict()))
        net.train()
        bar.set_postfix(loss=f'{loss:.3f}', val_auc=f'{val_auc:.3f}', best=f'{best[0]:.3f}')
    net.load_state_dict(best[1])
    return net.eval(), history


def _train_epoch(net, train_set, optimizer, schedule, weights, generator, batch_size, xflip, device):
    order = torch.randperm(len(train_set), generator=generator).numpy()
    losses = []
    for start in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
        idx = order[start : start + batch_size]
        images = torch.from_numpy(train_set.images[idx]).to(device).to(torch.float32) / 127.5 - 1
        targets = targets_from_labels(torch.from_numpy(train_set.labels[idx]).to(device), net.kind)
        logits = net(augment(images, generator, xflip))
        loss = per_sample_loss(logits, targets, net.kind, weights).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule.last_epoch + 1 < schedule.total_steps:
            schedule.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def _train_private(net, train_set, optimizer, plan, epochs, xflip, seed, device, progress):
    steps_per_epoch = -(-plan['planned_steps'] // epochs)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, optimizer.defaults['lr'], total_steps=plan['planned_steps']
    )
    dp_optimizer = dp.make_dp_optimizer(optimizer, plan)
    units = dp.UnitSampler.for_plan(plan, train_set.groups)
    generator, history = torch.Generator().manual_seed(seed), []
    params = dict(net.named_parameters())
    bar = tqdm(range(epochs), unit='epoch', desc='DP classifier', disable=None if progress else True)
    for epoch in bar:  # No loss is logged: it would read the private images outside DP-SGD.
        for _ in range(min(steps_per_epoch, plan['planned_steps'] - epoch * steps_per_epoch)):
            items, rows = units.sample()
            images = torch.from_numpy(train_set.images[items]).to(device).to(torch.float32) / 127.5 - 1
            targets = targets_from_labels(torch.from_numpy(train_set.labels[items]).to(device), net.kind)
            grads = dp.per_sample_gradients(net, _private_loss(net.kind), augment(images, generator, xflip), targets)
            grads = dp.sum_by_unit(grads, rows)
            dp.take_dp_step(dp_optimizer, params, grads)
            if schedule.last_epoch + 1 < schedule.total_steps:
                schedule.step()
        history.append(dict(epoch=epoch + 1))
    return net.eval(), history


def _private_loss(kind):
    return lambda forward, image, target: per_sample_loss(forward(image[None]), target[None], kind)[0]


# ----------------------------------------------------------------------------
# One whole run: split, train, choose the operating threshold on validation, save the pickle with metadata.


def _youden_threshold(val_set: ImageSet, scores: np.ndarray) -> float:
    return evaluation.operating_point(val_set.labels[:, 1], scores, 'youden')['threshold']


def fit_and_save(image_set: ImageSet, outdir: str, *, val_fraction=0.15, seed=0, privacy=None, **train_kwargs):
    """Train on `image_set` (validation taken from it, unless DP) and write `outdir/classifier.pkl`; returns its
    metadata. `privacy`: a clinical.dp plan for DP-SGD (metadata['dp'] then holds the release record)."""
    if privacy is None:
        train_idx, val_idx = split_validation(image_set, val_fraction, seed)
        train_set, val_set = image_set.subset(train_idx), image_set.subset(val_idx)
    else:
        train_set, val_set = image_set, None
    label_schema = image_set.label_schema
    net, history = train_classifier(
        train_set, val_set, seed=seed, label_schema=label_schema, privacy=privacy, **train_kwargs
    )
    metadata = dict(
        kind=net.kind, class_names=net.class_names, label_schema=label_schema, resolution=net.resolution,
        train_data=dict(description=image_set.description, fingerprint=image_set.fingerprint(),
                        num_images=len(image_set), class_counts=image_set.class_counts().tolist()),
        split=dict(train=len(train_set), val=0, val_groups=0, seed=seed), val_auc=None, val_threshold=None,
        history=history, seed=seed, train_kwargs={key: value for key, value in train_kwargs.items() if key != 'device'},
        dp=None if privacy is None else dp.release_record(privacy, privacy['planned_steps']),
    )  # fmt: skip
    if val_set is not None:
        val_scores = predict(net, val_set.images, device=train_kwargs.get('device', 'cpu'))
        metadata.update(
            split=dict(train=len(train_set), val=len(val_set), val_groups=len(set(val_set.groups)), seed=seed),
            val_auc=max((h['val_auc'] for h in history if np.isfinite(h['val_auc'])), default=None),
            val_threshold=_youden_threshold(val_set, val_scores) if net.kind == 'binary' else None,
        )
    os.makedirs(outdir, exist_ok=True)
    save_classifier(os.path.join(outdir, 'classifier.pkl'), net, metadata)
    return metadata


# ----------------------------------------------------------------------------
# An ensemble: one member per seed (each with its own validation split), saved as one classifier.


def fit_ensemble(image_set: ImageSet, outdir: str, *, seeds, keep_finished=False, **fit_kwargs):
    """Train a member per seed into `outdir/seed-S/classifier.pkl` and write their ClassifierEnsemble to
    `outdir/classifier.pkl`; returns its metadata. One seed is a plain fit_and_save. `keep_finished`: reuse members
    already written (a resumed run whose inputs are known to be unchanged). Its operating threshold is the mean of
    the members' validation thresholds: no validation image is unseen by every member."""
    seeds = list(seeds)
    if len(seeds) == 1:
        return fit_and_save(image_set, outdir, seed=seeds[0], **fit_kwargs)
    if fit_kwargs.get('privacy') is not None:
        raise ValueError('an ensemble of DP-SGD classifiers would spend the budget once per member')
    members, records = [], []
    for seed in seeds:
        path = os.path.join(outdir, f'seed-{seed}', 'classifier.pkl')
        if not (keep_finished and os.path.exists(path)):
            fit_and_save(image_set, os.path.dirname(path), seed=seed, **fit_kwargs)
        net, meta = load_classifier(path)
        members.append(net)
        records.append({key: meta[key] for key in ('seed', 'split', 'val_auc', 'val_threshold')} | dict(path=path))
    metadata = dict(meta, history=None, seed=seeds[0], members=records, val_auc=_mean_of(records, 'val_auc'),
                    val_threshold=_mean_of(records, 'val_threshold'))  # fmt: skip
    del metadata['sha256'], metadata['split']
    save_classifier(os.path.join(outdir, 'classifier.pkl'), ClassifierEnsemble(members), metadata)
    return metadata


def _mean_of(records, key):
    values = [record[key] for record in records if record[key] is not None]
    return float(np.mean(values)) if values else None


# ----------------------------------------------------------------------------
