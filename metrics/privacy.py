"""Privacy audit of a generator: does a synthetic-data release leak the patients the GAN was trained on?

Works on arrays the caller computes from three sets (training reals the GAN saw, held-out reals it never saw,
generated images), each as features [N, D]: classifier features, or grey pixels flattened. Memorisation: how near
generated images lie to the training set vs the held-out set, near-copies, and the closest pairs to inspect.
Membership inference: attacks that tell training reals from held-out reals, full black-box GAN-Leaks (Chen et al.
2020) and white-box on the discriminator's logits; AUC 0.5 = no measurable leakage. Distances are Euclidean, in
float64 blocks (torch.cdist; pass device='cuda' for 50k-image sets).
"""

import json
import math

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import scipy.stats
import sklearn.metrics
import torch

import dnnlib

_BLOCK = 1 << 24  # Distance-matrix entries per block: 128 MB of float64.
_SEP, _LABEL_WIDTH, _MIN_ROW = 2, 100, 40  # pair_grid: separator, label column and minimum row height (pixels).

# ----------------------------------------------------------------------------
# Input checks: finite [N, D] arrays sharing D.


def _check_sets(**sets) -> list[np.ndarray]:
    checked = [np.asarray(x, dtype=np.float64) for x in sets.values()]
    for name, x in zip(sets, checked):
        if x.ndim != 2 or len(x) == 0 or not np.isfinite(x).all():
            raise ValueError(f'{name} must be finite features [N, D] with N >= 1; got shape {x.shape}')
    if len({x.shape[1] for x in checked}) > 1:
        raise ValueError(f'feature dimensions differ: {dict(zip(sets, (x.shape[1] for x in checked)))}')
    return checked


# ----------------------------------------------------------------------------
# Nearest neighbours: distance of each query row to its nearest reference row, and that row's index.


