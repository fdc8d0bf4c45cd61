"""study.py's report: report.json, report.md (each number links to the file behind it) and its figures."""

import json
import math
import os

import dnnlib
from clinical import classifier_report, evaluation

METRIC_COLUMNS = [('fid', 'FID'), ('precision', 'precision'), ('recall', 'recall'), ('density', 'density'),
                  ('coverage', 'coverage'), ('memorised_share/features', 'memorised'),
                  ('closer_to_train/features', 'closer to train'), ('auc_blackbox/features', 'MIA AUC (black-box)'),
                  ('auc_whitebox', 'MIA AUC (white-box)')]  # fmt: skip


def write_report(outdir, report):
    with dnnlib.util.atomic_write(os.path.join(outdir, 'report.json'), 'w') as f:
        json.dump(report, f, indent=2, default=str)
    figures = write_figures(outdir, report)
    lines = summary_lines(outdir, report, figures) + auc_table(outdir, report) + metrics_table(outdir, report)
    with dnnlib.util.atomic_write(os.path.join(outdir, 'report.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def short_privacy(gan) -> str:
    epsilon = gan.get('epsilon')
    if epsilon is None:
        return 'no DP'
    return f'epsilon {epsilon:.2f}' if math.isfinite(epsilon) else 'not DP (epsilon = inf)'


# ----------------------------------------------------------------------------
# The markdown.


def summary_lines(outdir, report, figures):
    rel = lambda path: os.path.relpath(path, outdir)  # noqa: E731
    base, data, config = report['baseline'], report['data'], report['config']
    counts = ', '.join(f'{split} {sum(n)}' for split, n in data['counts'].items())
    lines = [
        '# Synthetic-learning study', '',
        f'Data: `{config["data"]}` at {config["resolution"]} px, classes {", ".join(data["class_names"])}; '
        f'{data["patients"]} patients, split by patient: {counts}. No GAN and no model choice saw the test split.', '',
        f'Real baseline (trained on GAN-train, judged on test): AUC [{base["auc"]:.3f}]({rel(base["eval"])}) '
        f'(95% CI {base["ci_low"]:.3f}-{base["ci_high"]:.3f}), [classifier]({rel(base["classifier"])}). '
        f'GAN arms trained {config["kimg"]:g} kimg each.{_ensemble_note(config)}', '',
    ]  # fmt: skip
    lines += [f'![{title}]({name})' for name, title in figures.items()] + ['']
    for arm, result in report['arms'].items():
        metrics = result['metrics']
        lines.append(f'- {arm}: [samples, one row per class]({rel(metrics["samples"])}), [nearest training '
                     f'neighbours]({rel(metrics["pairs"])}), [privacy audit]({rel(metrics["audit"])}); '
                     f'privacy: {result["gan"]["privacy"]}')  # fmt: skip
    return lines + ['']


def _ensemble_note(config):
    if config['clf_ensemble'] == 1:
        return ''
    return (
        f' Each classifier is an ensemble of {config["clf_ensemble"]} trained with consecutive seeds (the mean of '
        'their probabilities); "members" gives the range of their single test AUCs.'
    )


def auc_table(outdir, report):
    rel = lambda path: os.path.relpath(path, outdir)  # noqa: E731
    spread = report['config']['clf_ensemble'] > 1  # A column for the range of the members' own AUCs.
    members = lambda row: [_members(row)] if spread else []  # noqa: E731
    auc = lambda row: f'[{row["auc"]:.3f}]({rel(row["eval"])}) ({row["ci_low"]:.3f}-{row["ci_high"]:.3f})'  # noqa: E731
    head = ['arm', 'privacy', 'training set', 'images', 'test AUC (95% CI)', *(['members'] if spread else []),
            'minus real (95% CI)', 'DeLong p']  # fmt: skip
    base = report['baseline']
    rows = [['real', 'no DP', 'GAN-train', '-', auc(base), *members(base), '', '']]
    for arm, result in report['arms'].items():
        gan = result['gan']
        for name, row in result['classifiers'].items():
            diff = f'{row["diff"]:+.3f} ({row["diff_low"]:+.3f} to {row["diff_high"]:+.3f})'
            rows.append([f'[{arm}]({rel(gan["snapshot"])})', short_privacy(gan), name, str(row['num_images']),
                         auc(row), *members(row), diff, f'{row["p_value"]:.3g}'])  # fmt: skip
    lines = ['## Synthetic learning: classifiers on the real test split', '', '| ' + ' | '.join(head) + ' |',
             '|---' * len(head) + '|']  # fmt: skip
    return lines + ['| ' + ' | '.join(cells) + ' |' for cells in rows] + ['']


def _members(row):
    aucs = row['member_aucs']
    return f'{min(aucs):.3f}-{max(aucs):.3f}'


def metrics_table(outdir, report):
    lines = ['## Fidelity and privacy of the last snapshot (feature space: a VGG classifier trained on GAN-train)', '',
             '| arm | ' + ' | '.join(title for _key, title in METRIC_COLUMNS) + ' |',
             '|---' * (len(METRIC_COLUMNS) + 1) + '|']  # fmt: skip
    for arm, result in report['arms'].items():
        values = result['metrics']['results']
        cells = [f'{values[key]:.3f}' if values.get(key) is not None else '-' for key, _title in METRIC_COLUMNS]
        lines.append(f'| [{arm}]({os.path.relpath(result["metrics"]["audit"], outdir)}) | ' + ' | '.join(cells) + ' |')
    return lines + ['', 'memorised: share of generated images closer to a training image than the 1st percentile of '
                    'training-to-training distances; closer to train: share nearer a training than a holdout image '
                    '(no memorisation: the training share of the two); MIA: membership-inference AUC on GAN-train vs '
                    'holdout patients (0.5: no leakage).', '']  # fmt: skip


# ----------------------------------------------------------------------------
# Figures (matplotlib, no pyplot): AUC per arm, ROC curves, FID vs kimg, epsilon vs AUC for the DP arms.


def write_figures(outdir, report) -> dict:
    figures = {'auc.png': 'AUC per arm with 95% CIs', 'roc.png': 'ROC curves on the test split',
               'fid_kimg.png': 'FID vs kimg per arm'}  # fmt: skip
    plot_aucs(report, os.path.join(outdir, 'auc.png'))
    plot_rocs(report, os.path.join(outdir, 'roc.png'))
    plot_fid_curves(report, os.path.join(outdir, 'fid_kimg.png'))
    if plot_epsilon(report, os.path.join(outdir, 'epsilon_auc.png')):
        figures['epsilon_auc.png'] = 'epsilon vs synthetic-only AUC'
    return figures


def _figure(path, draw, size):
    import matplotlib.figure

    fig = matplotlib.figure.Figure(figsize=size, dpi=100)
    draw(fig.subplots())
    fig.tight_layout()
    with dnnlib.util.atomic_write(path, 'wb') as f:
        fig.savefig(f, format='png')


def plot_aucs(report, path):
    rows = [('real', report['baseline'])]
    for arm, result in report['arms'].items():
        rows += [(f'{arm}\n{name}', row) for name, row in result['classifiers'].items()]

    def draw(ax):
        for x, (_label, row) in enumerate(rows):
            ax.errorbar(x, row['auc'], yerr=[[row['auc'] - row['ci_low']], [row['ci_high'] - row['auc']]], fmt='o',
                        color='black' if x == 0 else 'tab:blue', capsize=4)  # fmt: skip
        ax.axhline(report['baseline']['auc'], color='black', lw=0.8, ls='--')
        ax.axhline(0.5, color='grey', lw=0.8, ls=':')
        ax.set_xticks(range(len(rows)), [label for label, _row in rows], fontsize=7)
        ax.set(ylabel='test AUC (95% CI)', ylim=(0.4, 1.0), title='Classifiers on the real test split')

    _figure(path, draw, (max(4, 1.1 * len(rows)), 3.5))


def plot_rocs(report, path):
    """The real baseline and each arm's synthetic-only classifiers, on the same test images."""
    pkls = [report['baseline']['classifier']]
    for result in report['arms'].values():
        pkls += [row['classifier'] for name, row in result['classifiers'].items() if name.startswith('synthetic')]
    _rows, curves = classifier_report.compare(pkls, report['data']['paths']['test'])
    names = ['real'] + [f'{arm} {name}' for arm, result in report['arms'].items()
                        for name in result['classifiers'] if name.startswith('synthetic')]  # fmt: skip
    curves = [(name, y_true, scores) for name, (_path, y_true, scores) in zip(names, curves)]
    evaluation.plot_roc(curves, path, title='ROC on the real test split')


def plot_fid_curves(report, path):
    def draw(ax):
        for arm, result in report['arms'].items():
            curve = result['gan']['fid_curve']
            ax.plot([p['kimg'] for p in curve], [p['fid'] for p in curve], marker='o', label=arm)
        ax.set(xlabel='kimg', ylabel='FID (feature classifier)', title='Training progress per arm')
        ax.legend(fontsize=8)

    _figure(path, draw, (5, 3.5))


def plot_epsilon(report, path) -> bool:
    points = [(result['gan']['epsilon'], row['auc'], arm) for arm, result in report['arms'].items()
              for name, row in result['classifiers'].items() if name.startswith('synthetic')
              and result['gan'].get('epsilon') is not None and math.isfinite(result['gan']['epsilon'])]  # fmt: skip
    if not points:
        return False

    def draw(ax):
        ax.plot([p[0] for p in points], [p[1] for p in points], 'o')
        for epsilon, auc, arm in points:
            ax.annotate(arm, (epsilon, auc), fontsize=7)
        ax.axhline(report['baseline']['auc'], color='black', lw=0.8, ls='--', label='real')
        ax.set(xscale='log', xlabel='epsilon (log)', ylabel='synthetic-only test AUC', ylim=(0.4, 1.0))
        ax.legend(fontsize=8)

    _figure(path, draw, (4.5, 3.5))
    return True
