"""Generate images (one PNG per seed, or one grid) from a network snapshot or a release, on CPU or CUDA.

Examples:
    python generate.py --network=runs/00000-x/network-snapshot-000100.pkl --seeds=0-7 --outdir=out
    python generate.py --network=G.safetensors --seeds=0-7 --outdir=out   # a release (export.py)
    python generate.py --network=snap.pkl --seeds=0-15 --class=2 --grid --outdir=out
    python generate.py --network=snap.pkl --seeds=0-3 --class=0,1,0,0,1,0,0,0 --outdir=out   # multi-label
"""

import math
import os
import re

import click
import numpy as np
import PIL.Image
import torch

import cli_utils
import dnnlib
from clinical.labels import resolve_class
from clinical.synthetic import load_network
from training.sampling import generate_images

MAX_SEED = 2**32 - 1  # numpy's RandomState takes seeds in [0, 2**32).

# ----------------------------------------------------------------------------
# "0-7,10" -> [0, 1, ..., 7, 10].


def parse_range(text):
    values = []
    for part in text.split(','):
        match = re.fullmatch(r'\s*(\d+)\s*(?:-\s*(\d+)\s*)?', part)
        if match is None:
            raise click.BadParameter(f'{text!r} is not a list of ints or ranges like 0-7,10', param_hint='--seeds')
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        if hi < lo:
            raise click.BadParameter(f'range {part.strip()!r} is empty', param_hint='--seeds')
        if hi > MAX_SEED:
            raise click.BadParameter(f'seed {hi} is too large (at most 2**32 - 1 = {MAX_SEED})', param_hint='--seeds')
        values += range(lo, hi + 1)
    return values


# ----------------------------------------------------------------------------
# --class: an index ("3"), a label vector ("0,1,0,1"), or a class name (clinical.labels.resolve_class).


def make_label(class_spec, c_dim, class_names):
    if c_dim == 0:
        if class_spec is not None:
            raise click.BadParameter('the network is unconditional; omit it', param_hint='--class')
        return np.zeros([0], dtype=np.float32)
    if class_spec is None:
        raise click.BadParameter(
            f'the network is conditional (c_dim={c_dim}); give an index or name', param_hint='--class'
        )
    class_spec = class_spec.strip()
    if re.fullmatch(r'\d+', class_spec):
        return one_hot(int(class_spec), c_dim)
    vector = parse_vector(class_spec) if ',' in class_spec else None
    if vector is not None:
        return check_vector(vector, c_dim)
    return check_vector(resolve_class_names(class_spec, class_names), c_dim)


def one_hot(index, c_dim):
    if not 0 <= index < c_dim:
        raise click.BadParameter(f'class index {index} out of range [0, {c_dim - 1}]', param_hint='--class')
    label = np.zeros([c_dim], dtype=np.float32)
    label[index] = 1
    return label


def parse_vector(text):
    """'0,1.5,0' -> float32 vector, or None if an entry is not a number (then it is a list of names).

    Every entry must be finite in float32: 'nan,0' and '1e39,0' (inf in float32) are errors.
    """
    try:
        values = np.array([float(v) for v in text.split(',')], dtype=np.float64)
    except ValueError:
        return None
    if not np.all(np.abs(values) <= np.finfo(np.float32).max):  # Also false for NaN.
        raise click.BadParameter(f'{text!r}: label entries must be finite float32 numbers', param_hint='--class')
    return values.astype(np.float32)


def check_vector(vector, c_dim):
    if vector.size != c_dim:
        raise click.BadParameter(f'label vector has {vector.size} entries, network needs {c_dim}', param_hint='--class')
    return vector


def resolve_class_names(spec, class_names):
    """Name(s) -> label vector through the one schema module (aliases, multi-hot lists)."""
    if not class_names:
        raise click.BadParameter(
            f'{spec!r}: no class names stored with this snapshot; use an index', param_hint='--class'
        )
    try:
        return np.asarray(resolve_class(spec, class_names), dtype=np.float32).ravel()
    except (ValueError, KeyError) as err:
        raise click.BadParameter(str(err), param_hint='--class') from None