def _nearest(query: np.ndarray, ref: np.ndarray, *, exclude_self: bool = False, device='cpu'):
    """([N] distances, [N] indices); exclude_self skips ref[i] for query[i] (query is ref)."""
    ref_t = torch.as_tensor(ref, dtype=torch.float64, device=device)
    rows = max(1, _BLOCK // len(ref))
    dist, index = [], []
    for start in range(0, len(query), rows):
        d = torch.cdist(torch.as_tensor(query[start : start + rows], device=device), ref_t)  # [rows, M]
        if exclude_self:
            i = torch.arange(len(d), device=device)
            d[i, start + i] = math.inf
        values, indices = d.min(dim=1)
        dist.append(values.cpu())
        index.append(indices.cpu())
    return torch.cat(dist).numpy(), torch.cat(index).numpy()


# ----------------------------------------------------------------------------
# Memorisation: are generated images nearer the training images than unseen images, or near-copies of them?


def memorisation(
    gen:         np.ndarray,         # [G, D] generated features.
    train:       np.ndarray,         # [T, D] training features, T >= 2.
    holdout:     np.ndarray,         # [H, D] held-out features.
    *,
    percentile:  float = 1.0,        # Near-copy threshold: this percentile of training-to-training NN distances.
    num_pairs:   int = 8,            # Closest (generated, training) pairs to list.
    device:      str = 'cpu',        # Where the distances are computed.
) -> dict:  # fmt: skip
    """Nearest-neighbour memorisation statistics of a generated set.

    Returns:
        dict(median_d_train, median_d_holdout: medians over generated images of the distance to the nearest
        training / held-out image; closer_to_train: share with d_train < d_holdout (ties 1/2),
        closer_to_train_ci: its normal-approximation 95% CI, expected_closer_to_train: T / (T + H), its value when G
        does not memorise; threshold: the percentile of each training image's distance to its nearest other
        training image, percentile; memorised_share: share with d_train <= threshold (about percentile / 100
        without copying); closest_pairs: [dict(gen_index, train_index, distance)] by increasing distance).

    Raises:
        ValueError: bad shapes, non-finite features, fewer than 2 training images, percentile outside [0, 100].
    """
    gen, train, holdout = _check_sets(gen=gen, train=train, holdout=holdout)
    if len(train) < 2 or not 0 <= percentile <= 100:
        raise ValueError(f'needs >= 2 training images and a percentile in [0, 100]; got {len(train)}, {percentile}')
    d_train, nn_train = _nearest(gen, train, device=device)
    d_holdout, _ = _nearest(gen, holdout, device=device)
    threshold = float(np.percentile(_nearest(train, train, exclude_self=True, device=device)[0], percentile))
    closer = (d_train < d_holdout) + 0.5 * (d_train == d_holdout)  # [G] 0, 1/2 or 1.
    half = 1.96 * closer.std() / math.sqrt(len(gen))
    order = np.argsort(d_train, kind='stable')[:num_pairs]
    pairs = [dict(gen_index=int(g), train_index=int(nn_train[g]), distance=float(d_train[g])) for g in order]
    return dict(
        median_d_train=float(np.median(d_train)), median_d_holdout=float(np.median(d_holdout)),
        closer_to_train=float(closer.mean()),
        closer_to_train_ci=[float(max(closer.mean() - half, 0)), float(min(closer.mean() + half, 1))],
        expected_closer_to_train=len(train) / (len(train) + len(holdout)),
        threshold=threshold, percentile=float(percentile),
        memorised_share=float(np.mean(d_train <= threshold)), closest_pairs=pairs,
    )  # fmt: skip


# ----------------------------------------------------------------------------
# Membership inference: AUC (with a bootstrap percentile CI, scipy.stats.bootstrap resampling members and
# non-members separately) of telling training reals (1) from held-out reals (0).


def _attack(member_scores: np.ndarray, nonmember_scores: np.ndarray, n_boot: int, seed: int) -> dict:
    def auc(members, nonmembers, axis=-1):
        y = np.r_[np.ones(members.shape[axis]), np.zeros(nonmembers.shape[axis])]
        return np.apply_along_axis(lambda s: sklearn.metrics.roc_auc_score(y, s), axis, np.concatenate(
            [members, nonmembers], axis=axis))  # fmt: skip

    if min(len(member_scores), len(nonmember_scores)) < 2:
        raise ValueError('membership inference needs at least 2 members and 2 non-members')
    point = float(auc(member_scores, nonmember_scores))
    ci = scipy.stats.bootstrap((member_scores, nonmember_scores), auc, n_resamples=n_boot, method='percentile',
                               random_state=seed, vectorized=True).confidence_interval  # fmt: skip
    return dict(auc=point, ci_low=float(ci.low), ci_high=float(ci.high), n=len(member_scores) + len(nonmember_scores),
                n_pos=len(member_scores), n_neg=len(nonmember_scores))  # fmt: skip


def membership_inference_blackbox(
    train: np.ndarray, holdout: np.ndarray, gen: np.ndarray, *, n_boot: int = 1000, seed: int = 0, device: str = 'cpu'
) -> dict:
    """Full black-box GAN-Leaks attack (Chen et al. 2020): a real image's score is minus its distance to the
    nearest generated image, since members lie closer.

    Returns:
        dict(auc, ci_low, ci_high, n, n_pos, n_neg), plus median_d_train and median_d_holdout, the
        median distances of training / held-out reals to their nearest generated image.

    Raises:
        ValueError: bad shapes or non-finite features.
    """
    train, holdout, gen = _check_sets(train=train, holdout=holdout, gen=gen)
    d_train, d_holdout = _nearest(train, gen, device=device)[0], _nearest(holdout, gen, device=device)[0]
    result = _attack(-d_train, -d_holdout, n_boot, seed)
    return dict(result, median_d_train=float(np.median(d_train)), median_d_holdout=float(np.median(d_holdout)))


def membership_inference_whitebox(train_scores, holdout_scores, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """White-box attack on the discriminator: its logits (higher = more real) for training and held-out reals.

    Returns:
        dict(auc, ci_low, ci_high, n, n_pos, n_neg).

    Raises:
        ValueError: scores that are not 1-D, empty or non-finite.
    """
    train_scores, holdout_scores = np.asarray(train_scores, np.float64), np.asarray(holdout_scores, np.float64)
    if train_scores.ndim != 1 or holdout_scores.ndim != 1:
        raise ValueError(f'scores must be 1-D; got shapes {train_scores.shape} and {holdout_scores.shape}')
    return _attack(train_scores, holdout_scores, n_boot, seed)


# ----------------------------------------------------------------------------
# The whole audit: memorisation in feature and pixel space, and the attacks.


def audit(
    gen_feats, train_feats, holdout_feats,     # [N, D] features of the generated, training and held-out sets.
    gen_pixels, train_pixels, holdout_pixels,  # [N, P] the same images as grey pixels, flattened.
    *,
    train_scores=None,                         # [T] discriminator logits of the training reals (None: no white-box).
    holdout_scores=None,                       # [H] the same for the held-out reals.
    percentile:  float = 1.0,
    num_pairs:   int = 8,
    n_boot:      int = 1000,
    seed:        int = 0,
    device:      str = 'cpu',
) -> dict:  # fmt: skip
    """Privacy report of a generator.

    Returns:
        dict(counts=dict(generated, train, holdout),
             memorisation=dict(features=memorisation(...), pixels=memorisation(...)),
             membership=dict(blackbox=dict(features=..., pixels=...), whitebox=dict or None)).
        The caller may add feature_net=dict(name, ...) (its name labels the feature space in the summary).
    """
    mem, box = dict(percentile=percentile, num_pairs=num_pairs, device=device), dict(n_boot=n_boot, seed=seed)
    spaces = dict(features=(gen_feats, train_feats, holdout_feats), pixels=(gen_pixels, train_pixels, holdout_pixels))
    whitebox = None
    if train_scores is not None and holdout_scores is not None:
        whitebox = membership_inference_whitebox(train_scores, holdout_scores, **box)
    return dict(
        counts=dict(generated=len(gen_feats), train=len(train_feats), holdout=len(holdout_feats)),
        memorisation={space: memorisation(g, t, h, **mem) for space, (g, t, h) in spaces.items()},
        membership=dict(
            blackbox={space: membership_inference_blackbox(t, h, g, **box, device=device)
                      for space, (g, t, h) in spaces.items()},
            whitebox=whitebox,
        ),
    )  # fmt: skip


# ----------------------------------------------------------------------------
# The report's main numbers, flat, for metric-<name>.jsonl and the training log.


def headline(report: dict) -> dict[str, float]:
    """{'memorised_share/<space>', 'closer_to_train/<space>', 'auc_blackbox/<space>', 'auc_whitebox': float}."""
    membership, out = report['membership'], {}
    for space, mem in report['memorisation'].items():
        out.update({f'{key}/{space}': mem[key] for key in ('memorised_share', 'closer_to_train')})
    out.update({f'auc_blackbox/{space}': attack['auc'] for space, attack in membership['blackbox'].items()})
    return out if membership['whitebox'] is None else dict(out, auc_whitebox=membership['whitebox']['auc'])


# ----------------------------------------------------------------------------
# Grid of closest pairs: one row per pair, the generated image left, its nearest training image right.


def _to_rgb(image) -> PIL.Image.Image:
    x = np.asarray(image)
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f'images must be uint8 [C, H, W] with C = 1 or 3; got {x.dtype} {x.shape}')
    return PIL.Image.fromarray(x[0] if x.shape[0] == 1 else np.ascontiguousarray(x.transpose(1, 2, 0))).convert('RGB')


def pair_grid(gen_images, train_images, pairs: list[dict], path: str) -> None:
    """PNG of the closest pairs: row k shows gen_images[k], train_images[k] and pairs[k]'s distance and indices.

    Args:
        gen_images: uint8 [K, C, H, W] generated images (C = 1 or 3), aligned with pairs.
        train_images: uint8 [K, C, H, W] their nearest training images.
        pairs: K dicts(gen_index, train_index, distance), e.g. memorisation's closest_pairs.
        path: PNG path, replaced atomically.

    Raises:
        ValueError: no pairs, lengths that differ, images that are not uint8 [C, H, W].
    """
    if not len(pairs) or not len(gen_images) == len(train_images) == len(pairs):
        raise ValueError(
            f'need as many images as pairs (>= 1); got {len(gen_images)}, {len(train_images)}, {len(pairs)}'
        )
    rows = [(_to_rgb(g), _to_rgb(t), p) for g, t, p in zip(gen_images, train_images, pairs)]
    cell = max(max(g.width, t.width) for g, t, _ in rows)
    row_h = max(_MIN_ROW, *(max(g.height, t.height) for g, t, _ in rows))
    size = (3 * _SEP + 2 * cell + _LABEL_WIDTH, _SEP + len(rows) * (row_h + _SEP))
    canvas, font = PIL.Image.new('RGB', size, (96, 96, 96)), PIL.ImageFont.load_default()
    draw = PIL.ImageDraw.Draw(canvas)
    for k, (g, t, p) in enumerate(rows):
        y = _SEP + k * (row_h + _SEP)
        canvas.paste(g, (_SEP, y))
        canvas.paste(t, (2 * _SEP + cell, y))
        text = f'd = {p["distance"]:.4g}\nleft: gen {p["gen_index"]}\nright: train {p["train_index"]}'
        draw.multiline_text((3 * _SEP + 2 * cell + 4, y + 2), text, fill=(255, 255, 255), font=font)
    with dnnlib.util.atomic_write(path) as f:
        canvas.save(f, format='PNG')


# ----------------------------------------------------------------------------
# Summary: the full report as JSON (NaN/inf -> null), and a markdown table with one sentence per number.


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    if isinstance(x, (bool, np.bool_, int, np.integer)):
        return x.item() if isinstance(x, np.generic) else x
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def _auc_sentence(a: dict) -> str:
    if a['ci_high'] < 0.5:
        return 'below chance: no sign of membership leakage'
    if a['ci_low'] <= 0.5:
        return 'no measurable membership leakage (the CI contains 0.5)'
    strength = 'weak' if a['auc'] < 0.6 else 'moderate' if a['auc'] < 0.7 else 'strong'
    return f'{strength} membership leakage: an attacker tells training patients from unseen ones better than chance'


def _memorisation_rows(m: dict, space: str) -> list[str]:
    ratio = m['median_d_train'] / m['median_d_holdout'] if m['median_d_holdout'] > 0 else math.inf
    pull = 'as near the held-out set as the training set' if ratio >= 0.95 else 'nearer the training set'
    low, high, expected = *m['closer_to_train_ci'], m['expected_closer_to_train']
    closer = ('no measurable pull towards the training images' if low <= expected <= high
              else 'measurably nearer the training images than unseen ones' if low > expected
              else 'nearer the unseen images: no sign of memorisation')  # fmt: skip
    excess = m['memorised_share'] / max(m['percentile'] / 100, 1e-12)
    copies = ('no excess of near-copies' if excess <= 2 else 'an excess of near-copies: inspect the closest pairs'
              if excess <= 5 else 'many near-copies of training images: do not release without inspection')  # fmt: skip
    return [
        f'| Median distance to nearest training / held-out image | {space} | {m["median_d_train"]:.4g} / '
        f'{m["median_d_holdout"]:.4g} | Ratio {ratio:.2f}: generated images lie {pull}. |',
        f'| Share nearer training than held-out | {space} | {m["closer_to_train"]:.3f} [{low:.3f}, {high:.3f}] | '
        f'{expected:.3f} expected without memorisation: {closer}. |',
        f'| Near-copies (d <= {m["threshold"]:.4g}) | {space} | {100 * m["memorised_share"]:.2f}% | '
        f'About {m["percentile"]:g}% expected (training images this near each other): {copies}. |',
    ]


def _markdown(report: dict) -> str:
    n, net = report['counts'], (report.get('feature_net') or {}).get('name', 'features')
    lines = [
        '# Privacy audit', '',
        f'{n["generated"]} generated images against {n["train"]} training images (seen by the GAN) and '
        f'{n["holdout"]} held-out images (never seen). Euclidean distances in the `{net}` feature space and in '
        'grey pixels; [a, b] is a 95% CI. Attack AUC 0.5 = an attacker cannot tell training patients from unseen.',
        '', '| Measure | Space | Value | Interpretation |', '|---|---|---|---|',
    ]  # fmt: skip
    labels = dict(features=net, pixels='pixels')
    for space, m in report['memorisation'].items():
        lines += _memorisation_rows(m, labels[space])
    attacks = [('Black-box attack AUC (GAN-Leaks)', labels[s], a) for s, a in report['membership']['blackbox'].items()]
    if report['membership']['whitebox'] is not None:
        attacks.append(('White-box attack AUC (discriminator)', 'D logits', report['membership']['whitebox']))
    for name, space, a in attacks:
        value = f'{a["auc"]:.3f} [{a["ci_low"]:.3f}, {a["ci_high"]:.3f}]'
        lines.append(f'| {name} | {space} | {value} | AUC {value}: {_auc_sentence(a)}. |')
    return '\n'.join(lines) + '\n'


def write_summary(report: dict, json_path: str, md_path: str) -> None:
    """Write the full report as JSON and a clinician-readable markdown summary, both atomically.

    Args:
        report: audit's dict (optionally with feature_net=dict(name, ...)).
        json_path: JSON path.
        md_path: Markdown path.
    """
    with dnnlib.util.atomic_write(json_path, 'w') as f:
        json.dump(_json_safe(report), f, indent=2, allow_nan=False)
    with dnnlib.util.atomic_write(md_path, 'w') as f:
        f.write(_markdown(report))
