"""The metric registry: names (`fid`, `kid`, `pr`, `dc`, `privacy`, and upstream aliases such as `fid50k_full`)
-> results, for calc_metrics.py and for train.py's snapshot hook. Every result carries its feature network
(name, sha256, image counts); conditional models are also measured per class.
"""

import json
import os

import numpy as np
import torch

import dnnlib
from metrics import feature_sets, privacy, statistics
from metrics.features import FeatureNetMissing, describe, load_feature_net
from training.sampling import generate_images

METRICS = ('fid', 'kid', 'pr', 'dc', 'privacy')
ALIASES = {  # Upstream names: the metric and the number of generated images.
    'fid50k_full': ('fid', 50000), 'fid50k': ('fid', 50000), 'fid10k': ('fid', 10000), 'fid2k': ('fid', 2000),
    'kid50k_full': ('kid', 50000), 'kid50k': ('kid', 50000), 'pr50k3_full': ('pr', 50000), 'pr50k3': ('pr', 50000),
}  # fmt: skip
MIN_PER_CLASS = 10  # Fewer real or generated images of a class than this: no per-class number.

# ----------------------------------------------------------------------------
# Names.


def is_valid_metric(name: str) -> bool:
    return name in METRICS or name in ALIASES


def resolve(name: str) -> tuple[str, int | None]:
    """(base metric, number of generated images the name asks for, or None)."""
    return ALIASES.get(name, (name, None))


def metric_spec(name: str, **kwargs) -> dict:
    """A class_name dict the training loop builds into a snapshot hook (training/ never imports metrics/)."""
    return dict(class_name='metrics.metric_main.SnapshotMetric', name=name, **kwargs)


# ----------------------------------------------------------------------------
# The measures on two feature sets (overall and per class).


def _measure(base: str, real: np.ndarray, gen: np.ndarray, seed: int) -> dict:
    if base == 'fid':
        mu_r, sigma_r = statistics.feature_stats(real)
        mu_g, sigma_g = statistics.feature_stats(gen)
        return dict(fid=statistics.frechet_distance(mu_g, sigma_g, mu_r, sigma_r))
    if base == 'kid':
        mean, std = statistics.kernel_inception_distance(real, gen, seed=seed)
        return dict(kid=mean, kid_std=std)
    if base == 'pr':
        return statistics.precision_recall(real, gen, k=3)
    return statistics.density_coverage(real, gen, k=5)


def _per_class(base, real, gen, class_names, seed) -> dict:
    results = {}
    for k, name in enumerate(class_names):
        real_k, gen_k = real.labels[:, k] > 0.5, gen.labels[:, k] > 0.5
        if min(real_k.sum(), gen_k.sum()) >= MIN_PER_CLASS:
            for key, value in _measure(base, real.features[real_k], gen.features[gen_k], seed).items():
                results[f'{key}/{name}'] = value
    return results


# ----------------------------------------------------------------------------
# One metric of one generator: generated vs real features (plus, for `privacy`, held-out reals and D).


def calc_metric(
    name: str,
    G,  # Generator (G_ema).
    *,
    data: str,  # Real images (the training set for `privacy`).
    feature_net,  # From metrics.features.load_feature_net.
    num_gen: int | None = None,  # None: the name's count, else as many as real images (at most 50,000).
    mirror: bool = False,
    holdout: str | None = None,  # `privacy`: real images the GAN never saw.
    D=None,  # `privacy`: the discriminator, for the white-box attack (None: black-box only).
    outdir: str | None = None,  # `privacy`: where its JSON, markdown and grid go.
    tag: str = 'metric',  # `privacy`: file name stem of its outputs.
    seed: int = 0,
    device='cpu',
    progress: bool = True,
) -> dict:
    """{'results': {key: number}, 'feature_net': {...}, 'metric': name}."""
    base, alias_num = resolve(name)
    dataset = feature_sets.open_dataset(data, mirror)
    real = feature_sets.real_features(dataset, feature_net, device=device, progress=progress)
    num = num_gen or alias_num or min(len(real), 50000)
    gen = feature_sets.generated_features(G, feature_net, real.labels, num, seed=seed, device=device,
                                          progress=progress)  # fmt: skip
    if base == 'privacy':
        results = _privacy(G, D, dataset, real, gen, holdout, feature_net, outdir, tag, seed, device, progress)
    else:
        results = _measure(base, real.features, gen.features, seed)
        if G.c_dim and dataset.class_names:
            results.update(_per_class(base, real, gen, dataset.class_names, seed))
    results = {key: float(value) for key, value in results.items()}
    return dict(metric=name, results=results, feature_net=describe(feature_net, len(real), len(gen)))


