"""Judging classifiers on a test set: AUC with a bootstrap CI, the operating point chosen on validation,
per-class and macro AUC, ROC figures, and paired comparisons of several classifiers on the same images.
"""

import json
import os

import numpy as np

import dnnlib
from clinical import evaluation
from clinical.classifier import load_classifier
from clinical.classifier_data import ImageSet, load_image_set, select_classes
from clinical.classifier_training import predict

# ----------------------------------------------------------------------------
# A test set in the classifier's classes: the same names, or a superset of one-hot classes (others dropped).


def test_set_for(net, path: str) -> tuple[ImageSet, int]:
    """(images labelled over net.class_names, number of images dropped because their class is not predicted)."""
    if not os.path.exists(path):
        raise dnnlib.UserError(f'{path}: no such file or directory', param='--data')
    try:
        image_set = load_image_set(path)
        if image_set.class_names == net.class_names:
            return image_set, 0
        kept = select_classes(image_set, net.class_names)
    except ValueError as err:
        message = f'{path}: {err} (the classifier predicts {", ".join(net.class_names)})'
        raise dnnlib.UserError(message, param='--data') from None
    return kept, len(image_set) - len(kept)


# ----------------------------------------------------------------------------
# One classifier on one test set -> report dict (top-level `auc`), eval.json and roc.png in outdir.


def evaluate(
    classifier_pkl: str,
    data: str,
    outdir: str | None = None,
    *,
    operating_point: str = 'val',  # 'val': the threshold chosen on validation; else evaluation.operating_point's rule.
    n_boot: int = 2000,
    seed: int = 0,
    device='cpu',
) -> dict:
    net, meta = load_classifier(classifier_pkl)
    test_set, dropped = test_set_for(net, data)
    scores = predict(net, test_set.images, device=device)
    report = dict(classifier=dict(path=classifier_pkl, sha256=meta['sha256'], train_data=meta.get('train_data')))
    report['data'] = dict(path=data, fingerprint=test_set.fingerprint(), num_images=len(test_set), dropped=dropped)
    report.update(kind=net.kind, class_names=net.class_names)
    if net.kind == 'binary':
        report.update(_binary_report(test_set.labels[:, 1], scores, meta, operating_point, n_boot, seed))
    else:
        report.update(_multi_report(test_set, scores, net.kind, n_boot, seed))
    if outdir is not None:
        write_report(report, outdir, _roc_curves(test_set, scores, net))
    return report


def _binary_report(y_true, scores, meta, rule, n_boot, seed) -> dict:
    report = evaluation.auc_with_ci(y_true, scores, n_boot=n_boot, seed=seed)
    if rule == 'val':  # A classifier trained without a validation split (DP-SGD) keeps its own decision, 0.5.
        threshold = meta.get('val_threshold')
        rule = f'threshold={0.5 if threshold is None else threshold}'
    try:
        report['operating_point'] = evaluation.operating_point(y_true, scores, rule)
    except ValueError as err:
        raise dnnlib.UserError(str(err), param='--operating-point') from None
    return report


def _multi_report(test_set, scores, kind, n_boot, seed) -> dict:
    kind_name = 'multiclass' if kind == 'multiclass' else 'multilabel'
    aucs = evaluation.multiclass_auc(test_set.labels, scores, test_set.class_names, kind_name)
    rng = np.random.RandomState(seed)
    boots = []
    for _ in range(min(n_boot, 500)):  # Macro AUC over image resamples; classes missing from a resample skip it.
        idx = rng.randint(len(test_set), size=len(test_set))
        boots.append(evaluation.multiclass_auc(test_set.labels[idx], scores[idx], test_set.class_names, kind_name))
    macros = [b['macro'] for b in boots if b['macro'] is not None and np.isfinite(b['macro'])]
    low, high = np.percentile(macros, [2.5, 97.5]).tolist() if macros else (None, None)
    return dict(auc=aucs['macro'], ci_low=low, ci_high=high, n=len(test_set), per_class=aucs['per_class'])


def _roc_curves(test_set, scores, net):
    if net.kind == 'binary':
        return [(net.class_names[1], test_set.labels[:, 1], scores)]
    columns = [k for k in range(len(net.class_names)) if 0 < (test_set.labels[:, k] > 0.5).sum() < len(test_set)]
    return [(net.class_names[k], test_set.labels[:, k] > 0.5, scores[:, k]) for k in columns]


def write_report(report: dict, outdir: str, curves) -> None:
    os.makedirs(outdir, exist_ok=True)
    with dnnlib.util.atomic_write(os.path.join(outdir, 'eval.json'), 'w') as f:
        json.dump(report, f, indent=2)
    evaluation.plot_roc(curves, os.path.join(outdir, 'roc.png'), title=os.path.basename(report['data']['path']))


# ----------------------------------------------------------------------------
# Several binary classifiers on one test set: AUC with CI each, and each one's difference from the first
# (the reference) with a paired test (DeLong, or a paired bootstrap).


def compare(classifier_pkls: list[str], data: str, *, test: str = 'delong', n_boot=2000, seed=0, device='cpu'):
    """Rows [{name, auc, ci_low, ci_high, diff, p_value}], the first being the reference."""
    rows, reference, curves = [], None, []
    for path in classifier_pkls:
        net, _meta = load_classifier(path)
        if net.kind != 'binary':
            raise dnnlib.UserError(f'{path} is {net.kind}; compare takes binary classifiers', param='--classifier')
        test_set, _dropped = test_set_for(net, data)
        y_true, scores = test_set.labels[:, 1], predict(net, test_set.images, device=device)
        if reference is not None and not np.array_equal(reference[0], y_true):
            raise dnnlib.UserError(f'{path} sees other test images than the first classifier', param='--classifier')
        row = dict(
            name=_short_name(path), path=path, **evaluation.auc_with_ci(y_true, scores, n_boot=n_boot, seed=seed)
        )
        if reference is not None:
            row.update(_paired(test, y_true, reference[1], scores, n_boot, seed))
        reference = reference or (y_true, scores)
        rows.append(row)
        curves.append((row['name'], y_true, scores))
    return rows, curves


def _paired(test, y_true, scores_ref, scores, n_boot, seed) -> dict:
    if test == 'delong':
        result = evaluation.delong_test(y_true, scores, scores_ref)
    else:
        result = evaluation.paired_bootstrap_test(y_true, scores, scores_ref, n_boot=n_boot, seed=seed)
    return dict(diff=result['diff'], diff_low=result['ci_low'], diff_high=result['ci_high'], p_value=result['p_value'])


def _short_name(path: str) -> str:
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return parent if os.path.basename(path) == 'classifier.pkl' and parent else os.path.basename(path)


def format_table(rows: list[dict]) -> str:
    lines = [f'{"classifier":<28} {"AUC":>6}  {"95% CI":<15} {"vs first":>9}  {"p":>7}']
    for row in rows:
        diff = f'{row["diff"]:+.3f}' if 'diff' in row else 'ref'
        p = f'{row["p_value"]:.4f}' if 'p_value' in row else ''
        ci = f'[{row["ci_low"]:.3f}, {row["ci_high"]:.3f}]'
        lines.append(f'{row["name"][:28]:<28} {row["auc"]:>6.3f}  {ci:<15} {diff:>9}  {p:>7}')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------
