"""Radiograph classifiers on real, synthetic or mixed images: the synthetic-learning test of a generator.

Examples:
    python classify.py train --data phantom-train.zip --outdir runs/clf-real
    python classify.py train --synthetic snap.pkl --num 2000 --outdir runs/clf-synth      # synthetic only
    python classify.py train --data real.zip --synthetic snap.pkl --num 500 --outdir runs/clf-mix
    python classify.py train --data phantom-train.zip --dp --dp-epsilon 10 --outdir runs/clf-dp      # DP-SGD
    python classify.py eval --classifier runs/clf-real/classifier.pkl --data phantom-test.zip --outdir runs/eval
    python classify.py compare --data phantom-test.zip runs/clf-real/classifier.pkl runs/clf-synth/classifier.pkl
"""

import json
import os

import click

import dnnlib
from cli_utils import finite_float, resolve_device, user_errors
from clinical import classifier_report, dp
from clinical.classifier import ARCHS
from clinical.classifier_data import assemble_training_set
from clinical.classifier_training import fit_ensemble

# ----------------------------------------------------------------------------
# Option parsing shared by the subcommands.


def comma_list(_ctx, param, value):
    if value is None:
        return None
    items = [item.strip() for item in value.split(',') if item.strip()]
    if not items:
        raise click.BadParameter('empty list', param_hint=f'--{param.name.replace("_", "-")}')
    return items


def parse_prior(_ctx, _param, value):
    if value is None or value == 'balanced':
        return None
    try:
        prior = [float(v) for v in value.split(',')]
    except ValueError:
        raise click.BadParameter(f'{value!r}: "balanced" or class shares like 0.3,0.7') from None
    if min(prior) < 0 or sum(prior) <= 0 or not all(p < float('inf') for p in prior):
        raise click.BadParameter(f'{value!r}: shares must be finite, non-negative and not all zero')
    return prior


def parse_channels(_ctx, _param, value):
    try:
        channels = tuple(int(v) for v in value.split(','))
    except ValueError:
        raise click.BadParameter(f'{value!r} is not a list of integers like 16,32,64,128') from None
    if not channels or min(channels) < 8 or any(c % 8 for c in channels):
        raise click.BadParameter(f'{value!r}: each width must be a multiple of 8')
    return channels


def check_outdir(outdir, overwrite, name):
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise click.BadParameter(f'{outdir} is a file, not a folder', param_hint='--outdir')
    if not overwrite and os.path.exists(os.path.join(outdir, name)):
        raise click.BadParameter(f'{outdir} already holds {name}; add --overwrite to replace it', param_hint='--outdir')


device_option = click.option(
    '--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True, help='Device'
)

# ----------------------------------------------------------------------------
# Command line.


@click.group(context_settings=dict(help_option_names=['-h', '--help'], max_content_width=120))
def main():
    """Train radiograph classifiers on real, synthetic or mixed data, and measure their AUC on real test data."""


@main.command()
@click.option('--data', metavar='PATH', help='Real training data (dataset zip or folder)')
@click.option('--synthetic', metavar='PKL|PATH', help='Generator snapshot/release to sample, or synthetic dataset')
@click.option('--num', type=click.IntRange(min=1), metavar='INT', help='Synthetic images to use')
@click.option('--prior', callback=parse_prior, metavar='balanced|P,..', help='Class shares of sampled images')
@click.option('--trunc', type=finite_float(0, 1), default=1.0, metavar='FLOAT', show_default=True, help='Truncation')
@click.option('--classes', callback=comma_list, metavar='A,B', help='Train on these classes only (2 = binary)')
@click.option('--outdir', required=True, metavar='DIR', help='Where classifier.pkl goes')
@click.option('--arch', type=click.Choice(ARCHS), default='resnet', show_default=True, help='Architecture')
@click.option(
    '--channels',
    callback=parse_channels,
    metavar='LIST',
    default='16,32,64,128',
    show_default=True,
    help='Stage widths',
)
@click.option(
    '--resolution', type=click.IntRange(16, 1024), metavar='INT', default=64, show_default=True, help='Input size'
)
@click.option(
    '--epochs', type=click.IntRange(min=1), metavar='INT', default=20, show_default=True, help='Training epochs'
)
@click.option('--batch', type=click.IntRange(min=1), metavar='INT', default=64, show_default=True, help='Batch size')
@click.option(
    '--lr',
    type=finite_float(0, min_open=True),
    metavar='FLOAT',
    default=2e-3,
    show_default=True,
    help='Peak learning rate',
)
@click.option(
    '--val-fraction', type=finite_float(0.05, 0.5), metavar='FLOAT', default=0.15, show_default=True, help='Validation'
)
@click.option('--xflip', is_flag=True, help='Augment with horizontal flips')
@click.option('--init', 'init_weights', metavar='FILE', help='Start from these weights (.pkl, .pt, .safetensors)')
@click.option('--seed', type=click.IntRange(min=0), metavar='INT', default=0, show_default=True, help='Random seed')
@click.option('--ensemble', type=click.IntRange(min=1), metavar='INT', default=1, show_default=True,
              help='Train this many (seeds --seed, --seed+1, ...), saved as one: their mean probability')  # fmt: skip
