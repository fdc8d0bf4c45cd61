"""Metrics of a trained generator, offline: FID/KID/precision-recall/density-coverage in a chosen feature space
(a classify.py classifier, pixels, or Inception when its weights are on disk) and a privacy audit.

Examples:
    python calc_metrics.py --network snap.pkl --metrics fid,pr,dc --feature-net runs/clf/classifier.pkl
    python calc_metrics.py --network snap.pkl --metrics privacy --holdout heldout.zip --feature-net pixels
    python calc_metrics.py --network snap.pkl --metrics fid50k_full      # Inception: put its weights in the cache
"""

import json
import os

import click
import torch

import dnnlib
from cli_utils import resolve_device, user_errors
from clinical.synthetic import load_network
from metrics import metric_main
from metrics.features import load_feature_net
from training import checkpoint, release

# ----------------------------------------------------------------------------


def parse_metric_names(_ctx, _param, value):
    names = [name.strip() for name in value.split(',') if name.strip()]
    invalid = [name for name in names if not metric_main.is_valid_metric(name)]
    if not names or invalid:
        known = ', '.join([*metric_main.METRICS, *metric_main.ALIASES])
        what = ', '.join(invalid) if invalid else repr(value)
        raise click.BadParameter(f'unknown metric(s) {what}; known: {known}')
    return names


def load_networks(network, needs_discriminator, device):
    """(G_ema, D or None, the snapshot's training set kwargs or {})."""
    if release.is_release(network):
        if needs_discriminator:
            print('Note: a release holds no discriminator: the privacy audit runs its black-box attack only.')
        G, _names = load_network(network, device, param='--network', verbose=False)
        return G, None, {}
    data = checkpoint.load_snapshot(network, require=('G_ema',), param='--network')
    D = data['D'].eval().to(device) if needs_discriminator and data['D'] is not None else None
    return data['G_ema'].eval().requires_grad_(False).to(device), D, data['training_set_kwargs'] or {}


def resolve_data(data, training_set_kwargs):
    data = data or training_set_kwargs.get('path')
    if data is None:
        raise dnnlib.UserError('the network does not say what it was trained on; give --data', param='--data')
    if not os.path.exists(data):
        raise dnnlib.UserError(f'{data}: no such file or directory', param='--data')
    return data


# ----------------------------------------------------------------------------


@click.command(context_settings=dict(help_option_names=['-h', '--help'], max_content_width=120))
@click.option('--network', required=True, metavar='PKL', help='Snapshot pickle (or .safetensors release)')
@click.option('--metrics', 'names', default='fid', show_default=True, callback=parse_metric_names, metavar='LIST',
              help='fid, kid, pr, dc, privacy, or upstream names such as fid50k_full')  # fmt: skip
@click.option('--data', metavar='PATH', help="Real images  [default: the snapshot's training set]")
@click.option('--mirror', type=bool, metavar='BOOL', help='Add x-flipped reals  [default: as in training]')
@click.option('--feature-net', default='inception', show_default=True, metavar='SPEC',
              help='inception, pixels[:S], or a classify.py classifier PKL')  # fmt: skip
@click.option('--num-gen', type=click.IntRange(min=2), metavar='INT', help='Generated images  [default: as reals]')
@click.option('--holdout', metavar='PATH', help='Real images the GAN never saw (privacy)')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, metavar='INT', help='Seed')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
def main(network, names, data, mirror, feature_net, num_gen, holdout, seed, device):
    """Compute metrics of a generator; each result is printed and appended to metric-<name>.jsonl beside it.

    \b
    Feature spaces (recorded with every number; never compare numbers from different ones):
      a classify.py classifier PKL  penultimate features of a radiograph classifier (offline)
      pixels[:S]                    grey pixels at SxS (quick checks; default 16)
      inception                     the standard FID network, read from $SPINEGAN_INCEPTION or the
                                    dnnlib cache (never downloaded unasked); or give its path/URL
    privacy needs --holdout (real images the GAN never saw) and writes JSON, markdown and a PNG of the
    closest generated/training pairs beside the snapshot.
    """
    device = torch.device(resolve_device(device))
    with user_errors():
        if any(metric_main.resolve(name)[0] == 'privacy' for name in names) and holdout is None:
            raise dnnlib.UserError('the privacy audit needs real images the GAN never saw', param='--holdout')
        G, D, training_set_kwargs = load_networks(network, 'privacy' in names, device)
        net = load_feature_net(feature_net, device)
        data = resolve_data(data, training_set_kwargs)
        mirror = bool(training_set_kwargs.get('xflip')) if mirror is None else mirror
        for name in names:
            tag = f'{name}-' + os.path.splitext(os.path.basename(network))[0]
            result = metric_main.calc_metric(
                name, G, data=data, feature_net=net, num_gen=num_gen, mirror=mirror, holdout=holdout, D=D,
                outdir=os.path.dirname(os.path.abspath(network)), tag=tag, seed=seed, device=device,
            )  # fmt: skip
            click.echo(json.dumps(result))
            metric_main.append_result(result, network)


# ----------------------------------------------------------------------------

if __name__ == '__main__':
    main()