def _privacy(G, D, dataset, train, gen, holdout, feature_net, outdir, tag, seed, device, progress) -> dict:
    if holdout is None:
        raise dnnlib.UserError('the privacy audit needs real images the GAN never saw', param='--holdout')
    held_dataset = feature_sets.open_dataset(holdout, param='--holdout')
    held = feature_sets.real_features(held_dataset, feature_net, device=device, progress=progress)
    scores = dict(train_scores=None, holdout_scores=None)
    if D is not None:
        scores = dict(train_scores=discriminator_scores(D, dataset, device),
                      holdout_scores=discriminator_scores(D, held_dataset, device))  # fmt: skip
    report = privacy.audit(gen.features, train.features, held.features, gen.pixels, train.pixels, held.pixels,
                           seed=seed, device=device, **scores)  # fmt: skip
    report['feature_net'] = describe(feature_net, len(train), len(gen))
    if outdir is not None:
        stem = os.path.join(outdir, tag)
        privacy.write_summary(report, stem + '.json', stem + '.md')
        pairs = report['memorisation']['features']['closest_pairs']
        gen_images = generate_images(G, [int(gen.seeds[p['gen_index']]) for p in pairs],
                                     gen.labels[[p['gen_index'] for p in pairs]], device=device)  # fmt: skip
        train_images = np.stack([dataset[p['train_index']][0] for p in pairs])
        privacy.pair_grid(gen_images.transpose(0, 3, 1, 2), train_images, pairs, stem + '-pairs.png')
    return privacy.headline(report)


def discriminator_scores(D, dataset, device='cpu', batch_size=64) -> np.ndarray:
    """D's logits for every real image of `dataset` with its own label (the white-box attack's scores)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    D = D.eval().requires_grad_(False).to(device)
    scores = []
    with torch.no_grad():
        for images, labels in loader:
            img = images.to(device).to(torch.float32) / 127.5 - 1
            c = labels.to(device) if D.c_dim else torch.zeros([len(img), 0], device=device)
            scores.append(D(img, c).flatten().cpu().numpy())
    return np.concatenate(scores).astype(np.float64)


# ----------------------------------------------------------------------------
# The training hook: called at each snapshot on every rank; rank 0 measures. A missing feature network gives
# one warning and no numbers, never a crashed run.


class SnapshotMetric:
    def __init__(self, name, feature_net='inception', num_gen=None, holdout=None):
        self.name, self.spec, self.num_gen, self.holdout = name, feature_net, num_gen, holdout
        self.feature_net, self.warned = None, False

    def __call__(self, G, *, run_dir, snapshot_pkl, training_set_kwargs, rank=0, device='cpu', **_context):
        if rank != 0:
            return {}
        if self.feature_net is None:
            try:
                self.feature_net = load_feature_net(self.spec, device)
            except FeatureNetMissing as err:
                if not self.warned:
                    print(f'Warning: metric {self.name} skipped: {err}')
                    self.warned = True
                return {}
        D = _load_discriminator(snapshot_pkl) if resolve(self.name)[0] == 'privacy' else None
        tag = f'{self.name}-' + os.path.splitext(os.path.basename(snapshot_pkl))[0]
        result = calc_metric(
            self.name, G, data=training_set_kwargs['path'], feature_net=self.feature_net, num_gen=self.num_gen,
            mirror=bool(training_set_kwargs.get('xflip')), holdout=self.holdout, D=D, outdir=run_dir, tag=tag,
            device=device, progress=False,
        )  # fmt: skip
        return dict(result['results'], feature_net=result['feature_net'])


def _load_discriminator(snapshot_pkl):
    from training.checkpoint import load_snapshot

    return load_snapshot(snapshot_pkl, require=('D',))['D']


# ----------------------------------------------------------------------------
# Results beside the snapshot: one JSON line per evaluation in metric-<name>.jsonl.


def append_result(result: dict, snapshot_pkl: str) -> str:
    path = os.path.join(os.path.dirname(os.path.abspath(snapshot_pkl)), f'metric-{result["metric"]}.jsonl')
    line = dict(result, snapshot_pkl=os.path.basename(snapshot_pkl), torch=torch.__version__)
    with open(path, 'a') as f:
        f.write(json.dumps(line) + '\n')
    return path


# ----------------------------------------------------------------------------