@click.option('--overwrite', is_flag=True, help='Replace an existing classifier.pkl in --outdir')
@click.option('--dp', 'use_dp', is_flag=True, help='DP-SGD (no validation split or epoch choice; see train.py --dp)')
@click.option('--dp-epsilon', type=finite_float(0, min_open=True), metavar='FLOAT', help='Budget: sigma spends it')
@click.option('--dp-delta', type=finite_float(0, 1, True, True), metavar='FLOAT', help='Delta [default: 0.1/N]')
@click.option('--dp-noise', type=finite_float(0), metavar='FLOAT', help='Noise multiplier instead of --dp-epsilon')
@click.option('--dp-clip', type=finite_float(0, min_open=True), default=1.0, show_default=True, metavar='FLOAT',
              help='Per-sample gradient norm bound C')  # fmt: skip
@click.option('--dp-accountant', type=click.Choice(dp.ACCOUNTANTS), default='prv', show_default=True, help='Accountant')
@click.option('--dp-mode', type=click.Choice(dp.MODES), default='full', show_default=True, help='Ablation arm')
@device_option
def train(data, synthetic, num, prior, trunc, classes, outdir, overwrite, seed, ensemble, val_fraction, device,
          **kwargs):  # fmt: skip
    """Train a classifier; the best epoch is chosen on a validation split taken (patient-aware) from the data.

    \b
    --data             real images; --synthetic a generator (sampled on the fly: --num, --prior, --trunc)
                       or a dataset of synthetic images; both together = real + --num synthetic.
    --classes          e.g. bacteria,virus: keep two classes of a 3-class dataset -> a binary task.
    Writes DIR/classifier.pkl (a self-contained pickle with its preprocessing, classes and data hash).
    """
    check_outdir(outdir, overwrite, 'classifier.pkl')
    device = resolve_device(device)
    if kwargs['use_dp'] and synthetic is not None:
        raise click.BadParameter('DP-SGD protects real images; synthetic ones carry their generator\'s privacy',
                                 param_hint='--dp')  # fmt: skip
    if kwargs['use_dp'] and ensemble > 1:
        raise click.BadParameter('each member of a DP-SGD ensemble would spend the budget again',
                                 param_hint='--ensemble')  # fmt: skip
    if kwargs['init_weights'] is not None and not os.path.isfile(kwargs['init_weights']):
        raise click.BadParameter(f'{kwargs["init_weights"]}: no such file', param_hint='--init')
    with user_errors():
        image_set = assemble_training_set(data, synthetic, num, prior, trunc, classes, seed, device)
    counts = ', '.join(f'{name} {count}' for name, count in zip(image_set.class_names, image_set.class_counts()))
    click.echo(f'Training on {len(image_set)} images ({counts}) from {image_set.description}')
    kwargs['batch_size'] = kwargs.pop('batch')
    dp_flags = {key: kwargs.pop(key) for key in list(kwargs) if key.startswith('dp_') or key == 'use_dp'}
    with user_errors():
        privacy = plan_classifier_privacy(image_set, kwargs['batch_size'], kwargs['epochs'], **dp_flags)
        if privacy is not None:
            click.echo(dp.describe_plan(privacy))
        meta = fit_ensemble(image_set, outdir, seeds=range(seed, seed + ensemble), val_fraction=val_fraction,
                            device=device, privacy=privacy, **kwargs)  # fmt: skip
    if privacy is not None:
        click.echo(f'Privacy: {dp.describe_release(meta["dp"])}; wrote {outdir}/classifier.pkl')
        return
    for member in meta.get('members') or [meta]:
        val = f'{member["val_auc"]:.4f} ({member["split"]["val"]} images)'
        click.echo(f'Seed {member["seed"]}: best validation AUC {val}')
    click.echo(f'Wrote {outdir}/classifier.pkl' + (f' (an ensemble of {ensemble})' if ensemble > 1 else ''))