# ----------------------------------------------------------------------------
# Output: PNGs written atomically, or one grid.


def to_pil(image):
    return PIL.Image.fromarray(image[:, :, 0], 'L') if image.shape[2] == 1 else PIL.Image.fromarray(image, 'RGB')


def save_png(image, path):
    with dnnlib.util.atomic_write(path, 'wb') as f:
        to_pil(image).save(f, format='PNG')


def tile_grid(images):
    """[N, H, W, C] -> [rows*H, cols*W, C] with cols = ceil(sqrt(N)); empty cells stay black."""
    n, h, w, ch = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    padded = np.zeros([rows * cols, h, w, ch], dtype=images.dtype)
    padded[:n] = images
    return padded.reshape(rows, cols, h, w, ch).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, ch)


# ----------------------------------------------------------------------------
# --outdir: refuse a file before loading anything; create the folder only once the inputs are good.


def check_outdir(outdir):
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise click.BadParameter(f'{outdir!r} is a file, not a folder', param_hint='--outdir')


def make_outdir(outdir):
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as err:
        raise click.BadParameter(f'cannot create {outdir!r} ({err.strerror})', param_hint='--outdir') from None


# ----------------------------------------------------------------------------
# Command line.


@click.command(context_settings=dict(max_content_width=120))
@click.option(
    '--network',
    'network_pkl',
    help='Snapshot pickle (path or URL; trusted sources only) or .safetensors release (export.py)',
    metavar='PKL|FILE',
    type=str,
    required=True,
)
@click.option('--seeds', help='Seeds, e.g. 0-7,10', metavar='LIST', type=str, required=True)
@click.option(
    '--trunc',
    'truncation_psi',
    help='Truncation psi',
    metavar='FLOAT',
    type=cli_utils.finite_float(),
    default=1,
    show_default=True,
)
@click.option(
    '--class',
    'class_spec',
    help='Class index, label vector (0,1,0,...) or class name',
    metavar='IDX|VEC|NAME',
    type=str,
)
@click.option(
    '--noise-mode',
    help='Noise mode',
    type=click.Choice(['const', 'random', 'none']),
    default='const',
    show_default=True,
)
@click.option('--outdir', help='Where to save the output images', metavar='DIR', type=str, required=True)
@click.option('--grid', help='Write one grid.png instead of one PNG per seed', is_flag=True)
@click.option(
    '--batch',
    help='Images per forward pass (does not change the images)',
    metavar='INT',
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
)
@click.option(
    '--device', help='Device kind', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True
)
def main(network_pkl, seeds, truncation_psi, class_spec, noise_mode, outdir, grid, batch, device):
    """Generate images using a network snapshot pickle or a safetensors release.

    \b
    Example:
    python generate.py --network=snap.pkl --seeds=0-15 --grid --outdir=out
    python generate.py --network=G.safetensors --seeds=0-15 --grid --outdir=out
    """
    seeds = parse_range(seeds)
    check_outdir(outdir)
    device = cli_utils.resolve_device(device)
    with cli_utils.user_errors():
        G, class_names = load_network(network_pkl, torch.device(device))
    label = make_label(class_spec, G.c_dim, class_names)
    make_outdir(outdir)
    images = generate_images(G, seeds, label, truncation_psi, noise_mode, batch, device)
    if grid:
        save_png(tile_grid(images), os.path.join(outdir, 'grid.png'))
        print(f'Wrote {os.path.join(outdir, "grid.png")} ({len(seeds)} images)')
        return
    for seed, image in zip(seeds, images):
        save_png(image, os.path.join(outdir, f'seed{seed:04d}.png'))
    print(f'Wrote {len(seeds)} images to {outdir}')


# ----------------------------------------------------------------------------

if __name__ == '__main__':
    main()

# ----------------------------------------------------------------------------
