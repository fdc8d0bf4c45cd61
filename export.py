"""Export a snapshot's G_ema as a release: one safetensors file to share, which loads without pickle.

Examples:
    python export.py --network=runs/00000-x/network-snapshot-000100.pkl --dest=G.safetensors
    python generate.py --network=G.safetensors --seeds=0-15 --class=abnormal --grid --outdir=out
"""

import os

import click

import cli_utils
import dnnlib
from training import checkpoint, release

# ----------------------------------------------------------------------------
# --dest: a new '.safetensors' file (an existing one only with --overwrite) in an existing folder.


def check_dest(dest: str, overwrite: bool) -> None:
    if not dest.lower().endswith('.safetensors'):
        raise dnnlib.UserError(f'{dest!r} must end in .safetensors', param='--dest')
    if os.path.isdir(dest):
        raise dnnlib.UserError(f'{dest!r} is a folder; give a file name', param='--dest')
    if os.path.exists(dest) and not overwrite:
        raise dnnlib.UserError(f'{dest!r} exists; pass --overwrite to replace it', param='--dest')
    folder = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(folder):
        raise dnnlib.UserError(f'folder {folder!r} does not exist', param='--dest')


# ----------------------------------------------------------------------------
# Snapshot -> release: check everything before reading the pickle, write only when all is well.


def export(network_pkl: str, dest: str, overwrite: bool = False) -> dict:
    """Write `dest` from the snapshot's G_ema; return the release config."""
    check_dest(dest, overwrite)
    if release.is_release(network_pkl):
        raise dnnlib.UserError(f'{network_pkl} is already a release; share it as it is', param='--network')
    print(f'Loading snapshot "{network_pkl}" (pickle: trusted sources only)...')
    data = checkpoint.load_snapshot(network_pkl, require=('G_ema',), param='--network')
    try:
        return release.save_release(data['G_ema'], release.snapshot_info(data), dest, param='--network')
    except OSError as err:  # E.g. a read-only folder or a full disk; atomic_write leaves nothing behind.
        raise dnnlib.UserError(f'cannot write {dest!r} ({err.strerror or err})', param='--dest') from None


# ----------------------------------------------------------------------------
# Command line.


@click.command(context_settings=dict(max_content_width=120))
@click.option('--network', 'network_pkl', help='Network snapshot (path or URL)', metavar='PKL', required=True)
@click.option('--dest', help='Release file to write', metavar='FILE.safetensors', type=str, required=True)
@click.option('--overwrite', help='Replace an existing --dest', is_flag=True)
def main(network_pkl, dest, overwrite):
    """Export G_ema of a snapshot as a safetensors release (weights + JSON config; no pickle, D, optimizer or paths).

    Pickles run code when loaded: share the release, and load pickles only from trusted sources.

    \b
    Example:
    python export.py --network=network-snapshot-000100.pkl --dest=G.safetensors
    """
    with cli_utils.user_errors():
        config = export(network_pkl, dest, overwrite)
    classes = f'{len(config["class_names"])} named classes' if config['class_names'] else f'c_dim {config["c_dim"]}'
    size = os.path.getsize(dest)
    print(f'Wrote {dest} ({size / 1024:.1f} KiB; {config["img_resolution"]}px, {config["img_channels"]} ch, {classes})')


# ----------------------------------------------------------------------------

if __name__ == '__main__':
    main()

# ----------------------------------------------------------------------------