def plan_classifier_privacy(image_set, batch_size, epochs, use_dp, **flags):
    """The DP-SGD plan for --dp (one unit per patient when the data has patient groups), else None."""
    options = {key[len('dp_') :]: value for key, value in flags.items()}
    if not use_dp:
        given = [key for key, value in options.items() if value is not None and key in ('epsilon', 'delta', 'noise')]
        if given:
            raise dnnlib.UserError('needs --dp', param=f'--dp-{given[0]}')
        return None
    num_units = len(set(image_set.groups))
    steps = epochs * -(-len(image_set) // batch_size)
    unit = 'patient' if num_units < len(image_set) else 'image'
    try:
        return dp.plan_privacy(num_units, len(image_set), batch_size, steps, unit=unit, **options)
    except ValueError as err:
        raise dnnlib.UserError(str(err)) from None


@main.command('eval')
@click.option('--classifier', 'classifier_pkl', required=True, metavar='PKL', help='classify.py train output')
@click.option('--data', required=True, metavar='PATH', help='Test data (dataset zip or folder)')
@click.option('--outdir', required=True, metavar='DIR', help='Where eval.json and roc.png go')
@click.option('--operating-point', default='val', show_default=True, metavar='RULE', help='Threshold rule')
@click.option(
    '--bootstrap', type=click.IntRange(100, 100000), metavar='INT', default=2000, show_default=True, help='Resamples'
)
@click.option('--seed', type=click.IntRange(min=0), metavar='INT', default=0, show_default=True, help='Bootstrap seed')
@device_option
def evaluate(classifier_pkl, data, outdir, operating_point, bootstrap, seed, device):
    """AUC with a bootstrap 95% CI, sensitivity/specificity at an operating point, per-class and macro AUC.

    \b
    --operating-point  val (the threshold chosen on the validation split: honest; 0.5 without one), youden,
                       sensitivity=0.9, specificity=0.9 or threshold=0.5 (the last three on the test set).
    """
    check_outdir(outdir, True, 'eval.json')
    with user_errors():
        report = classifier_report.evaluate(
            classifier_pkl, data, outdir, operating_point=operating_point, n_boot=bootstrap, seed=seed,
            device=resolve_device(device),
        )  # fmt: skip
    click.echo(f'AUC {report["auc"]:.4f} (95% CI {report["ci_low"]:.4f}-{report["ci_high"]:.4f}), n={report["n"]}')
    point = report.get('operating_point')
    if point:
        click.echo(f'At threshold {point["threshold"]:.3f}: sensitivity {point["sensitivity"]:.3f}, '
                   f'specificity {point["specificity"]:.3f}')  # fmt: skip
    for name, auc in (report.get('per_class') or {}).items():
        click.echo(f'  {name}: ' + ('n/a (no positives or negatives)' if auc is None else f'{auc:.4f}'))
    click.echo(f'Wrote {outdir}/eval.json and {outdir}/roc.png')


@main.command()
@click.argument('classifiers', nargs=-1, required=True, metavar='PKL...')
@click.option('--data', required=True, metavar='PATH', help='Test data (dataset zip or folder)')
@click.option(
    '--test', type=click.Choice(['delong', 'bootstrap']), default='delong', show_default=True, help='Paired test'
)
@click.option(
    '--bootstrap', type=click.IntRange(100, 100000), metavar='INT', default=2000, show_default=True, help='Resamples'
)
@click.option('--seed', type=click.IntRange(min=0), metavar='INT', default=0, show_default=True, help='Bootstrap seed')
@click.option('--outdir', metavar='DIR', help='Also write compare.json and roc.png here')
@device_option
def compare(classifiers, data, test, bootstrap, seed, outdir, device):
    """AUCs of several binary classifiers on one test set; each compared with the first (paired test)."""
    with user_errors():
        rows, curves = classifier_report.compare(
            list(classifiers), data, test=test, n_boot=bootstrap, seed=seed, device=resolve_device(device)
        )
    click.echo(classifier_report.format_table(rows))
    click.echo(f'p: two-sided {"DeLong" if test == "delong" else "paired bootstrap"} test of the AUC difference')
    if outdir is not None:
        os.makedirs(outdir, exist_ok=True)
        with dnnlib.util.atomic_write(os.path.join(outdir, 'compare.json'), 'w') as f:
            json.dump(dict(data=data, test=test, rows=rows), f, indent=2)
        classifier_report.evaluation.plot_roc(curves, os.path.join(outdir, 'roc.png'), title='compare')


# ----------------------------------------------------------------------------

if __name__ == '__main__':
    main()
